"""The Bengio (2020) reproduction: iterated inverses converge within their Lipschitz bound (and
diverge beyond it), the online rule is DTP1, one Euler step is DTP, and exact-inverse targets
are Gauss-Newton steps to first order in β."""
from __future__ import annotations

import json
import math

import pytest

from demos import reproduce_bengio2020 as bengio
from figures import assert_png

FIGURES = ("convergence.png", "dtp1.png", "gn_alignment.png")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("bengio2020")
    return out, bengio.run(None, out)


def test_summary_is_plain_json_and_every_check_holds(reproduced):
    out, summary = reproduced
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, allow_nan=False))
    assert set(on_disk["checks"]) == {
        "contractions_converge", "rate_within_alpha", "alpha_above_one_diverges",
        "online_rule_is_dtp1", "dtp1_moves_h_onto_tau", "euler_step_is_dtp",
        "gn_angle_first_order_in_beta", "gn_angle_small_at_smallest_beta",
        "iterating_approximate_decoders_recovers_exact_targets", "one_dtp_step_stays_off_gn"}
    assert all(on_disk["checks"].values()), on_disk["checks"]
    assert bengio.passed(on_disk)
    assert 0 < on_disk["seconds"] < 60


def test_figures_are_written(reproduced):
    out, summary = reproduced
    assert tuple(summary["figures"]) == FIGURES
    for name in FIGURES:
        assert_png(out / name)


def test_iterated_inverses_converge_at_a_rate_within_alpha(reproduced):
    cases = reproduced[1]["convergence"]
    cfg = bengio.Config()
    assert len(cases) == 2 * (len(cfg.perturbations) + len(cfg.tanh_perturbations))
    contracting = [c for c in cases if c["alpha"] < 1]
    assert {(c["activation"], c["rule"]) for c in contracting} == {
        (a, r) for a in ("linear", "tanh") for r in bengio.RULES}
    for c in contracting:
        name = (c["activation"], c["rule"], c["perturbation"])
        assert c["converged"] and not c["diverged"], name
        assert c["final_error"] <= 1e-8 * c["first_error"], name
        assert c["ratios_measured"] >= 3, name
        assert 0 < c["rate"] <= c["max_step_ratio"] <= c["alpha"] * (1 + 1e-6), name
        assert c["spectral_radius"] <= c["alpha"] * (1 + 1e-9), name
    # the rate grows with the perturbation, per activation and rule
    for a in ("linear", "tanh"):
        for r in bengio.RULES:
            rates = [c["rate"] for c in contracting if (c["activation"], c["rule"]) == (a, r)]
            assert rates == sorted(rates) and len(rates) >= 2, (a, r, rates)
    for c in cases:
        if c["activation"] == "linear":
            assert "spectral norm" in c["alpha_measured_as"]
        else:
            assert "Jacobian" in c["alpha_measured_as"] and c["alpha_bounding_box"] >= c["alpha"] * (1 - 1e-12)


def test_alpha_above_one_diverges(reproduced):
    cases = reproduced[1]["convergence"]
    expanding = [c for c in cases if c["alpha"] > 1]
    assert {c["rule"] for c in expanding} == set(bengio.RULES)
    for c in expanding:
        assert c["spectral_radius"] > 1 and c["diverged"] and not c["converged"]
        assert c["rate"] > 1
        errors = [e for e in c["errors"] if e is not None]
        assert errors[-1] > 1e6 * errors[0]


def test_online_rule_is_dtp1_and_dtp1_hits_the_targets(reproduced):
    d = reproduced[1]["dtp1"]
    online = d["online_vs_dtp1"]["iterated_output"]
    assert online["status"] == "converged"
    assert max(online["max_abs_diff_W"] + online["max_abs_diff_b"]) < 1e-10
    assert min(online["max_abs_dtp1_W"]) > 1e-3               # a real update, not zero = zero
    assert online["max_abs_target_start_offset"] == 0.0      # τ(0) = h
    assert len(d["dtp1_target_residual"]) == 3
    assert max(d["dtp1_target_residual"]) < 1e-10
    assert min(d["dtp1_target_change"]) > 1e-3


