"""Closed forms next to their dynamics against long settles of the dynamics (float64).

Each closed form (a fixed point, a transient) is compared with :func:`solvers.solve` run until
``‖dy/dt‖`` is at rounding level; the error is measured relative to how far the circuit moved,
``‖y − y*‖ / ‖y* − y(0)‖ ≤ 1e-8`` (or relative to the size of the quantity where it starts at 0):

* predictive coding, fixed predictions: :meth:`PredictiveCoding.steady_state`,
  :meth:`~PredictiveCoding.observed_steady_state` and :meth:`~PredictiveCoding.equilibrium_errors`
  (= autograd's δ) for explicit and leaky errors and unequal variances;
  :meth:`~PredictiveCoding.transient_errors` against Euler steps (binomial law, between steps
  too) and against RK4 (Erlang law);
* target propagation: :meth:`TargetPropagation.exact_inverse_targets` (iterated inverse with
  approximate decoders, :meth:`TargetPropagation.iterated_inverse`),
  :meth:`~TargetPropagation.gauss_newton_targets` (DDTP-linear) and
  :meth:`~TargetPropagation.steady_state` for every rule that has one, with and without anchor;
* DI, SDI and DFC (linear network: the linearisation is exact): ``observed_steady_state()``.
"""
import pytest
import torch

from circuits import (DeepFeedbackControl, DynamicInversion, ForwardNetwork, PredictiveCoding,
                      SingleLoopDynamicInversion, TargetPropagation, get_activation,
                      gauss_newton_targets)
from circuits.target_propagation import MirroredDecoder
from solvers import closed_form_error, solve

F64 = torch.float64
TIGHT = dict(atol=1e-15, rtol=1e-14, progress=False)


def problem(widths, activation="tanh", S=2, B=3, seed=0, **net):
    network = ForwardNetwork(list(widths), activation, seed=[seed + s for s in range(S)], **net)
    g = torch.Generator().manual_seed(50 + seed)
    return (network, torch.randn(B, widths[0], generator=g, dtype=F64),
            torch.randn(B, widths[-1], generator=g, dtype=F64))


def settle(circuit, t1, dt, method="euler"):
    sol = solve(circuit, circuit.initial_state(), 0.0, t1, dt=dt, method=method, **TIGHT)
    assert bool(sol.converged.all()), sol.status_names()
    return sol.y1


def relative(y, star, y0, keys):
    """``‖y − y*‖ / ‖y* − y0‖`` over ``keys`` (y0 a mapping, or 0)."""
    diff = torch.cat([(y[k] - star[k]).flatten() for k in keys])
    ref = torch.cat([(star[k] - (y0[k] if y0 else 0)).flatten() for k in keys])
    assert ref.norm() > 1e-6                       # the circuit moved: a real comparison
    return (diff.norm() / ref.norm()).item()


def autograd_deltas(net, x, y):
    """``δ_ℓ = −∂ℒ/∂a_ℓ`` for ``ℒ = ½‖y − a_L‖²`` (summed over replicas and batch)."""
    r, a = net.input(x).clone().requires_grad_(), []   # an input with a graph behind each a_ℓ
    for l, (W, b) in enumerate(zip(net.weights, net.biases), start=1):
        a.append(r @ W.transpose(-1, -2) + b)
        r = a[-1] if l == net.L else net.hidden_activation.phi(a[-1])
    loss = 0.5 * ((net.output_like(y) - a[-1]) ** 2).sum()
    return [-g for g in torch.autograd.grad(loss, a)]


# -- predictive coding ------------------------------------------------------------------------

@pytest.mark.parametrize("errors, variances", [("explicit", 1.0), ("leaky", [0.5, 2.0, 1.0]),
                                               ("explicit", [3.0, 0.25, 0.5])])
def test_pc_steady_state_is_where_fixed_prediction_pc_settles(errors, variances):
    net, x, y = problem((4, 6, 5, 3))
    c = PredictiveCoding(net, x, y, predictions="fixed", errors=errors, variances=variances,
                         tau_x=0.5)
    y1 = settle(c, 2000.0, 0.02)
    star = c.steady_state()
    assert set(star) == {p.name for p in c.populations}
    assert closed_form_error(c, y1).max().item() <= 1e-8
    # the output value is clamped to the target; the errors are backprop's δ / σ²_L
    assert torch.allclose(star["x_3"], net.output_like(y), rtol=0, atol=1e-14)
    s2_L = 1.0 if not isinstance(variances, list) else variances[-1]
    for e, d in zip(c.equilibrium_errors(), autograd_deltas(net, x, y)):
        assert ((e * s2_L - d).norm() / d.norm()).item() <= 1e-12
    observed, star_obs = c.observe(y1), c.observed_steady_state()
    keys = [f"{p}_{l}" for p in ("eps", "mu") for l in (1, 2, 3)] + ["fb_1", "fb_2", "F"]
    assert relative(observed, star_obs, None, keys) <= 1e-8
    assert torch.equal(star_obs["mu_2"], net.forward(x).a[1])


