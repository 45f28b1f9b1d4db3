"""demos.train / demos.method_table: every method trains in one integration, resumes bit-for-bit,
backprop in the machinery is SGD, bad configs are named."""
from __future__ import annotations

import json

import pytest
import torch

from circuits import ClosedForm, ForwardNetwork, Plastic
from demos import method_table, train
from solvers import train as integrate

pytest.importorskip("sklearn")

# 97 training images, minibatches of 8: 12 presentations per epoch
TINY_TASK = {"task": "digits", "digits": {"n_test": 1700, "seed": 0}, "hidden": [6],
             "network": {"dtype": "float64"}}
FAST = {
    "backprop": {"eta": 0.1, "period": 1.0, "dt": 1.0},
    "feedback_alignment": {"eta": 0.1, "period": 1.0, "dt": 1.0},
    "pseudo_backprop": {"eta": 0.1, "period": 1.0, "dt": 1.0},
    "ndi": {"eta": 0.1, "period": 1.0, "dt": 1.0, "circuit": {"alpha": 0.01}},
    "di": {"eta": 0.02, "period": 2.0, "dt": 0.1, "gate": "settled",
           "circuit": {"alpha": 0.01, "k_i": 5.0}},
    "sdi": {"eta": 0.02, "period": 2.0, "dt": 0.5, "gate": "settled",
            "integrator": "exp_partitioned", "circuit": {"alpha": 0.01, "k_i": 5.0}},
    "dfc": {"eta": 0.5, "period": 1.0, "dt": 0.05, "gate": "settled",
            "circuit": {"alpha": 0.01, "k_i": 5.0, "k_p": 1.0}},
    "pc": {"eta": 0.4, "period": 23.0, "dt": 1.0, "teacher_from": 20.0,
           "gate_args": {"threshold": 1.0e-10}, "circuit": {"variances": [1.0, 4.0]}},
    "z_il": {"eta": 0.1, "period": 2.0, "dt": 1.0},
    "iterated_dtp": {"eta": 1.0, "period": 1.0, "dt": 0.1, "gate": "settled",
                     "target_leak": 0.5, "circuit": {"beta": 0.05}},
    "ddtp_linear": {"eta": 1.0, "period": 1.0, "dt": 0.1, "gate": "settled",
                    "circuit": {"beta": 0.1}},
    "local_decoders": {"eta": 5.0, "period": 1.0, "dt": 1.0, "output_activation": "sigmoid"},
}


def tiny(methods, epochs=1, checkpoint_every=64, **extra):
    return {**TINY_TASK, "methods": list(methods), "method": {m: FAST[m] for m in methods},
            "training": {"epochs": epochs, "batch": 8, "seeds": 2,
                         "checkpoint_every": checkpoint_every}, **extra}


def test_every_method_runs_and_writes_the_contract(tmp_path):
    summary = train.run(tiny(train.METHODS), tmp_path, progress=False)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["runs"] == summary["runs"]
    assert len(written["runs"]) == len(train.METHODS) * 2        # methods × seeds
    assert {(r["method"], r["seed"]) for r in written["runs"]} == \
        {(m, s) for m in train.METHODS for s in (0, 1)}
    for r in written["runs"]:
        assert {"task", "method", "seed", "test_accuracy", "seconds"} <= set(r)
        assert r["task"] == "digits"
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["seconds"] > 0
        assert not r["diverged"]
        assert r["curve"]["epoch"] == [0.0, 1.0]
    ratio = {r["method"]: r["ratio_to_backprop"] for r in written["runs"]}
    assert ratio["backprop"] == pytest.approx(1.0)
    table = (tmp_path / "table.md").read_text()
    assert all(train.LABELS[m] in table for m in train.METHODS)
    assert (tmp_path / "digits.png").stat().st_size > 0
    # backprop on 12 minibatches of 8 moves well off chance (~10 %) on its 100 test images
    bp = [r["test_accuracy"] for r in written["runs"] if r["method"] == "backprop"]
    assert min(bp) > 0.3


def test_resume_after_interruption_ends_bit_for_bit(tmp_path):
    # 2 epochs of 12 presentations; checkpoints every 8 presentations (64 examples), evaluation
    # every 12, so chunks of 4: the interruption at 12 loses the work done since 8
    cfg = tiny(["di", "pc"], epochs=2, checkpoint_every=64)
    whole = train.run(cfg, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, tmp_path / "cut", stop_after=10, progress=False)
    saved = torch.load(train.checkpoint_path(tmp_path / "cut", "digits", "di"),
                       weights_only=False)
    assert saved["k"] == 8                                   # the last checkpoint before 12
    assert not train.checkpoint_path(tmp_path / "cut", "digits", "pc").exists()
    resumed = train.run(cfg, tmp_path / "cut", resume=True, progress=False)
    for method in ("di", "pc"):
        a = train.final_weights(tmp_path / "whole", "digits", method)
        b = train.final_weights(tmp_path / "cut", "digits", method)
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].dtype == torch.float64
            assert torch.equal(a[name], b[name]), (method, name)
    key = lambda r: (r["method"], r["seed"])                             # noqa: E731
    for r, s in zip(sorted(whole["runs"], key=key), sorted(resumed["runs"], key=key)):
        assert r["test_accuracy"] == s["test_accuracy"]
        assert r["curve"] == s["curve"]
    # resuming a finished run reads it back
    again = train.run(cfg, tmp_path / "cut", resume=True, progress=False)
    assert [r["test_accuracy"] for r in again["runs"]] == \
        [r["test_accuracy"] for r in resumed["runs"]]