def test_one_unit_euler_step_is_dtp(reproduced):
    d = reproduced[1]["dtp1"]
    assert set(d["euler_step_vs_dtp"]) == {"1", "2", "3"}
    assert max(d["euler_step_vs_dtp"].values()) < 1e-10
    assert min(d["dtp_step_size"].values()) > 1e-3


def test_exact_inverse_targets_are_gauss_newton_to_first_order(reproduced):
    g = reproduced[1]["gauss_newton"]
    assert g["betas"] == [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]
    exact = g["angles_to_gauss_newton"]["exact_inverse_iterated"]
    assert set(exact) == {"1", "2"}
    for l, angles in exact.items():
        assert all(a > b for a, b in zip(angles, angles[1:])), (l, angles)
        assert angles[-1] < 0.01, (l, angles)
        assert 0.8 <= g["slopes"]["exact_inverse_iterated"][l] <= 1.2
        assert 0.8 <= g["slopes_all_betas"]["exact_inverse_iterated"][l] <= 1.2
    for run in g["runs"].values():
        assert run["status"] == ["reached_t1"] and run["finite"], run
        assert run["last_step_change"] < 1e-12, run


def test_one_dtp_step_with_approximate_decoders_is_not_gauss_newton(reproduced):
    g = reproduced[1]["gauss_newton"]
    exact = g["angles_to_gauss_newton"]["exact_inverse_iterated"]
    iterated = g["angles_to_gauss_newton"]["approximate_iterated"]
    dtp = g["angles_to_gauss_newton"]["approximate_dtp_one_step"]
    for l in exact:
        assert dtp[l][-1] > 1.0                               # a fixed angle as β → 0 ...
        assert abs(g["slopes"]["approximate_dtp_one_step"][l]) < 0.2
        assert iterated[l][-1] == pytest.approx(exact[l][-1], rel=1e-3)   # ... iterating fixes
        assert g["gauss_newton_vs_backprop"][l] > max(dtp[l])  # backprop is further off still


def test_report_names_every_part(reproduced):
    text = bengio.report(reproduced[1])
    for word in ("iterated_output", "iterated_input", "DTP1", "Euler", "Gauss-Newton",
                 "backprop", "checks"):
        assert word in text, word


def test_cli_passes_its_flags(reproduced, tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(config, out):                  # the real run is the module fixture's
        seen.update(config=config, out=out)
        return reproduced[1]

    monkeypatch.setattr(bengio, "run", fake_run)
    summary = bengio.main(["--out", str(tmp_path), "--seed", "3", "--betas", "1e-2", "1e-3",
                           "--perturbations", "0.2", "4", "--steps", "40"])
    assert summary is reproduced[1]
    assert seen["config"] == bengio.Config(seed=3, betas=(1e-2, 1e-3), perturbations=(0.2, 4.0),
                                           steps=40)
    assert seen["out"] == str(tmp_path)
    assert "checks" in capsys.readouterr().out


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="gn_widths"):
        bengio.Config(gn_widths=(4, 4, 5))
    with pytest.raises(ValueError, match="betas"):
        bengio.Config(betas=(1e-2,))
    with pytest.raises(ValueError, match="perturbations"):
        bengio.Config(perturbations=(-1.0,))
    with pytest.raises(ValueError, match="unknown keys"):
        bengio.load({"sede": 1})
    with pytest.raises(SystemExit):
        bengio.main(["--out", "unused", "--steps", "1"])
    assert bengio.load({"betas": [1e-2, 1e-3]}).betas == (1e-2, 1e-3)
    assert math.isclose(bengio.load(None).betas[-1], 1e-5)
