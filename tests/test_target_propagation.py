"""Target propagation as settling dynamics against SPEC §4, §5, §8.5–8.6 (float64)."""
import math

import pytest
import torch

from circuits import ForwardNetwork
from circuits.target_propagation import (MirroredDecoder, TargetPropagation,
                                         gauss_newton_targets, inverse_decoders)
from solvers import solve

from problems import random_problem

F64 = torch.float64


def problem(widths, activation="tanh", seed=0, B=1):
    return random_problem(widths, activation, seed, B, data_offset=10)


def iterate(c, steps):
    """Unit Euler steps (dt = T = 1): the discrete iteration of SPEC §4."""
    return solve(c, c.initial_state(), 0.0, float(steps), dt=1.0, steady_state=False,
                 save_every=1, observe=c.observe)


def rate_and_lipschitz(rule, perturbation, steps=60):
    """One linear layer to invert (L = 2): the measured contraction rate of τ_1 towards the
    exact inverse, and the Lipschitz constant of g∘f − I (output correction) or f∘g − I
    (input correction), which for linear maps is a spectral norm."""
    net, x, y = problem((3, 3, 3), "linear", seed=1)
    g = inverse_decoders(net, perturbation=perturbation, seed=3)
    c = TargetPropagation(net, x, y, rule=rule, beta=0.5, decoders=g)
    sol = iterate(c, steps)
    W, M = net.weights[1][0], g[0].M[0]
    eye = torch.eye(3, dtype=F64)
    lip = torch.linalg.matrix_norm((M @ W if rule == "iterated_output" else W @ M) - eye,
                                   ord=2).item()
    exact = torch.linalg.solve(W, (c.output_target - net.biases[1])[0].T).T   # f_2⁻¹(τ_2)
    err = (sol.ys["tau_1"][1:, 0] - exact).flatten(1).norm(dim=1)             # from step 1
    return err, lip


@pytest.mark.parametrize("rule", ["iterated_output", "iterated_input"])
def test_iterated_inverse_converges_geometrically_within_its_lipschitz_constant(rule):
    err, lip = rate_and_lipschitz(rule, perturbation=0.3)
    assert lip < 1
    rates = err[2:12] / err[1:11]
    assert err[40] < 1e-6 * err[1]                                   # geometric convergence
    assert rates.max().item() <= lip * (1 + 1e-9), (rates.max().item(), lip)


@pytest.mark.parametrize("rule", ["iterated_output", "iterated_input"])
def test_iterated_inverse_fails_when_the_lipschitz_constant_exceeds_one(rule):
    err, lip = rate_and_lipschitz(rule, perturbation=3.0, steps=30)
    assert lip > 1
    assert err[-1] > 10 * err[1]


def test_nonlinear_iteration_rate_is_bounded_by_the_measured_lipschitz_constant():
    net, x, y = problem((4, 4, 4), "tanh", seed=2)
    g = inverse_decoders(net, perturbation=0.2, seed=5)
    c = TargetPropagation(net, x, y, beta=0.05, decoders=g)
    sol = iterate(c, 80)
    tau = sol.ys["tau_1"][1:, 0, 0]                                   # [T, n]
    err = (tau[:-1] - tau[-1]).norm(dim=-1)
    rates = err[2:12] / err[1:11]                  # before the error reaches round-off
    # Lip(g∘f − I) measured as the largest Jacobian norm over the region the iterates visit
    lo, hi = tau.min(0).values - 0.1, tau.max(0).values + 0.1
    pts = lo + (hi - lo) * torch.rand(400, 4, generator=torch.Generator().manual_seed(0),
                                      dtype=F64)
    def residual(h):
        return g[0](c.f(2, h[None, None]))[0, 0] - h
    lip = max(torch.linalg.matrix_norm(torch.func.jacrev(residual)(p), ord=2).item()
              for p in pts)
    assert lip < 1 and err[30] < 1e-8 * err[1]
    assert rates.max().item() <= lip, (rates.max().item(), lip)