def test_pc_without_a_teacher_rests_at_the_feed_forward_pass():
    net, x, _ = problem((4, 6, 3))
    c = PredictiveCoding(net, x, None, predictions="fixed")
    assert all(bool((e == 0).all()) for e in c.equilibrium_errors())
    for l, a in enumerate(net.forward(x).a, start=1):
        assert torch.equal(c.steady_state()[f"x_{l}"], a)


def test_pc_transient_errors_follow_euler_steps_between_steps_too():
    net, x, y = problem((4, 6, 5, 5, 3))                 # L = 4: k = 0..3 layers below
    c = PredictiveCoding(net, x, y, predictions="fixed", tau_x=2.0)
    dt = 0.8                                             # γ = 0.4
    times = [0.0, 0.3, 0.8, 1.7, 2.4, 4.0, 5.5, 9.6, 20.1]
    sol = solve(c, c.initial_state(), 0.0, 24.0, dt=dt, save_at=times, steady_state=False,
                progress=False)
    law = c.transient_errors(torch.tensor(times, dtype=F64), dt)
    star = c.equilibrium_errors()
    for e, w, s in zip(c.errors(sol.ys), law, star):
        assert w.shape == (len(times),) + tuple(s.shape)
        assert (e - w).abs().max().item() <= 1e-13 * s.abs().max().item()
    # one time: [S, B, n]; at n steps exactly P[Bin(n, γ) ≥ k], here n = 3, k = 1: 1 − 0.6³
    one = c.transient_errors(3 * dt, dt)
    assert torch.allclose(one[2], (1 - 0.6 ** 3) * star[2], rtol=1e-14, atol=0)
    assert torch.equal(c.transient_errors(0.0, dt)[3], star[3])     # the output: at once


def test_pc_transient_errors_are_erlang_in_continuous_time():
    net, x, y = problem((4, 6, 5, 3))
    c = PredictiveCoding(net, x, y, predictions="fixed")
    times = [0.5, 1.0, 2.0, 3.5, 6.0]
    sol = solve(c, c.initial_state(), 0.0, 6.0, dt=0.005, method="rk4", save_at=times,
                steady_state=False, progress=False)
    law = c.transient_errors(torch.tensor(times, dtype=F64))
    for e, w, s in zip(c.errors(sol.ys), law, c.equilibrium_errors()):
        assert (e - w).abs().max().item() <= 1e-10 * s.abs().max().item()


@pytest.mark.parametrize("kwargs, call, match", [
    (dict(predictions="live"), "steady_state",
     r"steady_state\(\).*'predictions': received 'live', expected 'fixed'"),
    (dict(predictions="fixed", errors="leaky"), "transient_errors",
     r"'errors': received 'leaky', expected 'explicit'"),
    (dict(predictions="fixed", variances=[1.0, 2.0]), "transient_errors",
     r"'variances': received \[\[1.0\], \[2.0\]\], expected 1"),
])
def test_pc_closed_forms_refuse_what_they_do_not_cover(kwargs, call, match):
    net, x, y = problem((4, 6, 3), S=1)
    c = PredictiveCoding(net, x, y, **kwargs)
    with pytest.raises(ValueError, match=match):
        getattr(c, call)(1.0) if call == "transient_errors" else getattr(c, call)()


def test_pc_transient_errors_refuse_a_step_beyond_tau():
    net, x, y = problem((4, 6, 3), S=1)
    c = PredictiveCoding(net, x, y, predictions="fixed", tau_x=0.5)
    with pytest.raises(ValueError, match=r"dt: received 0.6, expected .*dt ≤ τ_x = 0.5"):
        c.transient_errors(1.0, 0.6)
    with pytest.raises(ValueError, match=r"t: received -1.0, expected finite times ≥ 0"):
        c.transient_errors(-1.0, 0.5)


# -- target propagation -----------------------------------------------------------------------

def square_problem(B=2):
    return problem((4, 4, 4, 4), S=1, B=B, init="orthogonal", scale=0.5)


def test_iterated_inverse_settles_on_the_exact_inverse_targets():
    net, x, y = square_problem()
    c = TargetPropagation.iterated_inverse(net, x, y, beta=0.05, perturbation=0.2,
                                           decoder_seed=1)
    assert c.rule == "iterated_output" and len(c.decoders) == net.L - 1
    y1 = settle(c, 2000.0, 0.1)
    star = c.exact_inverse_targets()
    keys = [f"tau_{l}" for l in (1, 2, 3)]
    assert relative(y1, star, c.initial_state(), keys) <= 1e-8
    assert closed_form_error(c, y1).max().item() <= 1e-8          # steady_state() is the same
    for l in (2, 3):                                               # an inverse indeed
        assert torch.allclose(net.layer(l, star[f"tau_{l - 1}"]), star[f"tau_{l}"],
                              rtol=0, atol=1e-13)


