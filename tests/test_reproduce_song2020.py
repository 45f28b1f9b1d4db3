"""The Song et al. (2020) reproduction: Z-IL and Fa-Z-IL are backprop, breaking C1-C3 is not,
inference learning approaches it as σ²_L grows, naive gates fail on ReLU, and the ordered gate
does not learn while the circuit settles on a new input."""
from __future__ import annotations

import json
import math

import pytest
import torch

from circuits import backprop_updates
from demos import reproduce_song2020 as song
from figures import assert_png

ROWS = ("z_il_float64", "z_il_float32", "fa_z_il", "gamma_0.99999", "perturbed_start",
        "all_layers_together", "il", "il_sigma2_L_1", "il_sigma2_L_10", "il_sigma2_L_100",
        "il_sigma2_L_1000", "naive_gate_error_relu", "naive_gate_drive_relu",
        "naive_gate_error_tanh", "naive_gate_drive_tanh", "fa_z_il_relu")
BROKEN = ("gamma_0.99999", "perturbed_start", "all_layers_together")
FIGURES = ("error_wave.png", "prediction_gate.png", "divergence.png")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("song2020")
    return out, song.run(None, out)


def test_backprop_update_is_minus_eta_times_the_autograd_gradient():
    cfg = song.Config()
    p = song.problem(cfg)
    weights = [w.clone().requires_grad_(True) for w in p.net.weights]
    biases = [b.clone().requires_grad_(True) for b in p.net.biases]
    r = p.x[None]
    for l, (W, b) in enumerate(zip(weights, biases), start=1):
        a = r @ W.transpose(-1, -2) + b
        r = torch.tanh(a) if l < p.L else a
    loss = 0.5 * ((p.y - r) ** 2).sum(-1).mean()         # ½‖y − a_L‖², averaged over B
    loss.backward()
    for (dW, db), W, b in zip(backprop_updates(p.net, p.x, p.y, cfg.eta), weights, biases):
        torch.testing.assert_close(dW, -cfg.eta * W.grad, rtol=0, atol=1e-15)
        torch.testing.assert_close(db, -cfg.eta * b.grad, rtol=0, atol=1e-15)


def test_summary_has_every_row_and_is_plain_json(reproduced):
    out, summary = reproduced
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, allow_nan=False))
    for key in ("total_update_l1", "total_update_l1_relu", "divergence", "relative_divergence",
                "network", "prediction_settle_gate", "relu_examples_with_a_dead_layer"):
        assert key in on_disk, key
    assert tuple(on_disk["divergence"]) == ROWS
    assert tuple(on_disk["relative_divergence"]) == ROWS
    for name in ROWS:
        d, rel = on_disk["divergence"][name], on_disk["relative_divergence"][name]
        assert isinstance(d, float) and math.isfinite(d) and d >= 0, name
        total = on_disk["total_update_l1_relu" if name.endswith("_relu")
                        else "total_update_l1"]
        assert rel == pytest.approx(d / total, rel=1e-12), name
    assert on_disk["total_update_l1"] > 0 and on_disk["total_update_l1_relu"] > 0
    assert set(on_disk["settle_status"].values()) == {"converged"}


def test_z_il_and_fa_z_il_are_backprop(reproduced):
    rel = reproduced[1]["relative_divergence"]
    assert rel["z_il_float64"] <= 1e-10
    assert rel["fa_z_il"] <= 1e-10
    assert 1e-9 < rel["z_il_float32"] <= 1e-4         # float32 rounding shows, nothing more


def test_breaking_a_condition_diverges_visibly(reproduced):
    _, summary = reproduced
    div, rel = summary["divergence"], summary["relative_divergence"]
    for name in BROKEN:
        assert div[name] >= 100 * div["z_il_float64"], name
        assert rel[name] >= 1e-6, name
    # the γ row breaks C3 only: the shifted clock still gives each layer exactly one update
    assert summary["gamma_clock"]["openings_per_layer"] == [1] * summary["network"]["L"]


def test_inference_learning_approaches_backprop_as_the_output_variance_grows(reproduced):
    rel = reproduced[1]["relative_divergence"]
    sizes = [rel[f"il_sigma2_L_{s}"] for s in (1, 10, 100, 1000)]
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    assert sizes[-1] < 0.05
    assert rel["il"] == rel["il_sigma2_L_1"]


def test_naive_gates_fail_on_relu_only(reproduced):
    _, summary = reproduced
    rel = summary["relative_divergence"]
    assert summary["relu_examples_with_a_dead_layer"] == 0
    assert summary["network"]["relu_dead_unit_fraction"] > 0.1
    for signal in ("error", "drive"):
        assert rel[f"naive_gate_{signal}_relu"] >= 1e-3, signal
        assert rel[f"naive_gate_{signal}_tanh"] <= 1e-10, signal
    assert rel["fa_z_il_relu"] <= 1e-10


def test_only_the_ordered_gate_stays_shut_while_settling(reproduced):
    """Unordered gates open on the new input's wave and move the weights by a whole update;
    the ordered gate (with its hysteresis) never opens and no weight moves."""
    gates = reproduced[1]["prediction_settle_gate"]
    for name in ("feedback_unordered", "error"):
        assert gates[name]["max_gate"] > 0.1, name
        assert gates[name]["weight_change_relative"] > 0.1, name
        assert gates[name]["signal_at_first_opening"] > 1e-3, name
    ordered = gates["feedback_ordered"]
    assert ordered["max_gate"] == 0
    assert ordered["weight_change_relative"] == 0


def test_figures_are_written(reproduced):
    out, summary = reproduced
    assert set(summary["figures"]) == set(FIGURES)
    for name in FIGURES:
        assert_png(out / name)


def test_report_is_a_table_of_every_row(reproduced):
    text = song.report(reproduced[1])
    for name in ROWS + tuple(reproduced[1]["prediction_settle_gate"]):
        assert name in text, name
    assert song.passed(reproduced[1])


def test_cli_passes_its_flags_and_prints_the_report(reproduced, tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(config, out):           # the real run is the module fixture's
        seen.update(config=config, out=out)
        return reproduced[1]

    monkeypatch.setattr(song, "run", fake_run)
    summary = song.main(["--out", str(tmp_path), "--batch", "4", "--widths", "6", "8", "8",
                         "4", "--seed", "3", "--eta", "0.05"])
    assert summary is reproduced[1]
    assert seen["config"] == song.Config(seed=3, batch=4, widths=(6, 8, 8, 4), eta=0.05)
    assert seen["out"] == str(tmp_path)
    assert "z_il_float64" in capsys.readouterr().out


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="widths"):
        song.Config(widths=(4, 3))
    with pytest.raises(ValueError, match="unknown keys"):
        song.load({"sede": 1})
    with pytest.raises(SystemExit):
        song.main(["--out", "unused", "--eta", "-1"])