def test_one_unit_euler_step_of_the_output_correction_is_dtp():
    net, x, y = problem((5, 6, 6, 6, 3), "tanh", seed=3)
    gen = torch.Generator().manual_seed(4)                           # mirrored decoders g_2..g_4
    g = [MirroredDecoder(torch.randn(1, 6, n, generator=gen, dtype=F64) / n ** 0.5,
                         torch.randn(1, 1, 6, generator=gen, dtype=F64) / 10, net.activation(l))
         for l, n in ((2, 6), (3, 6), (4, 3))]
    c = TargetPropagation(net, x, y, beta=0.1, decoders=g)
    sol = iterate(c, 4)
    L, h = net.L, c.h
    dtp = [None] * L
    dtp[L - 1] = c.output_target
    for l in range(L - 1, 0, -1):                                    # τ_{ℓ-1} = g(τ_ℓ) + h − g(h_ℓ)
        dec = g[l - 1]
        dtp[l - 1] = dec(dtp[l]) + h[l - 1] - dec(h[l])
    for k in range(1, L):                                            # layer L − k at step k + 1
        l = L - k
        assert torch.allclose(sol.ys[f"tau_{l}"][k + 1], dtp[l - 1], rtol=0, atol=1e-13), l
        assert (dtp[l - 1] - h[l - 1]).norm() > 1e-3, l


def test_online_rule_integrated_over_a_settle_is_dtp1():
    net, x, y = problem((4, 5, 5, 3), "tanh", seed=4, B=3)
    gen = torch.Generator().manual_seed(2)
    g = [MirroredDecoder(torch.randn(1, 5, 5, generator=gen, dtype=F64) / 5, None,
                         net.activation(2)),
         MirroredDecoder(torch.randn(1, 5, 3, generator=gen, dtype=F64) / 3, None,
                         net.activation(3))]
    for eta in (1.0, 2.5):
        c = TargetPropagation(net, x, y, beta=0.2, decoders=g, online_gamma=0.0, online_eta=eta)
        y0 = c.initial_state()
        sol = solve(c, y0, 0.0, 7.3, dt=0.1, steady_state=False)
        for l, (dW, db) in enumerate(c.dtp1_updates(sol.y1), start=1):
            assert torch.allclose(sol.y1[f"W_{l}"] - y0[f"W_{l}"], eta * dW, rtol=0, atol=1e-12)
            assert torch.allclose(sol.y1[f"b_{l}"] - y0[f"b_{l}"], eta * db, rtol=0, atol=1e-12)
    assert max(dW.abs().max().item() for dW, _ in c.dtp1_updates(sol.y1)) > 1e-3
    c = TargetPropagation(net, x, y, beta=0.2, decoders=g, online_gamma=0.0,
                          online_form="local_loss")
    sol = solve(c, c.initial_state(), 0.0, 7.3, dt=0.1, steady_state=False)
    for l, (dW, db) in enumerate(c.weight_updates(sol.y1, "local_loss"), start=1):
        assert torch.allclose(sol.y1[f"W_{l}"] - y0[f"W_{l}"], dW, rtol=0, atol=1e-12), l
        assert torch.allclose(sol.y1[f"b_{l}"] - y0[f"b_{l}"], db, rtol=0, atol=1e-12), l


def test_dtp1_moves_each_layer_exactly_onto_its_target():
    net, x, y = problem((4, 5, 5, 3), "tanh", seed=5)
    c = TargetPropagation(net, x, y, rule="ddtp_linear", beta=0.3)
    sol = solve(c, c.initial_state(), 0.0, 100.0, dt=0.1, atol=1e-14, rtol=1e-12)
    for l, ((dW, db), tau) in enumerate(zip(c.dtp1_updates(sol.y1), c.targets(sol.y1)), start=1):
        moved = c.rates[l - 1] @ (net.weights[l - 1] + dW).transpose(-1, -2) \
            + net.biases[l - 1] + db
        assert torch.allclose(moved, tau, rtol=0, atol=1e-13), l
        assert (tau - c.h[l - 1]).norm() > 1e-3


