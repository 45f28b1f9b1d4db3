"""The demos run end to end: the settling demo against its closed forms, the tour, and configs."""
from __future__ import annotations

import json

import pytest
import torch

from demos import config as cfg
from demos import settle, tour
from figures import assert_png

CIRCUITS = ("DI", "SDI", "DFC", "PC", "TP", "DDTP")
KEYS = ("status", "relative_error_to_closed_form", "settle_time")


@pytest.fixture(scope="module")
def settled(tmp_path_factory):
    out = tmp_path_factory.mktemp("settle")
    return out, settle.run(None, out)


def test_settle_every_circuit_converges_to_its_closed_form(settled):
    _, summary = settled
    assert set(summary["circuits"]) == set(CIRCUITS)
    for name, result in summary["circuits"].items():
        assert result["status"] == "converged", name
        assert result["relative_error_to_closed_form"] <= 1e-3, name
        assert result["settle_time"] is not None and 0 < result["settle_time"] < result["t1"]
    assert summary["all_within_tolerance"]


def test_settle_writes_summary_and_figures(settled):
    out, summary = settled
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["circuits"].keys() == summary["circuits"].keys()
    for name in CIRCUITS:
        entry = on_disk["circuits"][name]
        for key in KEYS:
            assert key in entry, (name, key)
        assert isinstance(entry["status"], str)
        assert isinstance(entry["relative_error_to_closed_form"], float)
        assert isinstance(entry["settle_time"], float)
        assert set(entry["final_angles_deg"]) >= {"backprop", "pseudo_backprop", "gauss_newton"}
        assert_png(out / f"{name}.png")


def test_settle_report_is_a_table(settled):
    _, summary = settled
    text = settle.report(summary)
    for name in CIRCUITS:
        assert name in text
    assert "converged" in text


def test_settle_config_override_selects_circuits(tmp_path):
    path = tmp_path / "dfc.yaml"
    path.write_text("circuits: [DFC]\nfeedback_control:\n  nudge: 1e-3\n")
    summary = settle.run(path, tmp_path / "out")
    assert list(summary["circuits"]) == ["DFC"]
    assert summary["config"]["feedback_control"]["nudge"] == 1e-3   # '1e-3' read as a float
    assert summary["config"]["feedback_control"]["tau_v"] == 0.2    # the rest from defaults
    assert summary["circuits"]["DFC"]["relative_error_to_closed_form"] <= 1e-3
    assert (tmp_path / "out" / "DFC.png").is_file()
    assert not (tmp_path / "out" / "DI.png").exists()


def test_settle_pc_errors_are_backprop_and_follow_the_binomial_law(settled):
    _, summary = settled
    pc = summary["circuits"]["PC"]
    assert pc["closed_form"] == "exact"
    assert pc["final_angles_deg"]["backprop"] < 1e-6      # equilibrium errors are δ itself
    assert pc["transient_error_to_law"] < 1e-12           # ε_ℓ(t) = δ_ℓ · P[Bin(n, γ) ≥ L − ℓ]


def test_settle_pc_leaky_errors_and_variances_keep_the_closed_form(tmp_path):
    summary = settle.run({"circuits": ["PC"], "predictive_coding": {
        "errors": "leaky", "variances": [0.5, 2.0, 1.0]}}, tmp_path)
    pc = summary["circuits"]["PC"]
    assert pc["status"] == "converged" and pc["relative_error_to_closed_form"] <= 1e-6
    assert pc["transient_error_to_law"] is None            # the law holds for explicit, σ² = 1
    with pytest.raises(ValueError, match="'predictions': received 'live', expected 'fixed'"):
        settle.run({"circuits": ["PC"], "predictive_coding": {"predictions": "live"}}, tmp_path)


