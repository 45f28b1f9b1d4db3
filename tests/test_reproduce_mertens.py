"""The Mertens reproduction (signed XOR, local learning through linear decoders): the quick
configuration end to end, its numbers checked against direct recomputation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from demos import reproduce_mertens as mertens
from demos.config import intra_op_threads
from figures import assert_png

FIGURES = ("accuracy.png", "learning_curves.png", "decision_regions.png")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("mertens")
    cfg = mertens.Config.quick()
    return out, cfg, mertens.run(cfg, out)


def test_signed_xor_labels_and_split():
    cfg = mertens.Config.quick()
    data = mertens.datasets(cfg)
    x, y = data["x_train"], data["y_train"]
    assert x.shape == (cfg.n_train, 2) and y.shape == (cfg.n_train, 1)
    assert data["x_test"].shape == (cfg.n_test, 2)
    assert x.abs().max() <= 1
    assert torch.equal(y[:, 0] == 1, x[:, 0] * x[:, 1] >= 0)
    assert not torch.equal(data["x_test"][:10], x[:10])            # disjoint draws
    assert 0.35 < float(y.mean()) < 0.65


def test_summary_keys_and_shapes(quick):
    out, cfg, summary = quick
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary, allow_nan=False))
    for key in ("accuracy", "train_accuracy", "layer_accuracy", "seeds", "seconds",
                "method_seconds", "status", "config", "figures", "optimizer", "local_loss_rise"):
        assert key in on_disk, key
    assert on_disk["seeds"] == list(cfg.seeds)
    assert tuple(on_disk["accuracy"]) == mertens.METHODS
    S = len(cfg.seeds)
    for name, a in on_disk["accuracy"].items():
        assert len(a["per_seed"]) == S, name
        assert all(0 <= v <= 1 for v in a["per_seed"]), name
        assert a["mean"] == pytest.approx(float(np.mean(a["per_seed"])), abs=1e-12)
        assert a["std"] == pytest.approx(float(np.std(a["per_seed"], ddof=1)), abs=1e-12)
    for name in mertens.LOCAL_METHODS:
        layers = on_disk["layer_accuracy"][name]
        assert len(layers["mean"]) == cfg.L and len(layers["per_seed"]) == S
        # the last layer's read-out is the network's output
        assert [row[-1] for row in layers["per_seed"]] == on_disk["accuracy"][name]["per_seed"]
        assert on_disk["status"][name] == {"reached_t1": S, "converged": 0, "diverged": 0}
        rise = on_disk["local_loss_rise"][name]
        assert len(rise) == cfg.L and all(v >= 0 for v in rise), name
    assert on_disk["seconds"] > 0


def test_loss_rise_measures_the_largest_relative_rise_inside_each_window():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    loss_1 = np.array([[1.0, 4.0], [0.5, 3.0], [0.6, 2.0], [9.0, 9.0], [9.0, 9.0]])   # [T, S]
    loss_2 = np.array([[5.0, 5.0], [1.0, 1.0], [2.0, 1.0], [1.0, 1.5], [0.5, 1.0]])
    sched = mertens.LayerSchedule([(0.0, 2.0), (2.0, 4.0)])
    got = mertens.loss_rise(t, {"loss_1": loss_1, "loss_2": loss_2}, sched)
    # layer 1, t in [0, 2]: 0.5 -> 0.6 is +20% (the jump to 9 at t = 3 is outside);
    # layer 2, t in [2, 4]: 1.0 -> 1.5 is +50% (1 -> 2 at t = 1 -> 2 is outside)
    assert got == pytest.approx([0.2, 0.5], rel=1e-12)
    falling = {"loss_1": np.array([[3.0], [2.0], [1.0]]), "loss_2": np.array([[3.0], [2.0], [1.0]])}
    assert mertens.loss_rise(t[:3], falling, mertens.LayerSchedule([(0.0, 1.0), (1.0, 2.0)])) \
        == [0.0, 0.0]


def test_figures_are_written(quick):
    out, _, summary = quick
    assert set(summary["figures"]) == set(FIGURES)
    for name in FIGURES:
        assert_png(out / name)


def test_learning_beats_chance_and_trained_decoders_beat_fixed(quick):
    acc = quick[2]["accuracy"]
    assert acc["backprop"]["mean"] >= 0.9
    assert acc["parallel_trained"]["mean"] >= 0.85
    assert acc["sequential_trained"]["mean"] >= 0.75
    for schedule in ("sequential", "parallel"):
        assert acc[f"{schedule}_trained"]["mean"] > acc[f"{schedule}_fixed"]["mean"], schedule


def test_reported_accuracy_is_the_circuits_own(quick):
    """The summary's accuracy equals the circuit's ``accuracy`` on the test set, and the last
    point of the recorded curve (``observe`` on the training set) equals the training
    accuracy in the summary."""
    _, cfg, summary = quick
    data = mertens.datasets(cfg)
    with intra_op_threads(cfg.threads):          # as in run: float32 sums depend on threads
        res = mertens.run_local(cfg, data, "parallel", True)
    circuit_acc = res["circuit"].accuracy(res["state"], data["x_test"], data["y_test"])
    # the circuit averages in float32; one test point is 1/n_test = 5e-3
    np.testing.assert_allclose(summary["accuracy"]["parallel_trained"]["per_seed"],
                               circuit_acc.cpu().double().numpy(), rtol=0, atol=1e-6)
    for l in range(1, cfg.L + 1):
        np.testing.assert_allclose(res["curves"][f"accuracy_{l}"][-1], res["train"][l - 1],
                                   rtol=0, atol=1e-6)
        np.testing.assert_allclose(res["curves"][f"test_accuracy_{l}"][-1], res["test"][l - 1],
                                   rtol=0, atol=1e-6)


def test_backprop_loss_matches_the_circuits_output_loss(quick):
    """The baseline's forward pass is the circuit's network: same output at the start."""
    _, cfg, _ = quick
    data = mertens.datasets(cfg)
    net = mertens.initial_network(cfg)
    logit = mertens.backprop_forward(net.weights, net.biases, net.input(data["x_test"]))
    c = mertens.LocalDecoders(net, data["x_train"], data["y_train"])
    out = c.forward(c.initial_state(), data["x_test"])[-1]
    torch.testing.assert_close(torch.sigmoid(logit), out, rtol=0, atol=1e-6)


def test_cli_passes_its_flags_and_prints_the_report(quick, tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(config, out):
        seen.update(config=config, out=out)
        return quick[2]

    monkeypatch.setattr(mertens, "run", fake_run)
    summary = mertens.main(["--out", str(tmp_path), "--seeds", "3", "--period", "20",
                            "--dt", "0.5", "--eta", "0.8", "--dtype", "float64"])
    assert summary is quick[2]
    assert seen["config"] == mertens.Config(seeds=(0, 1, 2), period=20.0, dt=0.5, eta=0.8,
                                            dtype="float64")
    assert seen["out"] == str(tmp_path)
    mertens.main(["--out", str(tmp_path), "--quick"])
    assert seen["config"] == mertens.Config.quick()
    text = capsys.readouterr().out
    assert "sequential_trained" in text and "backprop" in text


@pytest.mark.parametrize("kwargs,match", [
    (dict(seeds=()), r"seeds: received \[\], expected distinct integers"),
    (dict(seeds=(0, 0)), r"seeds: received \[0, 0\]"),
    (dict(widths=(2, 10, 2)), r"widths: received \[2, 10, 2\], expected \[2, n_1, \.\.\., 1\]"),
    (dict(eta=0.0), r"eta: received 0\.0, expected a finite number > 0"),
    (dict(dt=math.nan), r"dt: received nan"),
    (dict(dt=10.0, period=5.0), r"dt: received 10\.0, expected at most period = 5\.0"),
    (dict(dtype="float16"), r"dtype: received 'float16', expected one of"),
    (dict(device="gpu0"), r"device: received 'gpu0', expected a torch device"),
    (dict(n_train=0), r"n_train: received 0, expected an integer ≥ 1"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mertens.Config(**kwargs)


def test_load_and_cli_reject_bad_values():
    with pytest.raises(ValueError, match="unknown keys"):
        mertens.load({"sede": 1})
    assert mertens.load({"seeds": [0, 1], "widths": [2, 4, 4, 1]}).seeds == (0, 1)
    with pytest.raises(SystemExit):
        mertens.main(["--out", "unused", "--eta", "-1"])
    with pytest.raises(SystemExit):
        mertens.main(["--out", "unused", "--seeds", "0"])


@pytest.mark.slow
def test_default_run_learns_with_trained_decoders(tmp_path):
    summary = mertens.run(None, tmp_path)
    acc = summary["accuracy"]
    assert mertens.passed(summary)
    for name in ("backprop", "sequential_trained", "parallel_trained"):
        assert acc[name]["mean"] >= 0.9, name
    for schedule in ("sequential", "parallel"):
        assert acc[f"{schedule}_trained"]["mean"] > acc[f"{schedule}_fixed"]["mean"] + 0.05
