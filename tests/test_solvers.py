"""Solvers against exact solutions: orders, torchdiffeq agreement, recording, stopping."""
import math

import numpy as np
import pytest
import torch
import torchdiffeq

from solvers import METHODS, Status, solve

F64 = torch.float64
A = torch.tensor([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.1, 0.0, -1.0]], dtype=F64)
Y0 = torch.tensor([[1.0, -0.5, 2.0]], dtype=F64)


def linear(t, y):
    return {"y": y["y"] @ A.T}


class LinearWithLeak:
    """dy/dt = A y declared as −λ y + (A + λ I) y, so exponential Euler has a leak to use."""

    def __init__(self, lam: float):
        self.lam = lam

    def vector_field(self, t, y):
        return linear(t, y)

    def leak(self, y):
        return {"y": torch.tensor(self.lam, dtype=F64)}


def exact(t):
    return Y0 @ torch.linalg.matrix_exp(A * t).T


@pytest.mark.parametrize("name", sorted(METHODS))
def test_convergence_order_against_matrix_exponential(name):
    method = METHODS[name]
    f = LinearWithLeak(0.7) if method.exponential else linear
    dts = [0.1, 0.05, 0.025, 0.0125]
    errs = []
    for dt in dts:
        sol = solve(f, {"y": Y0}, 0.0, 2.0, dt=dt, method=name, steady_state=False)
        errs.append((sol.y1["y"] - exact(2.0)).norm().item())
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - method.order) <= 0.2, (name, slope, errs)


def test_exponential_euler_is_exact_for_a_leak_with_constant_drive():
    lam, drive = 3.0, 2.0

    class Leaky:
        def vector_field(self, t, y):
            return {"y": -lam * y["y"] + drive}

        def leak(self, y):
            return {"y": torch.tensor(lam, dtype=F64)}

    sol = solve(Leaky(), {"y": torch.zeros(1, 1, dtype=F64)}, 0.0, 1.0, dt=0.25,
                method="exp_euler", steady_state=False)
    expected = drive / lam * (1 - math.exp(-lam))
    assert abs(sol.y1["y"].item() - expected) < 1e-14


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_agrees_with_torchdiffeq_dopri5_at_tight_tolerance(method):
    ref = torchdiffeq.odeint(lambda t, y: y @ A.T, Y0, torch.tensor([0.0, 3.0], dtype=F64),
                             method="dopri5", rtol=1e-12, atol=1e-12)[-1]
    kwargs = dict(dt=1e-3) if method == "rk4" else dict(adaptive_rtol=1e-11, adaptive_atol=1e-12)
    sol = solve(linear, {"y": Y0}, 0.0, 3.0, method=method, steady_state=False, **kwargs)
    assert (sol.y1["y"] - ref).norm() / ref.norm() < 1e-9
    assert (ref - exact(3.0)).norm() / exact(3.0).norm() < 1e-10


def test_save_every_and_save_at_record_the_right_times():
    sol = solve(linear, {"y": Y0}, 0.0, 1.0, dt=0.01, method="rk4", save_every=25,
                steady_state=False)
    assert torch.allclose(sol.ts, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=F64))
    for k, t in enumerate(sol.ts.tolist()):
        assert (sol.ys["y"][k] - exact(t)).norm() < 1e-8
    # Off-grid times are linearly interpolated between the two steps around them.
    sol = solve(linear, {"y": Y0}, 0.0, 1.0, dt=0.001, method="rk4", save_at=[0.0, 0.1234, 1.0],
                steady_state=False)
    assert sol.ys["y"].shape == (3, 1, 3)
    assert (sol.ys["y"][1] - exact(0.1234)).norm() < 1e-5


def test_buffers_grow_with_saved_points_not_steps():
    sol = solve(linear, {"y": Y0}, 0.0, 10.0, dt=1e-3, steady_state=False)
    assert sol.ys["y"].shape[0] == 2 and sol.stats["steps"] == 10000


def test_steady_state_stop_is_per_replica_and_freezes_the_state():
    rates = torch.tensor([1.0, 0.1, 0.01], dtype=F64)[:, None]

    def decay(t, y):
        return {"y": -rates * y["y"]}

    sol = solve(decay, {"y": torch.ones(3, 1, dtype=F64)}, 0.0, 200.0, dt=0.01, atol=1e-6,
                rtol=0.0, save_every=500)
    assert sol.status.tolist() == [Status.CONVERGED, Status.CONVERGED, Status.REACHED_T1]
    # ‖dy/dt‖ = r e^{-r t} ≤ 1e-6 first at t = ln(r / 1e-6) / r (checks every 10 steps).
    for s, r in enumerate([1.0, 0.1]):
        t_expected = math.log(r / 1e-6) / r
        assert abs(sol.t_stop[s].item() - t_expected) <= 0.1   # one check interval (Euler)
        # frozen afterwards: every later saved point equals the final state
        later = sol.ts > sol.t_stop[s]
        assert torch.equal(sol.ys["y"][later, s], sol.y1["y"][s].expand(int(later.sum()), 1))


def test_replicas_in_one_call_equal_each_alone_and_divergence_does_not_poison():
    rates = torch.tensor([1.0, -3.0, 0.5], dtype=F64)[:, None]   # replica 1 explodes

    def field(r):
        return lambda t, y: {"y": -r * y["y"] + torch.sin(torch.as_tensor(t, dtype=F64))}

    y0 = torch.ones(3, 1, dtype=F64)
    together = solve(field(rates), {"y": y0}, 0.0, 20.0, dt=0.01, save_every=7,
                     divergence_bound=1e4, steady_state=False)
    assert together.status.tolist() == [Status.REACHED_T1, Status.DIVERGED, Status.REACHED_T1]
    assert torch.isfinite(together.ys["y"]).all()
    assert together.ys["y"][:, 1].abs().max() <= 1e4
    assert 2.0 < together.t_stop[1].item() < 4.0       # e^{3t} passes 1e4 near t = 3.07
    for s in (0, 2):
        alone = solve(field(rates[s:s + 1]), {"y": y0[s:s + 1]}, 0.0, 20.0, dt=0.01,
                      save_every=7, divergence_bound=1e4, steady_state=False)
        assert torch.equal(alone.ys["y"][:, 0], together.ys["y"][:, s])
        assert torch.equal(alone.y1["y"][0], together.y1["y"][s])


def test_adaptive_adapter_reports_divergence_and_steady_state():
    rates = torch.tensor([1.0, -2.0], dtype=F64)[:, None]
    sol = solve(lambda t, y: {"y": -rates * y["y"]}, {"y": torch.ones(2, 1, dtype=F64)}, 0.0,
                20.0, method="dopri5", save_at=[0.0, 5.0, 10.0, 20.0], divergence_bound=1e3,
                atol=1e-6)
    assert sol.status.tolist() == [Status.CONVERGED, Status.DIVERGED]
    assert torch.isfinite(sol.ys["y"]).all() and sol.ys["y"][:, 1].abs().max() <= 1e3


def test_observe_records_a_reduction():
    sol = solve(linear, {"y": Y0}, 0.0, 1.0, dt=0.01, method="rk4", save_every=10,
                steady_state=False,
                observe=lambda y: {"norm": y["y"].norm(dim=-1, keepdim=True)})
    assert set(sol.ys) == {"norm"} and sol.ys["norm"].shape == (11, 1, 1)
    assert abs(sol.ys["norm"][-1].item() - exact(1.0).norm().item()) < 1e-3
