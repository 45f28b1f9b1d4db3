"""Fa-Z-IL training (demos.train_pc) on a tiny config: it is backprop, the gate alone decides
when synapses change, an interrupted run resumes to the same numbers; and the tasks."""
from __future__ import annotations

import json
import math

import pytest
import torch

from demos import train_pc
from figures import assert_png
from workbench import tasks

# 4 presentations of B = 16 per epoch, 2 epochs: a few seconds.
TINY = {
    "traced_presentations": 1,
    "gaussian_mixture": {"n_train": 64, "n_test": 256},
    "network": {"widths": [2, 8, 8, 2]},
    "training": {"epochs": 2, "batch": 16, "eval_every": 2, "checkpoint_every": 3},
}
TINY_YAML = """
traced_presentations: 1
gaussian_mixture: {n_train: 64, n_test: 256}
network: {widths: [2, 8, 8, 2]}
training: {epochs: 2, batch: 16, eval_every: 2, checkpoint_every: 3}
"""
SAME = ("fa_z_il_test_accuracy", "backprop_test_accuracy", "accuracy_gap_pp",
        "final_weight_divergence_relative", "presentations", "epochs",
        "max_gate_during_prediction", "learn_gates_per_layer", "history")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny run through the command line (YAML config), uninterrupted."""
    out = tmp_path_factory.mktemp("train_pc")
    path = out / "tiny.yaml"
    path.write_text(TINY_YAML)
    code = train_pc.main(["--config", str(path), "--out", str(out / "run")])
    summary = json.loads((out / "run" / "summary.json").read_text())
    return out / "run", summary, code


def final_state(out) -> dict[str, torch.Tensor]:
    return torch.load(out / train_pc.CHECKPOINT, weights_only=True)["state"]


def test_fa_z_il_reaches_backprop_accuracy(trained):
    _, summary, code = trained
    assert code == 0
    assert summary["presentations"] == 8 and summary["epochs"] == 2 and summary["complete"]
    assert summary["accuracy_gap_pp"] <= 1.0 and summary["within_1pp"]
    assert summary["accuracy_gap_pp"] == pytest.approx(
        100 * abs(summary["fa_z_il_test_accuracy"] - summary["backprop_test_accuracy"]))


def test_fa_z_il_weights_are_backprop_weights(trained):
    """Fa-Z-IL with tanh is exactly backprop: float64 weights agree to rounding."""
    out, summary, _ = trained
    assert 0 < summary["final_weight_divergence_relative"] <= 1e-8
    log = summary["history"]["eval"]
    assert log["fa_z_il"] == log["backprop"]                  # at every evaluation
    # the same number, recomputed from the saved circuit state and an autograd re-run
    config = train_pc.load(TINY)
    setup = train_pc.build(config)
    phi = setup.network.hidden_activation.phi
    theta0 = train_pc.network_parameters(setup.network)
    baseline = theta0
    for p in range(setup.presentations):
        idx = setup.order[p]
        baseline = train_pc.sgd_step(baseline, phi, setup.task.x_train[idx],
                                     setup.task.y_train[idx], setup.training.eta)
    circuit = train_pc.circuit_parameters(final_state(out), setup.network.L, True)
    assert train_pc.relative_divergence(circuit, baseline, theta0) == pytest.approx(
        summary["final_weight_divergence_relative"], rel=1e-6)


def test_gate_shut_during_prediction_and_opens_once_per_unit_when_taught(trained):
    """Measured: during every predict phase the largest gate value (all layers, units,
    examples; every step of the traced presentation, every 10th step after) is exactly 0;
    during every learn phase each unit's gate, for every example, is open on exactly one
    Euler step, and layer ℓ's on step L − ℓ (its distance from the output)."""
    _, summary, _ = trained
    L = 3
    assert summary["max_gate_during_prediction"] == 0.0
    assert summary["every_gate_opened_on_exactly_one_step"]
    assert summary["max_gate_during_learning"] == 1.0
    for l, entry in summary["learn_gates_per_layer"].items():
        assert entry["open_steps_min"] == entry["open_steps_max"] == 1
        assert entry["open_at_steps"] == [L - int(l)]
    for entry in summary["history"]["predict"]:
        assert entry["status"] == "converged"
        assert entry["hidden_error_left"] < summary["gate_quiet_threshold"] / 100
    assert summary["presentations"] == len(summary["history"]["learn"])


