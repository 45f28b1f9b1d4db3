"""Fast settling: a batch that shrinks as replicas stop (compaction) and the exact flow of affine
settles (``method="affine"`` / ``"auto"``). Float64 throughout; references are the same solve
without compaction (bit for bit), fine RK4, and the circuits' closed-form steady states."""
import pytest
import torch

from circuits import (DeepFeedbackControl, DynamicInversion, ForwardNetwork, Plastic,
                      PredictiveCoding, SingleLoopDynamicInversion, TargetPropagation)
from circuits.plasticity import Settling
from solvers import Status, solve

F64 = torch.float64
S = 12


@pytest.fixture(scope="module")
def setting():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, generator=g, dtype=F64)
    target = 0.3 * torch.randn(2, 3, generator=g, dtype=F64)
    net = ForwardNetwork([6, 5, 4, 3], "tanh", seed=1, dtype=F64)
    return net, x, target, torch.logspace(-2, 0, S, dtype=F64)


def _families(net, x, target, alpha):
    spread = torch.linspace(0.5, 3.0, S, dtype=F64)
    return {
        "di_euler": (DynamicInversion(net, x, target, alpha=10 * alpha),
                     dict(method="euler", dt=0.1)),
        "di_random_diverging": (DynamicInversion(net, x, target, alpha=alpha, feedback="random"),
                                dict(method="euler", dt=0.1)),
        "sdi_exp_euler": (SingleLoopDynamicInversion(net, x, target, alpha=alpha),
                          dict(method="exp_euler", dt=0.1)),
        "dfc": (DeepFeedbackControl(net, x, target, alpha=alpha, k_p=1.0),
                dict(method="euler", dt=0.02)),
        "pc": (PredictiveCoding(net, x, target, tau_x=spread), dict(method="euler", dt=0.05)),
        "tp": (TargetPropagation(net, x, target, rule="ddtp_linear",
                                 beta=torch.logspace(-1.5, 0, S, dtype=F64)),
               dict(method="euler", dt=0.05)),
        "di_rosenbrock": (DynamicInversion(net, x, target, alpha=alpha),
                          dict(method="exp_rosenbrock", dt=0.1, dt_growth=2.0,
                               jacobian_every=None, check_every=1)),
        # weights as state; large η diverges, the others settle or run to t1
        "plastic_di": (Plastic(Settling(DynamicInversion, alpha=0.1), net, x, target,
                               eta=torch.logspace(-2, 2, S, dtype=F64), gate="always"),
                       dict(method="euler", dt=0.05, t1=200.0)),
    }


@pytest.mark.parametrize("name", ["di_euler", "di_random_diverging", "sdi_exp_euler", "dfc", "pc",
                                  "tp", "di_rosenbrock", "plastic_di"])
def test_compaction_equals_the_full_batch_bit_for_bit(setting, name):
    circuit, kwargs = _families(*setting)[name]
    y0 = circuit.initial_state()
    kwargs = {"t1": 2000.0, **kwargs}
    full, compacted = (solve(circuit, y0, 0.0, save_every=7, compact=c, progress=False,
                             **kwargs) for c in (None, 0.5))
    stopped = full.status != Status.REACHED_T1
    assert int(stopped.sum()) >= 2 and len(set(full.t_stop.tolist())) >= 2   # staggered stops
    assert compacted.stats["compactions"] >= 1
    assert compacted.stats["replica_steps"] < full.stats["replica_steps"]
    assert torch.equal(full.status, compacted.status)
    assert torch.equal(full.t_stop, compacted.t_stop)
    for k in full.y1:
        assert torch.equal(full.y1[k], compacted.y1[k]), k
        assert torch.equal(full.ys[k], compacted.ys[k]), k
    assert all(torch.isfinite(v).all() for v in compacted.y1.values())