def test_resume_refuses_a_different_config(tmp_path):
    cfg = tiny(["backprop"])
    train.run(cfg, tmp_path, progress=False)
    other = tiny(["backprop"])
    other["method"]["backprop"] = {**FAST["backprop"], "eta": 0.2}
    with pytest.raises(ValueError, match="different config"):
        train.run(other, tmp_path, resume=True, progress=False)


def test_backprop_in_the_machinery_is_sgd():
    """Euler with dt, rate η, gate always: each step is an SGD step of rate η·dt on
    mean_B ½‖y − r_L‖² (torch autograd), two steps per minibatch here."""
    torch.manual_seed(0)
    widths, B, P, dt, eta = [5, 7, 4, 3], 6, 4, 0.5, 0.3
    net = ForwardNetwork(widths, activation="tanh", output_activation="sigmoid", seed=[0, 1])
    xs = torch.randn(P, B, widths[0], dtype=torch.float64)
    ys = torch.rand(P, B, widths[-1], dtype=torch.float64)
    circuit = Plastic(ClosedForm("backprop"), net, xs[0], ys[0], eta=eta, gate="always")
    out = integrate(circuit, circuit.initial_state(), lambda k: (xs[k], ys[k]), period=2 * dt,
                    presentations=P, dt=dt, progress=False)
    params = [p.detach().clone() for pair in zip(net.weights, net.biases) for p in pair]
    for k in range(P):
        for _ in range(2):
            leaves = [p.requires_grad_() for p in params]
            r = xs[k].expand(2, B, widths[0])
            for l in range(net.L):
                a = r @ leaves[2 * l].transpose(-1, -2) + leaves[2 * l + 1]
                r = torch.tanh(a) if l < net.L - 1 else torch.sigmoid(a)
            loss = (0.5 * (ys[k] - r).pow(2).sum(-1).mean(-1)).sum()   # replicas independent
            grads = torch.autograd.grad(loss, leaves)
            params = [(p - eta * dt * g).detach() for p, g in zip(leaves, grads)]
    for l in range(net.L):
        W, b = params[2 * l], params[2 * l + 1]
        assert (out.y[f"W_{l + 1}"] - W).abs().max() < 1e-12
        assert (out.y[f"b_{l + 1}"] - b).abs().max() < 1e-12
        assert (W - net.weights[l]).abs().max() > 1e-3                 # it did learn


@pytest.mark.parametrize("change, named", [
    ({"method": {"di": {"period": -1.0}}}, "method.di.period"),
    ({"method": {"di": {"period": 1.0, "dt": 0.3}}}, "method.di.dt"),
    ({"method": {"di": {"speed": 1.0}}}, "speed"),
    ({"method": {"di": {"circuit": {"alfa": 0.1}}}}, "alfa"),
    ({"method": {"dfc": {"gate": "sometimes"}}}, "method.dfc.gate"),
    ({"method": {"dfc": {"reset": "zero"}}}, "method.dfc.reset"),
    ({"method": {"dfc": {"flow": "sgd"}}}, "method.dfc.flow"),
    ({"method": {"dfc": {"flow": {"adam": {"beta1": 0.9}}}}}, "method.dfc.flow.adam"),
    ({"method": {"sgd": {}}}, "sgd"),
    ({"methods": ["backprop", "adam"]}, "methods"),
    ({"training": {"epochs": 0}}, "training.epochs"),
    ({"training": {"epoch": 2}}, "epoch"),
    ({"hidden": []}, "hidden"),
    ({"task": "cifar"}, "task"),
    ({"network": {"widths": [3, 3]}}, "widths"),
])
def test_bad_config_names_the_key(change, named):
    cfg = {**tiny(["di", "dfc"]), **change}
    with pytest.raises(ValueError, match=named.replace(".", r"\.")) as err:
        train.load(cfg)
    assert "expected" in str(err.value) or "valid" in str(err.value)


