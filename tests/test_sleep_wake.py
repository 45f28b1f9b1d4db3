"""DFC's sleep/wake schedule end to end (workbench.sleep): Q learned in sleep phases drives
wake-phase training about as well as DFC's Q = Jᵀ on the same stream; deterministic by seed."""
from __future__ import annotations

import pytest
import torch

from circuits import DeepFeedbackControl, ForwardNetwork, Plastic, Settling
from solvers import train
from workbench.sleep import sleep_wake

F64 = torch.float64
_g = torch.Generator().manual_seed(0)
X = torch.randn(64, 4, generator=_g, dtype=F64)
T = 0.5 * torch.randn(64, 3, generator=_g, dtype=F64)
DFC = dict(alpha=0.01, k_i=5.0, k_p=1.0)
WAKE = dict(period=5.0, dt=0.5, method="exp_partitioned", relinearise_every=8, chunk=8)


def stream(k):
    return X[8 * (k % 8): 8 * (k % 8) + 8], T[8 * (k % 8): 8 * (k % 8) + 8]


def loss(net):
    return float(((net.forward(X).r[-1] - T) ** 2).mean())


def _run(seed=0):
    net = ForwardNetwork([4, 6, 3], "tanh", seed=0, dtype=F64)
    return net, *sleep_wake(net, stream, cycles=2, presentations=16, sleep_time=20.0,
                            pretrain_time=50.0, seed=seed, eta=0.5, dfc=DFC, wake=WAKE,
                            sleep=dict(dt=0.02, k_p=0.5, tau_Q=30.0))


def test_sleep_wake_trains_like_dfc_with_the_transposed_jacobian():
    net, out, Q, records = _run()
    assert [r["presentations"] for r in records] == [16, 32]
    assert not any(any(r["diverged"]) for r in records)
    assert [tuple(q.shape) for q in Q] == [(1, 6, 3), (1, 3, 3)]
    # the reference: DFC's own Q = Jᵀ (recomputed per example), the same 32 minibatches
    ref = Plastic(Settling(DeepFeedbackControl, **DFC), net, *stream(0), eta=0.5)
    y = train(ref, ref.initial_state(), stream, presentations=32, progress=False, **WAKE).y
    start, slept, transposed = loss(net), loss(out), loss(ref.network_of(y))
    # measured: 0.278 → 0.2178 with sleep/wake, → 0.2173 with Q = Jᵀ; within 20 % of its gain
    assert slept < 0.85 * start
    assert start - slept > 0.8 * (start - transposed)


def test_sleep_wake_is_deterministic_by_seed():
    _, a, Qa, _ = _run(seed=0)
    _, b, Qb, _ = _run(seed=0)
    _, c, Qc, _ = _run(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.weights, b.weights))
    assert all(torch.equal(p, q) for p, q in zip(Qa, Qb))
    assert not all(torch.equal(p, q) for p, q in zip(Qa, Qc))


@pytest.mark.parametrize("bad, match", [(dict(cycles=0), "cycles"),
                                        (dict(presentations=-1), "presentations"),
                                        (dict(sleep_time=0.0), "sleep_time")])
def test_bad_schedule_is_refused(bad, match):
    net = ForwardNetwork([4, 6, 3], "tanh", seed=0, dtype=F64)
    args = dict(cycles=1, presentations=2, sleep_time=1.0) | bad
    with pytest.raises(ValueError, match=match):
        sleep_wake(net, stream, **args)
