"""Phases of a presentation that integrate part of a learning circuit's state: settling the
credit populations with the weights held, then one Euler step of the weights, is the discrete
online protocol "settle, then W += η ΔW" (Podlaski & Machens 2020), checked against the closed
form it converges to (NDI) and against a hand-written loop; a step chosen from the circuit at
the phase start; the drive jumps only where what it shows changes; clipped credits."""
from __future__ import annotations

import pytest
import torch

from circuits import ClosedForm, DynamicInversion, ForwardNetwork, Plastic, Settling
from circuits.credit import clip_hidden
from solvers import Phase, train

F64 = torch.float64


def _task(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=F64), torch.randn(n, 3, generator=g, dtype=F64)


def _net():
    return ForwardNetwork([4, 6, 3], "tanh", bias=True, seed=1, dtype=F64)


def _stream(x, y):
    return lambda k: (x[k:k + 1], y[k:k + 1])


SETTLE = Phase("settle", 1e5, 1.0, teacher=True, steady_state=True, method="affine",
               atol=1e-14, rtol=1e-11, populations="fast",
               options={"dt_growth": 2.0, "jacobian_every": None, "check_every": 1})
UPDATE = Phase("update", 1.0, 1.0, teacher=True, populations="weights")


def test_settle_then_update_is_the_closed_form_online_rule():
    x, y = _task()
    alpha = torch.tensor([0.1, 0.01], dtype=F64)
    di = Plastic(Settling(DynamicInversion, alpha=alpha), _net(), x[:1], y[:1], eta=0.05,
                 gate="always", reset="rest")
    ndi = Plastic(ClosedForm("ndi", alpha=alpha), _net(), x[:1], y[:1], eta=0.05,
                  gate="always")
    got = train(di, di.initial_state(), _stream(x, y), phases=[SETTLE, UPDATE],
                presentations=5, progress=False).y
    want = train(ndi, ndi.initial_state(), _stream(x, y), period=1.0, dt=1.0,
                 presentations=5, progress=False).y
    moved = (want["W_1"] - ndi.initial_state()["W_1"]).abs().max()
    assert moved > 1e-3                                      # the weights did learn
    for k in want:
        assert torch.allclose(got[k], want[k], rtol=0, atol=1e-9 * float(moved)), k


def test_settle_then_update_equals_a_hand_written_loop():
    """W ← W + η mean_B δ r_{ℓ-1}ᵀ with δ from DI integrated from rest at the current weights."""
    x, y = _task(3)
    eta, alpha = 0.05, 0.1
    lc = Plastic(Settling(DynamicInversion, alpha=alpha), _net(), x[:1], y[:1], eta=eta,
                 gate="always", reset="rest")
    got = train(lc, lc.initial_state(), _stream(x, y), phases=[SETTLE, UPDATE],
                presentations=3, progress=False).y
    W = [w.clone() for w in _net().weights]
    b = [c.clone() for c in _net().biases]
    for k in range(3):
        net = ForwardNetwork([4, 6, 3], "tanh", bias=True, weights=W, biases=b, dtype=F64)
        c = DynamicInversion(net, x[k:k + 1], y[k:k + 1], alpha=alpha)
        deltas = c.credits(c.steady_state())
        r = c.forward.r
        W = [w + eta * d.transpose(-1, -2) @ rr for w, d, rr in zip(W, deltas, r[:-1])]
        b = [bb + eta * d for bb, d in zip(b, deltas)]
    for l in (1, 2):
        assert torch.allclose(got[f"W_{l}"], W[l - 1], rtol=1e-9, atol=1e-13)
        assert torch.allclose(got[f"b_{l}"], b[l - 1], rtol=1e-9, atol=1e-13)


def test_reset_rest_settles_every_example_from_rest_and_the_update_keeps_the_settle():
    x, y = _task(2)
    lc = Plastic(Settling(DynamicInversion, alpha=0.1), _net(), x[:1], y[:1], eta=0.05,
                 gate="always", reset="rest")
    seen = []

    def look(k, state, sols):
        seen.append((sols[0].stats["steps"], {n: state[n].clone() for n in lc.fast},
                     sols[1].y1.keys()))
    train(lc, lc.initial_state(), _stream(x, y), phases=[SETTLE, UPDATE], presentations=2,
          on_presentation=look, progress=False)
    for steps, fast, updated in seen:
        assert steps > 3                                     # settled from rest, not from before
        assert all(v.abs().max() > 0 for v in fast.values())  # the update phase held them
        assert set(updated) == {"W_1", "W_2", "b_1", "b_2"}


def test_a_step_from_the_circuit_and_at_most_max_steps():
    x, y = _task(1)
    lc = Plastic(Settling(DynamicInversion, alpha=0.1), _net(), x[:1], y[:1], gate="always",
                 reset="rest")
    asked = []

    def dt(circuit, y0):
        asked.append((type(circuit).__name__, sorted(y0)))
        return 0.25
    phase = Phase("settle", 1e4, dt, teacher=True, steady_state=False, populations="fast",
                  max_steps=7)
    got = []
    train(lc, lc.initial_state(), _stream(x, y), phases=[phase, UPDATE], presentations=1,
          on_presentation=lambda k, s, sols: got.append(sols[0]), progress=False)
    assert asked == [("DynamicInversion", sorted(lc.fast))]
    assert got[0].stats["steps"] == 7 and got[0].stats["dt"] == 0.25