def test_figures_and_report(trained):
    out, summary, _ = trained
    for name in ("accuracy.png", "gates.png"):
        assert_png(out / name)
    text = train_pc.report(summary)
    for phrase in ("Fa-Z-IL", "backprop", "gap", "max during prediction 0", "exactly one"):
        assert phrase in text
    assert train_pc.passed(summary)


def test_resume_after_interruption_equals_uninterrupted_run(trained, tmp_path, monkeypatch):
    """Killed during presentation 6 (after the checkpoint at 3), then resumed: the same
    weights, bit for bit, and the same summary."""
    out_full, full, _ = trained
    calls = {"n": 0}
    real_step = train_pc.sgd_step

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_pc, "sgd_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_pc.run(TINY, tmp_path, progress=False)
    saved = torch.load(tmp_path / train_pc.CHECKPOINT, weights_only=True)
    assert saved["presentation"] == 3
    monkeypatch.setattr(train_pc, "sgd_step", real_step)
    resumed = train_pc.run(TINY, tmp_path, resume=True, progress=False)
    for key in SAME:
        assert resumed[key] == full[key], key
    a, b = final_state(out_full), final_state(tmp_path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stop_after_then_resume(tmp_path):
    partial = train_pc.run(TINY, tmp_path, stop_after=5, progress=False)
    assert partial["presentations"] == 5 and not partial["complete"]
    assert torch.load(tmp_path / train_pc.CHECKPOINT, weights_only=True)["presentation"] == 5
    done = train_pc.run(TINY, tmp_path, resume=True, progress=False)
    assert done["presentations"] == 8 and done["complete"]


def test_resume_with_another_config_is_an_error(tmp_path):
    train_pc.run(TINY, tmp_path, stop_after=1, progress=False)
    other = {**TINY, "training": {**TINY["training"], "eta": 0.1}}
    with pytest.raises(ValueError, match=r"different config \(differing keys: "
                                         r"\['training\.eta'\]\)"):
        train_pc.run(other, tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("override,match", [
    ({"training": {"batch": 0}}, r"training\.batch: received 0, expected an integer ≥ 1"),
    ({"training": {"eta": -0.5}}, r"training\.eta: received -0\.5, expected a finite number > 0"),
    ({"training": {"epochs": 1.5}}, r"training\.epochs: received 1\.5, expected an integer"),
    ({"training": {"batch": 100}}, r"training\.batch: received 100, expected at most the 64 "),
    ({"training": {"lr": 0.1}}, r"config section 'training': unknown key 'lr'.*valid keys: "
                                r"\['epochs', 'batch', 'eta'"),
    ({"task": "moons"}, r"config key 'task': received 'moons', expected one of "
                        r"\['gaussian_mixture', 'spiral', 'teacher_regression'\]"),
    ({"network": {"widths": [2, 8, 3]}}, r"network\.widths: received \[2, 8, 3\], expected "
                                         r"first width 2 .* last width 2"),
    ({"network": {"output_activation": "tanh"}}, r"output_activation: received 'tanh', "
                                                 r"expected 'linear'"),
    ({"learn": {"duration": 1.0}}, r"learn\.duration: received 1\.0, expected ≥ L·dt = 3"),
    ({"predict": {"dt": 0}}, r"Phase 'predict': dt: received 0, expected a finite number > 0"),
    ({"predict": {"method": "eulr"}}, r"predict\.method: received 'eulr', expected one of "),
    ({"gate": {"signal": "wave"}}, r"signal: received 'wave', expected one of"),
    ({"circuit": {"eta": 0.1}}, r"config section 'circuit': unknown key 'eta'"),
    ({"record_every": 0}, r"config key 'record_every': received 0, expected an integer ≥ 1"),
    ({"gaussian_mixture": {"std": -1.0}}, r"std: received -1\.0, expected a finite number > 0"),
])
def test_bad_config_values_are_clear_errors(tmp_path, override, match):
    config = {**TINY, **{k: {**TINY.get(k, {}), **v} if isinstance(v, dict) else v
                         for k, v in override.items()}}
    with pytest.raises(ValueError, match=match):
        train_pc.run(config, tmp_path, progress=False)


def test_bad_stop_after(tmp_path):
    with pytest.raises(ValueError, match=r"stop_after: received -1, expected an integer ≥ 0"):
        train_pc.run(TINY, tmp_path, stop_after=-1, progress=False)


# -- the tasks --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gaussian_mixture", "spiral"])
def test_tasks_are_seeded_standardised_one_hot(name):
    task = tasks.make_task(name, n_train=300, n_test=90, classes=3, seed=4)
    again = tasks.make_task(name, n_train=300, n_test=90, classes=3, seed=4)
    other = tasks.make_task(name, n_train=300, n_test=90, classes=3, seed=5)
    assert torch.equal(task.x_train, again.x_train) and torch.equal(task.x_test, again.x_test)
    assert not torch.equal(task.x_train, other.x_train)
    assert task.x_train.shape == (300, 2) and task.x_test.shape == (90, 2)
    assert task.y_train.shape == (300, 3) and task.y_train.dtype == torch.float64
    assert torch.equal(task.y_train.argmax(1), task.labels_train)
    assert torch.equal(task.y_test.argmax(1), task.labels_test)
    assert torch.equal(task.y_train.sum(1), torch.ones(300, dtype=torch.float64))
    assert task.x_train.mean(0).abs().max() < 1e-12
    assert (task.x_train.std(0) - 1).abs().max() < 1e-12
    counts = torch.bincount(torch.cat([task.labels_train, task.labels_test]), minlength=3)
    assert counts.tolist() == [130, 130, 130]                # balanced over train + test
    assert task.classes == 3 and task.inputs == 2 and task.name == name
    assert 1 / 3 <= task.chance < 0.5


def test_teacher_regression_is_the_teacher_network_on_gaussian_inputs():
    from circuits import ForwardNetwork
    task = tasks.teacher_regression(n_train=50, n_test=20, widths=[6, 5, 3], seed=2,
                                    teacher_scale=0.7)
    teacher = ForwardNetwork([6, 5, 3], "tanh", scale=0.7, seed=3)
    assert task.x_train.shape == (50, 6) and task.y_test.shape == (20, 3)
    assert torch.allclose(teacher.forward(task.x_test).r[-1][0], task.y_test, rtol=0,
                          atol=1e-15)
    assert not task.classification and task.labels_test is None
    with pytest.raises(ValueError, match="regression task: it has no chance accuracy"):
        task.chance
    with pytest.raises(ValueError, match=r"noise: received -0\.1, expected a finite number"):
        tasks.teacher_regression(noise=-0.1)


def test_gaussian_xor_needs_the_hidden_layer():
    """The default task is not linearly separable: least squares on the inputs stays near
    chance, while the trained MLP of the demo reaches ~97%."""
    task = tasks.gaussian_mixture(n_train=512, n_test=1024, classes=2, clusters_per_class=2,
                                  std=0.6)
    X = torch.cat([task.x_train, torch.ones(512, 1, dtype=torch.float64)], 1)
    w = torch.linalg.lstsq(X, task.y_train).solution
    Xt = torch.cat([task.x_test, torch.ones(1024, 1, dtype=torch.float64)], 1)
    linear = float(((Xt @ w).argmax(1) == task.labels_test).double().mean())
    assert linear < 0.65


@pytest.mark.parametrize("call,match", [
    (lambda: tasks.gaussian_mixture(n_train=0), r"n_train: received 0, expected an integer ≥ 1"),
    (lambda: tasks.gaussian_mixture(classes=1), r"classes: received 1, expected an integer ≥ 2"),
    (lambda: tasks.gaussian_mixture(std=math.nan), r"std: received nan, expected a finite"),
    (lambda: tasks.spiral(noise=-0.1), r"noise: received -0\.1, expected a finite number ≥ 0"),
    (lambda: tasks.spiral(seed=-1), r"seed: received -1, expected an integer ≥ 0"),
    (lambda: tasks.spiral(dtype=torch.int64), r"dtype: received torch\.int64, expected a "
                                              r"floating torch dtype"),
    (lambda: tasks.make_task("mnist"), r"name: received 'mnist', expected one of "
                                       r"\['gaussian_mixture', 'spiral', 'teacher_regression'\]"),
])
def test_task_arguments_are_checked(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
def test_default_run_matches_backprop(tmp_path):
    """The default config (about 30 s): Gaussian XOR, 80 presentations."""
    summary = train_pc.run(None, tmp_path, progress=False)
    assert summary["backprop_test_accuracy"] > 0.9
    assert summary["within_1pp"] and summary["final_weight_divergence_relative"] < 1e-12
    assert summary["max_gate_during_prediction"] == 0
    assert summary["every_gate_opened_on_exactly_one_step"]