def test_exact_inverse_targets_approach_gauss_newton_as_beta_vanishes():
    net, x, y = problem((4, 4, 4, 4), "tanh", seed=0)
    angles = []
    for beta in (1e-2, 1e-3, 1e-4):
        c = TargetPropagation(net, x, y, beta=beta, decoders=inverse_decoders(net))
        sol = solve(c, c.initial_state(), 0.0, 200.0, dt=0.5, atol=1e-16, rtol=1e-13)
        assert bool(sol.converged.all())
        gn = gauss_newton_targets(net, x, y, beta)
        worst = 0.0
        for t, g_, h in zip(c.targets(sol.y1), gn, c.h):
            a, b = (t - h).flatten(), (g_ - h).flatten()
            cos = (a @ b / (a.norm() * b.norm())).clamp(-1, 1).item()
            worst = max(worst, math.degrees(math.acos(cos)))
        angles.append(worst)
    # the angle shrinks in proportion to β (first order): ×10 per decade
    assert all(8 < a / b < 12 for a, b in zip(angles, angles[1:])), angles
    assert angles[-1] < 0.5, angles


def test_ddtp_linear_with_damped_pseudo_inverse_feedback_gives_gauss_newton_targets():
    net, x, y = problem((4, 6, 5, 3), "tanh", seed=6)
    for damping in (1e-3, 0.5):
        c = TargetPropagation(net, x, y, rule="ddtp_linear", beta=0.2,
                              feedback="gauss_newton", damping=damping)
        sol = solve(c, c.initial_state(), 0.0, 100.0, dt=0.1, atol=1e-15, rtol=1e-13)
        gn = gauss_newton_targets(net, x, y, 0.2, damping=damping)
        tau = c.targets(sol.y1)
        for l, (t, g_) in enumerate(zip(tau[:-1], gn), start=1):       # hidden layers
            assert torch.allclose(t, g_, rtol=0, atol=1e-11), (damping, l)
            assert (t - c.h[l - 1]).norm() > 1e-3
        # the output target is the nudge itself (GN's layer-L target with λ = 0)
        assert torch.allclose(tau[-1], gauss_newton_targets(net, x, y, 0.2)[-1], rtol=0,
                              atol=1e-12)


def test_dfa_targets_use_fixed_random_feedback():
    net, x, y = problem((4, 6, 5, 3), "tanh", seed=7, B=2)
    c = TargetPropagation(net, x, y, rule="dfa", beta=0.2, feedback_seed=3)
    sol = solve(c, c.initial_state(), 0.0, 100.0, dt=0.1, atol=1e-15, rtol=1e-13)
    e = c.targets(sol.y1)[-1] - c.h[-1]
    for l in range(1, net.L):
        expected = c.h[l - 1] + e @ c.feedback[l - 1].transpose(-1, -2)
        assert torch.allclose(c.targets(sol.y1)[l - 1], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    (dict(rule="bengio"), r"rule: received 'bengio', expected one of \['iterated_output'"),
    (dict(), r"decoders: received None, expected 2 circuits.target_propagation.Decoder"),
    (dict(decoders=[None, None]), r"decoders: received list of 2, expected 2"),
    (dict(rule="ddtp_linear", feedback=[torch.zeros(1, 2, 2)]),
     r"feedback: received list of 1, expected 'gauss_newton', 'random' or 2 tensors"),
    (dict(rule="ddtp_linear", damping=0.0), r"damping: received 0\.0, expected a finite"),
    (dict(rule="dfa", beta=-1.0), r"beta: received -1\.0, expected values > 0"),
    (dict(rule="dfa", online_gamma=-0.1), r"online_gamma: received -0\.1, expected a number"),
    (dict(rule="dfa", online_gamma=0.0, online_form="sgd"),
     r"online_form: received 'sgd', expected 'dtp1' or 'local_loss'"),
    (dict(rule="dfa", online_gamma=0.0, online_eta=0.0), r"online_eta: received 0\.0"),
])
def test_target_propagation_rejects_bad_arguments(kwargs, match):
    net, x, y = problem((3, 4, 4, 2), "tanh")
    with pytest.raises(ValueError, match=match):
        TargetPropagation(net, x, y, **kwargs)


def test_inverse_decoders_need_square_layers_and_invertible_activations():
    with pytest.raises(ValueError, match=r"network.widths: layer 2 maps 4 → 3 units, expected "
                                         r"square layers"):
        inverse_decoders(ForwardNetwork([4, 4, 3], "tanh"))
    with pytest.raises(ValueError, match=r"activation: received 'relu', expected one of"):
        inverse_decoders(ForwardNetwork([4, 4, 4], "relu"))