def test_tour_runs_every_step_into_its_folder(tmp_path):
    summary = tour.run(tmp_path)
    assert list(summary) == [s.name for s in tour.STEPS]
    for step in tour.STEPS:
        assert summary[step.name]["passed"], step.name
        assert (tmp_path / step.name / "summary.json").is_file(), step.name
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for name in CIRCUITS:
        assert on_disk["settle"]["circuits"][name]["status"] == "converged"
        assert (tmp_path / "settle" / f"{name}.png").stat().st_size > 0
    assert (tmp_path / "settle" / "summary.json").is_file()
    assert "settle: ok" in tour.report(summary)
    assert summary["reproduce_song2020"]["divergence"]["z_il_float64"] < 1e-12


def test_tour_records_a_failing_step_and_goes_on(tmp_path, monkeypatch):
    def broken(config, out):
        raise RuntimeError("boom")
    monkeypatch.setattr(tour, "STEPS", [tour.Step("broken", broken, str)])
    summary = tour.run(tmp_path)
    assert summary["broken"]["status"] == "failed" and "boom" in summary["broken"]["error"]
    assert "FAILED" in tour.report(summary)
    with pytest.raises(ValueError, match="steps: received \\['nope'\\]"):
        tour.run(tmp_path, steps=["nope"])


# -- configs ---------------------------------------------------------------------------------

def test_config_unknown_key_names_section_key_and_valid_keys():
    with pytest.raises(ValueError, match=r"'dynamic_inversion'.*unknown key 'alfa'.*valid keys: "
                                         r"\[.*'alpha'.*'k_i'.*\]"):
        settle.load({"dynamic_inversion": {"alfa": 0.1}})
    with pytest.raises(ValueError, match=r"'solver'.*unknown key 'dtt'.*'dt'.*'method'"):
        settle.load({"solver": {"dtt": 0.1}})
    # what the demo supplies itself is not a config key
    with pytest.raises(ValueError, match=r"unknown key 'network'"):
        settle.load({"feedback_control": {"network": None}})


def test_config_unknown_section_lists_valid_sections():
    with pytest.raises(ValueError, match=r"unknown section 'netwrok'.*valid sections: "
                                         r"\[.*'network'.*'solver'.*\]"):
        settle.load({"netwrok": {"widths": [2, 2]}})


def test_config_missing_file_and_bad_values(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        settle.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        settle.load(bad)
    with pytest.raises(ValueError, match=r"'network'.*'dtype'.*float64"):
        settle.load({"network": {"dtype": "float65"}})
    with pytest.raises(ValueError, match=r"section 'solver'.*expected a mapping"):
        settle.load({"solver": 3})


def test_config_merge_and_yaml_floats(tmp_path):
    merged = cfg.merge({"a": {"x": 1, "y": 2}, "seed": 0}, {"a": {"y": 3}, "seed": 5})
    assert merged == {"a": {"x": 1, "y": 3}, "seed": 5}
    path = tmp_path / "c.yaml"
    path.write_text("solver:\n  atol: 1e-12\n  rtol: 1.0e-10\n")
    assert cfg.read_yaml(path)["solver"] == {"atol": 1e-12, "rtol": 1e-10}
    defaults = settle.load(None)
    assert defaults["network"]["widths"] == [4, 8, 6, 3]
    assert defaults["single_loop"]["carry"] == "linear"
    assert defaults["network"]["dtype"] is torch.float64
    assert defaults["predictive_coding"]["predictions"] == "fixed"
    with pytest.raises(ValueError, match=r"'predictive_coding'.*unknown key 'sigma'.*'variances'"):
        settle.load({"predictive_coding": {"sigma": 1.0}})


def test_settle_tp_targets_reach_the_exact_inverse_and_ddtp_the_gauss_newton_targets(settled):
    _, summary = settled
    tp, ddtp = summary["circuits"]["TP"], summary["circuits"]["DDTP"]
    assert tp["relative_error_to_closed_form"] < 1e-8          # τ_{ℓ-1} = f_ℓ⁻¹(τ_ℓ)
    assert ddtp["relative_error_to_closed_form"] < 1e-8        # τ_ℓ = GN targets
    assert ddtp["final_angles_deg"]["gauss_newton"] < 1e-3
    assert summary["config"]["iterated_inverse_network"]["widths"] == [4, 4, 4, 4]