def test_ddtp_linear_settles_on_the_gauss_newton_targets():
    net, x, y = problem((4, 6, 5, 3), S=2, B=1, seed=3)
    for damping in (1e-3, 0.3):
        c = TargetPropagation(net, x, y, rule="ddtp_linear", beta=0.2, feedback="gauss_newton",
                              damping=damping)
        y1 = settle(c, 1000.0, 0.1)
        star = c.gauss_newton_targets()
        assert relative(y1, star, c.initial_state(), list(star)) <= 1e-8, damping
        hidden = gauss_newton_targets(net, x, y, 0.2, damping=damping)[:-1]
        for l, t in enumerate(hidden, start=1):
            assert torch.allclose(star[f"tau_{l}"], t, rtol=0, atol=1e-14)
        assert torch.equal(star["tau_3"], c.output_target)
        other = c.gauss_newton_targets(damping=10.0)               # another λ: other targets
        assert (other["tau_1"] - star["tau_1"]).norm() > 1e-3


def decoders(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [MirroredDecoder(torch.randn(1, net.widths[l - 1], net.widths[l], generator=g,
                                        dtype=F64) / net.widths[l] ** 0.5,
                            torch.randn(1, 1, net.widths[l - 1], generator=g, dtype=F64),
                            get_activation("tanh")) for l in range(2, net.L + 1)]


@pytest.mark.parametrize("rule", ["ddtp_linear", "dfa", "dtp", "tp"])
@pytest.mark.parametrize("anchor", [0.0, 0.7])
def test_target_steady_state_is_where_each_rule_settles(rule, anchor):
    net, x, y = problem((4, 6, 5, 3), S=2, B=3, seed=4)
    extra = (dict(feedback="random", feedback_seed=2) if rule == "ddtp_linear"
             else dict(decoders=decoders(net)) if rule in ("dtp", "tp") else {})
    c = TargetPropagation(net, x, y, rule=rule, beta=0.3, tau=2.0, anchor=anchor, **extra)
    y1 = settle(c, 2000.0, 0.2)
    star = c.steady_state()
    assert list(star) == [f"tau_{l}" for l in (1, 2, 3)]
    assert closed_form_error(c, y1).max().item() <= 1e-8


def test_target_steady_state_refuses_rules_without_one():
    net, x, y = square_problem(B=1)
    c = TargetPropagation.iterated_inverse(net, x, y)
    c.rule = "iterated_input"                 # same decoders, the input correction
    with pytest.raises(ValueError, match="rule: received 'iterated_input', expected one of"):
        c.steady_state()
    anchored = TargetPropagation(net, x, y, decoders=c.decoders, anchor=0.1)
    with pytest.raises(ValueError, match="anchor: received 0.1 for rule 'iterated_output', "
                                         "expected 0"):
        anchored.steady_state()
    with pytest.raises(ValueError, match="damping: received None for rule 'iterated_output', "
                                         "expected a number"):
        anchored.gauss_newton_targets()
    with pytest.raises(ValueError, match=r"damping: received -1.0, expected a finite number ≥ 0"):
        anchored.gauss_newton_targets(damping=-1.0)


# -- dynamic inversion and deep feedback control -----------------------------------------------

@pytest.mark.parametrize("cls, extra", [(DynamicInversion, {}), (DynamicInversion, dict(k_p=0.5)),
                                        (SingleLoopDynamicInversion, {})])
def test_inversion_observed_steady_state_is_what_observe_shows_after_the_settle(cls, extra):
    net, x, y = problem((4, 5, 5, 3), S=2, B=2, seed=5)
    c = cls(net, x, y, alpha=0.1, **extra)
    y1 = settle(c, 5000.0, 0.05)
    star, observed = c.observed_steady_state(), c.observe(y1)
    assert closed_form_error(c, y1).max().item() <= 1e-8
    keys = sorted(k for k in star if k.startswith(("fb_", "credit_")))
    assert keys == sorted(k for k in observed if k.startswith(("fb_", "credit_")))
    assert relative(observed, star, None, keys) <= 1e-8


@pytest.mark.parametrize("leak, k_p", [("integral", 0.0), ("integral", 0.5), ("total", 0.5)])
def test_dfc_observed_steady_state_is_exact_on_a_linear_network(leak, k_p):
    net, x, y = problem((4, 5, 3), "linear", S=2, B=2, seed=6)
    c = DeepFeedbackControl(net, x, y, nudge=0.5, alpha=0.1, k_p=k_p, leak=leak)
    y1 = settle(c, 1000.0, 0.01)
    star, observed = c.observed_steady_state(), c.observe(y1)
    assert closed_form_error(c, y1).max().item() <= 1e-8
    keys = ["e"] + [f"{p}_{l}" for p in ("fb", "credit") for l in (1, 2)]
    assert relative(observed, star, None, keys) <= 1e-8
    assert torch.allclose(star["e"], c.alpha_tilde * star["u_total"], rtol=0, atol=0)