def test_local_loss_update_is_the_gradient_of_the_layer_loss_with_the_target_fixed():
    net, x, y = problem((4, 5, 5, 3), "tanh", seed=8, B=3)
    c = TargetPropagation(net, x, y, rule="ddtp_linear", beta=0.3)
    s = solve(c, c.initial_state(), 0.0, 60.0, dt=0.1, atol=1e-14, rtol=1e-12).y1
    tau = [t.detach() for t in c.targets(s)]
    for l, (dW, db) in enumerate(c.weight_updates(s, "local_loss"), start=1):
        W = net.weights[l - 1].clone().requires_grad_(True)
        b = net.biases[l - 1].clone().requires_grad_(True)
        h = c.rates[l - 1] @ W.transpose(-1, -2) + b
        loss = 0.5 * ((tau[l - 1] - h) ** 2).sum() / h.shape[-2]
        gW, gb = torch.autograd.grad(loss, (W, b))
        assert torch.allclose(dW, -gW, rtol=0, atol=1e-14) and torch.allclose(db, -gb, rtol=0,
                                                                                 atol=1e-14)
        assert dW.abs().max() > 1e-4


def test_influence_scaling_gives_each_layer_the_output_change_squared_over_its_own():
    net, x, y = problem((4, 5, 5, 3), "tanh", seed=9, B=2)
    c = TargetPropagation(net, x, y, rule="ddtp_linear", beta=0.3)
    s = solve(c, c.initial_state(), 0.0, 60.0, dt=0.1, atol=1e-14, rtol=1e-12).y1
    d = [t - h for t, h in zip(c.targets(s), c.h)]
    dtp1, dtp = c.weight_updates(s, "dtp1"), c.weight_updates(s, "dtp")
    for l in range(1, net.L + 1):
        kappa = (d[-1] ** 2).sum(-1, keepdim=True) / (d[l - 1] ** 2).sum(-1, keepdim=True)
        r = c.rates[l - 1]
        sq = (r ** 2).sum(-1, keepdim=True) + 1
        expected = (kappa * d[l - 1]).transpose(-1, -2) @ (r / sq) / 2
        assert torch.allclose(dtp[l - 1][0], expected, rtol=1e-13, atol=0), l
    assert torch.allclose(dtp[-1][0], dtp1[-1][0], rtol=1e-14, atol=0)   # κ_L = 1


def test_influence_scaling_is_stable_where_squared_norms_under_and_overflow():
    from circuits.target_propagation import influence_scaled
    g = torch.Generator().manual_seed(0)
    d64 = [torch.randn(1, 3, n, generator=g, dtype=F64) * s
           for n, s in ((6, 1e-30), (5, 1e-25), (4, 1e-28))]          # tiny target changes
    exact = [dl * (d64[-1] ** 2).sum(-1, keepdim=True) / (dl ** 2).sum(-1, keepdim=True)
             for dl in d64]                                           # float64 has the range
    d32 = [t.float() for t in d64]
    naive = d32[0] * (d32[-1] ** 2).sum(-1, keepdim=True) / (d32[0] ** 2).sum(-1, keepdim=True)
    assert not torch.isfinite(naive).all()                            # 0/0 in float32
    for got, want in zip(influence_scaled(d32), exact):
        assert torch.allclose(got.double(), want, rtol=1e-5, atol=0)
    zero = influence_scaled([torch.zeros(1, 1, 3), torch.ones(1, 1, 2)])
    assert torch.equal(zero[0], torch.zeros(1, 1, 3))                 # no change, no update


def test_weight_updates_reject_an_unknown_form():
    net, x, y = problem((3, 4, 4, 2), "tanh")
    c = TargetPropagation(net, x, y, rule="dfa")
    with pytest.raises(ValueError, match=r"form: received 'dtp2', expected one of \['dtp1', "
                                         r"'dtp', 'local_loss'\]"):
        c.weight_updates(c.initial_state(), "dtp2")


def test_the_online_rule_refuses_the_input_correction():
    net, x, y = problem((3, 3, 3), "tanh", seed=1)
    with pytest.raises(ValueError, match=r"online_gamma: received a number for rule "
                                         r"'iterated_input', expected None"):
        TargetPropagation(net, x, y, rule="iterated_input", online_gamma=0.0,
                          decoders=inverse_decoders(net))
