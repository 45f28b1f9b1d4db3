"""Adaptive methods isolate failures: one replica that blows up (torchdiffeq's shared step
underflows) is flagged diverged and frozen at a finite state; the others finish with the results
they get alone (to the adaptive tolerance)."""
import pytest
import torch

from circuits import DynamicInversion, ForwardNetwork
from solvers import Status, solve

F32, F64 = torch.float32, torch.float64
RTOL, ATOL = 1e-5, 1e-7


def finite(sol):
    return all(bool(torch.isfinite(v).all()) for v in [*sol.ys.values(), *sol.y1.values()])


@pytest.fixture(scope="module")
def di_sweep():
    """A DI sweep with random feedback, restricted (``take``) to replicas that are clearly
    unstable (λ_max > 0.1: they overflow float32 before t1) or clearly stable (λ_max < −0.05)."""
    net = ForwardNetwork([4, 8, 6, 2], seed=0, dtype=F32)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, generator=g).to(F32)
    target = torch.randn(3, 2, generator=g).to(F32)
    S = 48
    full = DynamicInversion(net, x, target, alpha=torch.linspace(0.05, 3.0, S, dtype=F32),
                            feedback="random")
    lam = full.max_loop_eigenvalue()
    keep = torch.nonzero((lam > 0.1) | (lam < -0.05)).flatten()[:16]
    circuit = full.take(keep)
    lam = circuit.max_loop_eigenvalue()
    unstable = lam > 0
    assert 0 < int(unstable.sum()) < keep.numel(), lam           # the sweep mixes both kinds
    t1 = float(120.0 / lam[unstable].min())                       # e^120 overflows float32
    save_at = [0.0, 1.0, 5.0, t1 / 2, t1]
    sol = solve(circuit, circuit.initial_state(), 0.0, t1, method="dopri5", save_at=save_at,
                adaptive_rtol=RTOL, adaptive_atol=ATOL)
    return circuit, unstable, t1, save_at, sol


def test_a_batch_with_unstable_replicas_returns_and_flags_exactly_them(di_sweep):
    circuit, unstable, t1, save_at, sol = di_sweep
    assert "isolation" in sol.stats and sol.stats["isolation"]["failed_alone"]   # it did fail
    assert torch.equal(sol.diverged, unstable)
    assert finite(sol)
    assert bool((sol.t_stop[unstable] < t1).all())
    # frozen: every saved point after t_stop equals the final state
    for s in torch.nonzero(unstable).flatten().tolist():
        later = sol.ts > sol.t_stop[s]
        for name, v in sol.ys.items():
            assert torch.equal(v[later, s], sol.y1[name][s].expand_as(v[later, s]))


def test_stable_replicas_get_what_they_get_alone(di_sweep):
    circuit, unstable, t1, save_at, sol = di_sweep
    for s in torch.nonzero(~unstable).flatten().tolist()[:4]:
        alone_circuit = circuit.take(torch.tensor([s]))
        alone = solve(alone_circuit, alone_circuit.initial_state(), 0.0, t1, method="dopri5",
                      save_at=save_at, adaptive_rtol=RTOL, adaptive_atol=ATOL)
        assert alone.status.item() == sol.status[s].item() != Status.DIVERGED
        for name, v in alone.ys.items():
            scale = v.abs().amax().clamp_min(1e-3)
            assert (sol.ys[name][:, s] - v[:, 0]).abs().amax() <= 1e-3 * scale, (s, name)


def blow_up(rates):
    """dy/dt = −r y for r > 0; dy/dt = y² (y(t) = 1/(1 − t): infinite at t = 1) for r = 0."""
    def f(t, y):
        v = y["y"]
        return {"y": torch.where(rates == 0, v * v, -rates * v)}
    return f


def test_a_plain_callable_that_mixes_no_replicas_is_split_by_rows():
    rates = torch.tensor([1.0, 0.0, 0.5, 2.0, 0.0], dtype=F64)[:, None]
    y0 = torch.ones(5, 1, dtype=F64)
    sol = solve(blow_up(rates), {"y": y0}, 0.0, 3.0, method="dopri5",
                save_at=[0.0, 0.5, 2.0, 3.0])
    assert sol.diverged.tolist() == [False, True, False, False, True]
    assert finite(sol)
    assert sol.t_stop[1].item() == 0.5 and sol.y1["y"][1].item() == pytest.approx(2.0, rel=1e-6)
    for s in (0, 2, 3):
        alone = solve(blow_up(rates[s:s + 1]), {"y": y0[s:s + 1]}, 0.0, 3.0, method="dopri5",
                      save_at=[0.0, 0.5, 2.0, 3.0])
        assert torch.allclose(sol.ys["y"][:, s], alone.ys["y"][:, 0], rtol=1e-6, atol=1e-9)
        assert torch.allclose(sol.ys["y"][:, s, 0], torch.exp(-rates[s] * sol.ts), rtol=1e-5)


def test_a_plain_callable_that_mixes_replicas_gets_an_error_naming_the_fix():
    rates = torch.tensor([1.0, 0.0], dtype=F64)[:, None]

    def mixing(t, y):
        return {"y": blow_up(rates)(t, y)["y"] + 0.0 * y["y"].sum(0)}

    with pytest.raises(ValueError, match=r"replicas .* fixed-step method"):
        solve(mixing, {"y": torch.ones(2, 1, dtype=F64)}, 0.0, 3.0, method="dopri5")


def test_a_batch_without_failures_takes_the_unsplit_path():
    rates = torch.tensor([1.0, 0.5], dtype=F64)[:, None]
    sol = solve(blow_up(rates), {"y": torch.ones(2, 1, dtype=F64)}, 0.0, 3.0, method="dopri5")
    assert "isolation" not in sol.stats
    assert torch.allclose(sol.y1["y"][:, 0], torch.exp(-rates[:, 0] * 3.0), rtol=1e-6)