def test_the_drive_jumps_only_where_what_it_shows_changes():
    x, y = _task(2)
    lc = Plastic(Settling(DynamicInversion, alpha=0.1), _net(), x[:1], y[:1], gate="always",
                 reset="rest")
    calls = []
    present = lc.present

    def counting(*args, **kwargs):
        calls.append(args[1] is not None)
        return present(*args, **kwargs)
    lc.present = counting
    train(lc, lc.initial_state(), _stream(x, y), phases=[SETTLE, UPDATE], presentations=2,
          progress=False)
    assert calls == [True, True]                  # one jump per example, none between phases


def test_clip_hidden_caps_each_examples_hidden_credit_norm():
    d1 = torch.tensor([[[3.0, 4.0], [0.3, 0.4]]], dtype=F64)      # norms 5 and 0.5
    d2 = torch.tensor([[[30.0, 40.0]]], dtype=F64)
    out = clip_hidden([d1, d2], 1.0)
    assert out[0][0, 0].tolist() == pytest.approx([0.6, 0.8], rel=1e-15)
    assert out[0][0, 1].tolist() == pytest.approx([0.3, 0.4], rel=1e-15)
    assert out[1] is d2                                             # the output credit: untouched
    assert clip_hidden([d1, d2], None)[0] is d1


@pytest.mark.parametrize("bad, match", [
    (dict(populations="slow"), "populations"),
    (dict(max_steps=0), "max_steps"),
    (dict(dt=-1.0), "dt"),
    (dict(options=[1]), "options"),
])
def test_bad_phase_is_refused(bad, match):
    args = dict(name="p", duration=1.0, dt=0.1, teacher=True) | bad
    with pytest.raises(ValueError, match=match):
        Phase(**args)


def test_a_part_needs_a_learning_circuit_with_credit_populations():
    x, y = _task(1)
    c = DynamicInversion(_net(), x[:1], y[:1], alpha=0.1)
    c.present = lambda *a, **k: None
    with pytest.raises(TypeError, match="populations"):
        train(c, c.initial_state(), _stream(x, y), phases=[SETTLE], presentations=1,
              progress=False)


def test_bad_reset_is_refused():
    x, y = _task(1)
    with pytest.raises(ValueError, match="reset"):
        Plastic(ClosedForm("backprop"), _net(), x[:1], y[:1], reset="zero")


@pytest.mark.parametrize("period, teacher_from", [(3.0, 0.0), (4.0, 1.0)])
def test_fa_z_il_from_the_free_equilibrium_is_sgd_in_l_plus_one_steps(period, teacher_from):
    """The method table's Fa-Z-IL: each new input jumps the circuit to the free phase's
    equilibrium (the values to the feed-forward pass, the arrival gate's quiet timers armed:
    ``reset="feed_forward"``), the teacher is shown for L + 1 = 3 steps of dt = τ_x (after one
    more quiet step, or none) and every layer's gate opens once, by itself, on the step its
    error arrives: the weights follow backprop's minibatch-mean SGD with rate η/σ²_L, to
    rounding."""
    from circuits.gates import ArrivalGate
    from circuits.registry import learning_circuit
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 8, 4, generator=g, dtype=F64), torch.randn(6, 8, 3, generator=g,
                                                                      dtype=F64)
    net = ForwardNetwork([4, 6, 3], "tanh", bias=True, seed=2, dtype=F64)
    stream = lambda k: (x[k], y[k])                                       # noqa: E731
    pc = learning_circuit("pc", net, x[0], y[0], eta=0.4, period=period,
                          gate_args={"threshold": 1e-10, "t_quiet": 1.0},
                          circuit={"variances": [1.0, 4.0], "reset": "feed_forward"})
    assert isinstance(pc.plasticity, ArrivalGate)
    got = train(pc, pc.initial_state(), stream, period=period, dt=1.0,
                teacher_from=teacher_from, presentations=6, progress=False).y
    bp = learning_circuit("backprop", net, x[0], y[0], eta=0.4 / 4)
    want = train(bp, bp.initial_state(), stream, period=1.0, dt=1.0, presentations=6,
                 progress=False).y
    for k in ("W_1", "W_2", "b_1", "b_2"):
        moved = (want[k] - bp.initial_state()[k]).abs().max()
        assert moved > 1e-2, k
        assert torch.allclose(got[k], want[k], rtol=0, atol=1e-12 * float(moved) + 1e-15), k


def test_z_il_resets_every_presentation_of_a_constant_stream():
    """The same input tensor shown again after a teacher is a new example: Z-IL still starts it
    at the feed-forward pass (C1), so repeating one batch is repeated SGD on it."""
    from circuits.registry import learning_circuit
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(8, 4, generator=g, dtype=F64), torch.randn(8, 3, generator=g, dtype=F64)
    net = ForwardNetwork([4, 6, 3], "tanh", bias=True, seed=2, dtype=F64)
    zil = learning_circuit("z_il", net, x, y, eta=0.2, period=2.0)
    got = train(zil, zil.initial_state(), lambda k: (x, y), period=2.0, dt=1.0,
                presentations=4, progress=False).y
    bp = learning_circuit("backprop", net, x, y, eta=0.2)
    want = train(bp, bp.initial_state(), lambda k: (x, y), period=1.0, dt=1.0,
                 presentations=4, progress=False).y
    for k in ("W_1", "W_2"):
        assert (want[k] - bp.initial_state()[k]).abs().max() > 1e-3
        assert torch.allclose(got[k], want[k], rtol=0, atol=1e-13)