def test_compaction_with_observe_records_every_replica(setting):
    net, x, target, alpha = setting
    circuit = DynamicInversion(net, x, target, alpha=alpha)
    observe = (lambda y: {"credit_1": circuit.observe(y)["credit_1"]})
    full, compacted = (solve(circuit, circuit.initial_state(), 0.0, 500.0, dt=0.1,
                             save_every=50, observe=observe, compact=c, progress=False)
                       for c in (None, 0.5))
    assert compacted.stats["compactions"] >= 1
    assert torch.equal(full.ys["credit_1"], compacted.ys["credit_1"])


def test_affine_flow_is_exact_at_any_saved_time(setting):
    net, x, target, alpha = setting
    circuit = DynamicInversion(net, x, target, alpha=alpha)
    y0 = circuit.initial_state()
    times = [0.0, 0.37, 1.0, 2.5, 7.3]          # off the step grid of 0.1 (and of 2^k · 0.1)
    fine = solve(circuit, y0, 0.0, 7.3, dt=2e-3, method="rk4", save_at=times,
                 steady_state=False, progress=False)
    for growth in (1.0, 2.0):
        exact = solve(circuit, y0, 0.0, 7.3, dt=0.1, dt_growth=growth, method="affine",
                      save_at=times, steady_state=False, progress=False)
        for k in exact.ys:
            assert torch.allclose(exact.ys[k], fine.ys[k], atol=1e-12, rtol=0), (growth, k)


def test_auto_settles_affine_circuits_onto_their_steady_state_in_few_steps(setting):
    net, x, target, alpha = setting
    for circuit in (DynamicInversion(net, x, target, alpha=alpha),
                    SingleLoopDynamicInversion(net, x, target, alpha=alpha)):
        # ‖y − y*‖ ≤ ‖J⁻¹‖ ‖f(y)‖ ≤ ‖J⁻¹‖ (atol + rtol ‖y‖), ‖J⁻¹‖ ≲ 1/α = 100 here
        sol = solve(circuit, circuit.initial_state(), 0.0, 1e9, method="auto", atol=1e-14,
                    rtol=1e-13, progress=False)
        assert sol.stats["method"] == "affine" and sol.stats["dt_growth"] == 2.0
        assert bool(sol.converged.all()) and sol.stats["steps"] <= 40
        steady = circuit.steady_state()
        for k, v in steady.items():
            assert torch.allclose(sol.y1[k], v, atol=1e-9, rtol=1e-9), (type(circuit), k)


def test_affine_reports_unstable_loops_diverged_like_euler(setting):
    net, x, target, alpha = setting
    circuit = DynamicInversion(net, x, target, alpha=alpha, feedback="random")
    exact = solve(circuit, circuit.initial_state(), 0.0, 1e9, method="auto", progress=False)
    euler = solve(circuit, circuit.initial_state(), 0.0, 2000.0, dt=0.1, progress=False)
    assert 0 < int(exact.diverged.sum()) < S
    assert torch.equal(exact.status, euler.status)
    assert all(torch.isfinite(v).all() for v in exact.y1.values())
    assert (circuit.max_loop_eigenvalue() > 0).tolist() == exact.diverged.tolist()


def test_affine_refuses_fields_that_are_not_affine(setting):
    net, x, target, alpha = setting
    nonlinear = SingleLoopDynamicInversion(net, x, target, alpha=alpha, carry="activation")
    with pytest.raises(ValueError, match="does not declare an affine field"):
        solve(nonlinear, nonlinear.initial_state(), 0.0, 1.0, method="affine", dt=0.1)

    class Misdeclared:
        affine = True

        def vector_field(self, t, y):
            return {"v": 1.0 - y["v"] ** 3}

    with pytest.raises(ValueError, match="not affine in its state"):
        solve(Misdeclared(), {"v": 0.5 * torch.ones(3, 2, dtype=F64)}, 0.0, 1.0,
              method="affine", dt=0.1)
    assert solve(nonlinear, nonlinear.initial_state(), 0.0, 1.0, method="auto",
                 dt=0.1).stats["method"] == "exp_euler"
    with pytest.raises(ValueError, match="compact"):
        solve(nonlinear, nonlinear.initial_state(), 0.0, 1.0, dt=0.1, compact=1.5)