def test_cli_reports_a_bad_config_as_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: digits\ntraining: {batch: -4}\n")
    with pytest.raises(SystemExit) as exit_:
        train.main(["--config", str(bad), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "training.batch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        method_table.main(["--out", str(tmp_path / "o"), "--configs", str(bad)])
    assert "training.batch" in capsys.readouterr().err


def test_reset_and_flow_reach_the_learning_circuit():
    """``reset: rest`` and ``flow: adam`` in a method's config are the circuit's: DFC then
    starts every minibatch from its feed-forward pass with the controller at zero (the state
    the jump returns is the circuit's initial one), and its weights carry Adam's moments."""
    cfg = train.load({**tiny(["dfc"]), "method": {"dfc": {
        "eta": 0.001, "period": 2.0, "dt": 0.5, "gate": "settled", "reset": "rest",
        "flow": {"adam": {"tau_m": 5.0}}}}})
    setup = train.build(cfg, train.load_task(cfg), "dfc")
    c = setup.circuit
    assert c.reset == "rest" and c.flow.tau_m == 5.0 and "adam_v:W_2" in setup.y0
    jumped = c.present(*setup.stream(1), setup.y0)
    assert torch.equal(jumped["u"], torch.zeros_like(setup.y0["u"]))
    fwd = c.network_of(setup.y0).forward(setup.stream(1)[0])
    torch.testing.assert_close(jumped["v_1"], fwd.a[0], rtol=0, atol=1e-15)


def test_two_tables_of_one_task_in_the_method_table(tmp_path):
    """A second config of a task with its own ``table`` name runs beside the first: its own
    folder, its own rows (the same task, another table), backprop with Adam there."""
    plain = tiny(["backprop"])
    adam = {**tiny(["backprop"]), "table": "tiny_adam",
            "method": {"backprop": {"eta": 0.01, "flow": "adam"}}}
    summary = method_table.run(tmp_path, [plain, adam], progress=False)
    rows = {(r["table"], r["task"]) for r in summary["runs"]}
    task = plain["task"]
    assert rows == {(task, task), ("tiny_adam", task)}
    assert (tmp_path / "tiny_adam" / "summary.json").is_file()
    assert (tmp_path / task / "summary.json").is_file()
    md = (tmp_path / "table.md").read_text()
    assert f"| tiny_adam | BP |" in md and f"| {task} | BP |" in md
    adam_row = next(r for r in summary["runs"] if r["table"] == "tiny_adam")
    assert adam_row["settings"]["flow"] == "adam"
    with pytest.raises(ValueError, match="one config per task"):
        method_table.prepare(tmp_path / "again", [plain, tiny(["backprop"])])


def test_shipped_configs_load():
    for path in method_table.CONFIGS:
        cfg = train.load(path)
        assert cfg["methods"] == list(train.METHODS)
        assert cfg["training"]["seeds"] >= 3


def test_fa_z_il_in_one_integration_is_backprop(tmp_path):
    """PC with the arrival gate, dt = τ_x and output variance 4 trains exactly like backprop
    with rate η/4 on the same minibatches (Z-IL's exactness survives the single integration)."""
    cfg = tiny(["backprop", "pc"])
    # the free phase must settle below the gate's quiet threshold (1e-10) for the gates to arm
    cfg["method"]["pc"] = {**FAST["pc"], "period": 123.0, "teacher_from": 120.0}
    train.run(cfg, tmp_path, progress=False)
    start = train.build(train.load(cfg), train.load_task(train.load(cfg)), "backprop").y0
    bp = train.final_weights(tmp_path, "digits", "backprop")
    pc = train.final_weights(tmp_path, "digits", "pc")
    for name in ("W_1", "W_2", "b_1", "b_2"):
        assert (bp[name] - start[name]).abs().max() > 1e-3
        assert (pc[name] - bp[name]).abs().max() < 1e-10


def test_cross_entropy_for_every_method_and_z_il_is_backprop_on_it(tmp_path):
    """``training.loss: cross_entropy``: every family learns the cross-entropy's gradient
    target; Z-IL in one integration then trains exactly like backprop on the cross-entropy."""
    cfg = tiny(["backprop", "z_il", "di", "pc"])
    cfg["training"]["loss"] = "cross_entropy"
    cfg["method"]["pc"] = {**FAST["pc"], "period": 4.0, "teacher_from": 1.0,
                           "gate_args": {"threshold": 1.0e-10, "t_quiet": 1.0},
                           "circuit": {"variances": [1.0, 4.0], "reset": "feed_forward"}}
    summary = train.run(cfg, tmp_path, progress=False)
    loaded = train.load(cfg)
    task = train.load_task(loaded)
    setup = train.build(loaded, task, "di")
    assert setup.circuit.loss == "cross_entropy"
    start = train.build(loaded, task, "backprop").y0
    bp = train.final_weights(tmp_path, "digits", "backprop")
    for other in ("z_il", "pc"):                     # pc: Fa-Z-IL at rate η/σ²_L = 0.1 too
        got = train.final_weights(tmp_path, "digits", other)
        for name in ("W_1", "W_2", "b_1", "b_2"):
            assert (bp[name] - start[name]).abs().max() > 1e-3
            assert (got[name] - bp[name]).abs().max() < 1e-10, (other, name)
    runs = {r["method"]: r for r in summary["runs"]}
    assert set(runs) == {"backprop", "z_il", "di", "pc"} and not any(
        r["diverged"] for r in summary["runs"])
    assert runs["z_il"]["test_accuracy"] == runs["backprop"]["test_accuracy"]


def test_an_unknown_training_loss_is_named():
    cfg = tiny(["backprop"])
    cfg["training"]["loss"] = "hinge"
    with pytest.raises(ValueError, match="training.loss"):
        train.load(cfg)
