"""Target propagation in both conventions (SPEC §5, "Convention"), float64.

``convention="pre"`` (Bengio 2020): activities are pre-activations, ``h_ℓ = W_ℓ φ(h_{ℓ-1}) + b``.
``convention="post"`` (Meulemans et al. 2020: DTP, DRL, DDTP-linear): activities are rates,
``h_ℓ = φ(W_ℓ h_{ℓ-1} + b)``. Every closed form here is rebuilt in the test from the weights."""
import pytest
import torch

from circuits import ForwardNetwork
from circuits.target_propagation import (FeedbackDecoder, MirroredDecoder, PostInverseDecoder,
                                         TargetPropagation, coordinate_noise,
                                         difference_reconstruction_feedback,
                                         difference_reconstruction_loss, gauss_newton_targets,
                                         inverse_decoders, post_output_jacobians)
from solvers import solve

F64 = torch.float64


def network(widths, activation="tanh", seed=0, output_activation="linear", bias_scale=0.1):
    """A network with small random biases (so the difference terms are not trivial)."""
    base = ForwardNetwork(list(widths), activation, output_activation, seed=seed)
    g = torch.Generator().manual_seed(50 + seed)
    biases = [bias_scale * torch.randn(1, 1, n, generator=g, dtype=F64) for n in widths[1:]]
    return ForwardNetwork(list(widths), activation, output_activation, weights=base.weights,
                          biases=biases)


def data(widths, seed=0, B=1):
    g = torch.Generator().manual_seed(10 + seed)
    return torch.randn(B, widths[0], generator=g, dtype=F64), \
        0.5 * torch.randn(B, widths[-1], generator=g, dtype=F64)


def settle(c, t1=120.0, method="euler", dt=0.1):
    """The state after ``t1`` (steady states do not depend on the stepping method)."""
    sol = solve(c, c.initial_state(), 0.0, t1, dt=dt, method=method, atol=1e-15, rtol=1e-13)
    return sol.y1


def rates(net, x):
    """``[x, r_1, ..., r_L]`` from the weights, for one replica (S = 1)."""
    out = [x]
    for l, (W, b) in enumerate(zip(net.weights, net.biases), start=1):
        out.append(net.activation(l).phi(out[-1] @ W[0].T + b[0]))
    return out


def post_jacobian(net, x_b, l):
    """``∂r_L/∂r_ℓ`` for one example by autograd through ``φ(W h + b)``."""
    r = rates(net, x_b[None])

    def up(h):
        for k in range(l + 1, net.L + 1):
            h = net.activation(k).phi(h @ net.weights[k - 1][0].T + net.biases[k - 1][0])
        return h[0]
    return torch.autograd.functional.jacobian(up, r[l])[:, 0]


# -- the two conventions agree for linear networks -------------------------------------------

def linear_decoders(net, seed=3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for l in range(2, net.L + 1):
        V = 0.5 * torch.randn(1, net.widths[l - 1], net.widths[l], generator=g, dtype=F64)
        c = 0.1 * torch.randn(1, 1, net.widths[l - 1], generator=g, dtype=F64)
        out.append((V, c))
    return out


@pytest.mark.parametrize("rule", ["dtp", "tp", "iterated_output", "ddtp_linear", "dfa"])
def test_pre_and_post_agree_exactly_for_linear_networks(rule):
    widths = (4, 5, 5, 3) if rule != "iterated_output" else (3, 3, 3, 3)
    net = network(widths, "linear", seed=1)
    x, y = data(widths, seed=1, B=2)
    kwargs = dict(rule=rule, beta=0.2, tau=1.0)
    if rule in ("ddtp_linear", "dfa"):
        pre = TargetPropagation(net, x, y, **kwargs, feedback_seed=4, damping=1e-3)
        post = TargetPropagation(net, x, y, **kwargs, feedback_seed=4, damping=1e-3,
                                 convention="post")
        assert all(torch.allclose(a, b, rtol=0, atol=1e-13)
                   for a, b in zip(pre.feedback, post.feedback))
    elif rule == "iterated_output":
        pre = TargetPropagation(net, x, y, **kwargs, decoders=inverse_decoders(net, 0.2, seed=2))
        post = TargetPropagation(net, x, y, **kwargs, convention="post",
                                 decoders=inverse_decoders(net, 0.2, seed=2, convention="post"))
    else:
        Vc = linear_decoders(net)
        act = net.activation(1)
        pre = TargetPropagation(net, x, y, **kwargs,
                                decoders=[MirroredDecoder(V, c, act) for V, c in Vc])
        post = TargetPropagation(net, x, y, **kwargs, convention="post",
                                 decoders=[FeedbackDecoder(V, c, "linear") for V, c in Vc])
    assert pre.convention == "pre" and post.convention == "post"
    for a, b in zip(pre.h, post.h):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)
    ya, yb = settle(pre), settle(post)
    sa, sb = pre.steady_state(), post.steady_state()
    for l in range(1, net.L + 1):
        assert torch.allclose(ya[f"tau_{l}"], yb[f"tau_{l}"], rtol=0, atol=1e-11), l
        assert torch.allclose(sa[f"tau_{l}"], sb[f"tau_{l}"], rtol=0, atol=1e-12), l
        assert torch.allclose(yb[f"tau_{l}"], sb[f"tau_{l}"], rtol=0, atol=1e-10), l
    for form in ("dtp1", "dtp", "local_loss"):
        for (dWa, dba), (dWb, dbb) in zip(pre.weight_updates(ya, form),
                                          post.weight_updates(ya, form)):
            assert torch.allclose(dWa, dWb, rtol=0, atol=1e-12), form
            assert torch.allclose(dba, dbb, rtol=0, atol=1e-12), form
    ga, gb = pre.gauss_newton_targets(0.0), post.gauss_newton_targets(0.0)
    assert all(torch.allclose(ga[k], gb[k], rtol=0, atol=1e-12) for k in ga)
    ta, tb = pre.target_angles(ya, damping=0.0), post.target_angles(ya, damping=0.0)
    assert all(torch.allclose(ta[k], tb[k], atol=1e-6) for k in ta)


def test_gauss_newton_targets_agree_across_conventions_for_linear_networks():
    net = network((5, 3, 2, 6), "linear", seed=2)
    x, y = data((5, 3, 2, 6), seed=2, B=3)
    for damping in (0.0, 1e-2):
        pre = gauss_newton_targets(net, x, y, 0.1, damping)
        post = gauss_newton_targets(net, x, y, 0.1, damping, convention="post")
        assert all(torch.allclose(a, b, rtol=0, atol=1e-13) for a, b in zip(pre, post))


# -- Gauss-Newton targets on post-activations ------------------------------------------------

@pytest.mark.parametrize("widths", [(3, 2, 4), (5, 3, 2, 6), (4, 6, 5, 3)])
def test_post_gauss_newton_targets_are_the_pseudo_inverse_of_the_rate_jacobian(widths):
    net = network(widths, "tanh", seed=3, output_activation="tanh")
    x, y = data(widths, seed=3, B=2)
    beta = 0.3
    targets = gauss_newton_targets(net, x, y, beta, convention="post")
    r = rates(net, x)
    Js = post_output_jacobians(net, net.forward(x))
    e = y - r[-1]                                      # −∂ℒ/∂r_L for ½‖y − r_L‖²
    for b in range(x.shape[0]):
        for l in range(1, net.L):
            J = post_jacobian(net, x[b], l)
            assert torch.allclose(Js[l - 1][0, b], J, rtol=0, atol=1e-13)
            ref = beta * torch.linalg.pinv(J) @ e[b]
            assert torch.allclose(targets[l - 1][0, b] - r[l][b], ref, rtol=1e-11, atol=1e-13)
    assert torch.allclose(targets[-1][0], r[-1] + beta * e, atol=1e-14)
    c = TargetPropagation(net, x, y, rule="ddtp_linear", beta=beta, convention="post")
    star = c.gauss_newton_targets(0.0)
    assert all(torch.allclose(star[f"tau_{l}"], targets[l - 1], rtol=0, atol=1e-14)
               for l in range(1, net.L + 1))


def test_post_ddtp_linear_with_gauss_newton_feedback_settles_on_gauss_newton_targets():
    """Q_ℓ = J̄_ℓᵀ(J̄_ℓJ̄_ℓᵀ + λI)⁻¹ of the rates (one example): τ_ℓ − h_ℓ = Q_ℓ(τ_L − h_L) =
    β J̄⁺_λ e_L, the GN target change, at every β (it is linear in the output nudge)."""
    widths = (4, 6, 5, 3)
    net = network(widths, "tanh", seed=4, output_activation="tanh")
    x, y = data(widths, seed=4)
    for damping in (1e-6, 0.5):
        c = TargetPropagation(net, x, y, rule="ddtp_linear", beta=0.2, damping=damping,
                              feedback="gauss_newton", convention="post")
        r = rates(net, x)
        for l in range(1, net.L):
            J = post_jacobian(net, x[0], l)
            Q = J.T @ torch.linalg.inv(J @ J.T + damping * torch.eye(3, dtype=F64))
            assert torch.allclose(c.feedback[l - 1][0], Q, rtol=0, atol=1e-10)
        y1 = settle(c)
        gn = gauss_newton_targets(net, x, y, 0.2, damping, convention="post")
        for l in range(1, net.L):
            assert torch.allclose(y1[f"tau_{l}"], gn[l - 1], rtol=0, atol=1e-11), (damping, l)
            assert torch.allclose(c.steady_state()[f"tau_{l}"], gn[l - 1], rtol=0, atol=1e-12)
            assert (y1[f"tau_{l}"][0] - r[l]).norm() > 1e-3


# -- DTP on post-activations: exact inverses -------------------------------------------------

def post_inverse(net, l, t):
    """``f_ℓ⁻¹(t) = W_ℓ⁻¹(φ_ℓ⁻¹(t) − b_ℓ)`` (post-activation layer), S = 1."""
    inv = {"tanh": torch.atanh, "linear": lambda v: v}[net.activation(l).name]
    return torch.linalg.solve(net.weights[l - 1][0], (inv(t) - net.biases[l - 1][0]).T).T


@pytest.mark.parametrize("rule", ["dtp", "iterated_output", "tp"])
def test_post_dtp_with_exact_inverses_settles_on_the_composed_inverses(rule):
    """DTP with g_ℓ = f_ℓ⁻¹: τ_{ℓ-1} = f⁻¹(τ_ℓ) + h_{ℓ-1} − f⁻¹(h_ℓ) = f⁻¹(τ_ℓ), so the targets
    are τ_ℓ = f_{ℓ+1}⁻¹ ∘ … ∘ f_L⁻¹(τ_L) (also TP's and the iterated inverse's)."""
    widths = (4, 4, 4, 4)
    net = network(widths, "tanh", seed=5, output_activation="tanh")
    x, y = data(widths, seed=5, B=2)
    beta = 0.1
    c = TargetPropagation(net, x, y, rule=rule, beta=beta, convention="post",
                          decoders=inverse_decoders(net, convention="post"))
    assert all(isinstance(g, PostInverseDecoder) for g in c.decoders)
    r = rates(net, x)
    expected = [r[-1] + beta * (y - r[-1])]
    for l in range(net.L, 1, -1):
        expected.insert(0, post_inverse(net, l, expected[0]))
    y1 = settle(c, 60.0)
    closed = c.steady_state()
    exact = c.exact_inverse_targets()
    for l in range(1, net.L + 1):
        assert torch.allclose(y1[f"tau_{l}"][0], expected[l - 1], rtol=0, atol=1e-11), l
        assert torch.allclose(closed[f"tau_{l}"][0], expected[l - 1], rtol=0, atol=1e-12), l
        assert torch.allclose(exact[f"tau_{l}"][0], expected[l - 1], rtol=0, atol=1e-12), l
    # each target is reached: f_ℓ(τ_{ℓ-1}) = τ_ℓ
    for l in range(2, net.L + 1):
        assert torch.allclose(c.f(l, closed[f"tau_{l - 1}"]), closed[f"tau_{l}"], atol=1e-12)


def test_post_iterated_input_reaches_the_exact_inverse():
    widths = (3, 3, 3)
    net = network(widths, "tanh", seed=6)
    x, y = data(widths, seed=6)
    c = TargetPropagation(net, x, y, rule="iterated_input", beta=0.1, convention="post",
                          decoders=inverse_decoders(net, 0.1, seed=1, convention="post"))
    y1 = settle(c, 200.0)
    lim = c.iterated_limit()
    assert torch.allclose(y1["u_2"], lim["u_2"], rtol=0, atol=1e-10)
    assert torch.allclose(c.targets(y1)[0], c.exact_inverse_targets()["tau_1"], atol=1e-10)


def test_exact_inverse_targets_are_gauss_newton_to_first_order_in_beta_post():
    """‖(τ_ℓ^exact − h_ℓ) − (τ_ℓ^GN − h_ℓ)‖ = O(β²) on an invertible tanh net (post)."""
    widths = (4, 4, 4, 4)
    net = network(widths, "tanh", seed=7)
    x, y = data(widths, seed=7)
    errs = []
    for beta in (1e-2, 1e-3, 1e-4):
        c = TargetPropagation(net, x, y, rule="dtp", beta=beta, convention="post",
                              decoders=inverse_decoders(net, convention="post"))
        exact, gn = c.exact_inverse_targets(), c.gauss_newton_targets(0.0)
        errs.append(max(((exact[f"tau_{l}"] - gn[f"tau_{l}"]).norm()
                         / (gn[f"tau_{l}"] - c.h[l - 1]).norm()).item() for l in (1, 2)))
    assert all(8 < a / b < 12 for a, b in zip(errs, errs[1:])), errs     # relative error ∝ β


# -- DDTP-linear and its DRL feedback --------------------------------------------------------

def test_drl_feedback_tends_to_the_gauss_newton_matrix_as_sigma_vanishes():
    widths = (4, 6, 5, 3)
    net = network(widths, "tanh", seed=8, output_activation="tanh")
    x, _ = data(widths, seed=8)
    Js = [post_jacobian(net, x[0], l) for l in (1, 2)]
    for damping in (0.0, 1e-2):
        errs = []
        for sigma in (1e-2, 1e-3):
            Q = difference_reconstruction_feedback(net, x, sigma, damping)
            errs.append(max((q[0] - J.T @ torch.linalg.inv(
                J @ J.T + damping * torch.eye(3, dtype=F64))).norm().item()
                for q, J in zip(Q, Js)))
        assert errs[-1] < 1e-5 and errs[0] / errs[1] > 50, (damping, errs)  # O(σ²): antithetic


def test_drl_closed_form_minimises_the_difference_reconstruction_loss():
    widths = (4, 6, 5, 3)
    net = network(widths, "tanh", seed=9, output_activation="tanh")
    x, _ = data(widths, seed=9, B=2)
    sigma = 0.05
    Q = difference_reconstruction_feedback(net, x, sigma)
    for k in (1, 2):
        q = Q[k - 1].clone().requires_grad_(True)
        fb = [q if i == k - 1 else Q[i] for i in range(2)]
        loss = difference_reconstruction_loss(net, x, fb, k,
                                              coordinate_noise(widths[k], sigma), sigma)
        grad, = torch.autograd.grad(loss.sum(), q)
        assert grad.abs().max() < 1e-10, (k, grad.abs().max())
        g = torch.Generator().manual_seed(k)
        other = [Q[i] + (0.01 * torch.randn(Q[i].shape, generator=g, dtype=F64)
                         if i == k - 1 else 0) for i in range(2)]
        worse = difference_reconstruction_loss(net, x, other, k,
                                               coordinate_noise(widths[k], sigma), sigma)
        assert (worse > loss.detach()).all()


def test_drl_of_exact_inverse_decoders_is_zero_and_of_others_positive():
    widths = (4, 4, 4, 4)
    net = network(widths, "tanh", seed=10)
    x, _ = data(widths, seed=10, B=2)
    g = torch.Generator().manual_seed(0)
    for k in (1, 2):
        noise = 0.01 * torch.randn(8, 2, 4, generator=g, dtype=F64)
        exact = difference_reconstruction_loss(net, x, inverse_decoders(net, convention="post"),
                                               k, noise, 0.01)
        assert exact.abs().max() < 1e-18, exact
        rough = difference_reconstruction_loss(
            net, x, inverse_decoders(net, 0.3, seed=2, convention="post"), k, noise, 0.01)
        assert (rough > 1e-4).all()


def test_ddtp_linear_with_drl_feedback_gives_gauss_newton_target_changes():
    widths = (4, 6, 5, 3)
    net = network(widths, "tanh", seed=11)
    x, y = data(widths, seed=11)
    Q = difference_reconstruction_feedback(net, x, 1e-4)
    c = TargetPropagation(net, x, y, rule="ddtp_linear", beta=0.05, feedback=Q,
                          convention="post")
    y1 = settle(c)
    gn = c.gauss_newton_targets(0.0)
    for l in (1, 2):
        d, ref = y1[f"tau_{l}"] - c.h[l - 1], gn[f"tau_{l}"] - c.h[l - 1]
        assert ((d - ref).norm() / ref.norm()).item() < 1e-6


# -- weight updates and online learning in the post-activation convention --------------------

def test_post_weight_updates_match_the_closed_forms_for_one_layer():
    """Layer 1 of a tanh net with some target τ_1: ``local_loss`` is −∂/∂(W, b) of
    ½ mean_B ‖τ_1 − φ(W x + b)‖² (autograd); ``dtp1`` moves h_1 onto τ_1 exactly (B = 1)."""
    widths = (3, 4, 2)
    net = network(widths, "tanh", seed=12)
    for B in (1, 3):
        x, y = data(widths, seed=12, B=B)
        c = TargetPropagation(net, x, y, rule="ddtp_linear", beta=0.3, convention="post",
                              feedback_seed=1)
        y1 = c.steady_state()
        tau = y1["tau_1"][0]
        W = net.weights[0][0].clone().requires_grad_(True)
        b = net.biases[0][0].clone().requires_grad_(True)
        loss = 0.5 * ((tau - torch.tanh(x @ W.T + b)) ** 2).sum(-1).mean()
        gW, gb = torch.autograd.grad(loss, (W, b))
        dW, db = c.weight_updates(y1, "local_loss")[0]
        assert torch.allclose(dW[0], -gW, rtol=0, atol=1e-14)
        assert torch.allclose(db[0, 0], -gb, rtol=0, atol=1e-14)
        if B == 1:
            dW, db = c.dtp1_updates(y1)[0]
            moved = torch.tanh(x @ (net.weights[0][0] + dW[0]).T + net.biases[0][0] + db[0])
            assert torch.allclose(moved, tau, rtol=0, atol=1e-13)
            assert (tau - c.h[0][0]).norm() > 1e-3


@pytest.mark.parametrize("rule,form", [("ddtp_linear", "dtp1"), ("ddtp_linear", "local_loss"),
                                       ("dtp", "dtp1")])
def test_post_online_rule_integrates_to_the_weight_update(rule, form):
    widths = (3, 4, 4, 2)
    net = network(widths, "tanh", seed=13)
    x, y = data(widths, seed=13, B=2)
    kwargs = dict(rule=rule, beta=0.2, convention="post", online_gamma=0.0, online_eta=0.5,
                  online_form=form)
    if rule == "dtp":
        g = torch.Generator().manual_seed(0)
        kwargs["decoders"] = [FeedbackDecoder(0.5 * torch.randn(1, widths[l - 1], widths[l],
                                                                generator=g, dtype=F64),
                                              None, "tanh") for l in (2, 3)]
    else:
        kwargs["feedback_seed"] = 2
    c = TargetPropagation(net, x, y, **kwargs)
    # the weights integrate φ⁻¹(τ) along the path: RK4, fine enough for the integral's error
    y1 = settle(c, 40.0, method="rk4", dt=0.01)
    for l, (dW, db) in enumerate(c.weight_updates(y1, form), start=1):
        assert torch.allclose(y1[f"W_{l}"] - net.weights[l - 1], 0.5 * dW, rtol=0,
                              atol=1e-10), l
        assert torch.allclose(y1[f"b_{l}"] - net.biases[l - 1], 0.5 * db, rtol=0,
                              atol=1e-10), l
    closed = c.steady_state()
    assert all(torch.allclose(y1[k], closed[k], rtol=0, atol=1e-10) for k in closed)


# -- arguments -------------------------------------------------------------------------------

def test_convention_arguments_are_checked():
    net = network((3, 4, 2), "relu", seed=0)
    x, y = data((3, 4, 2))
    with pytest.raises(ValueError, match=r"convention: received 'rates', expected one of "
                                         r"\['pre', 'post'\]"):
        TargetPropagation(net, x, y, rule="dfa", convention="rates")
    with pytest.raises(ValueError, match=r"convention: received 'x'"):
        gauss_newton_targets(net, x, y, 0.1, convention="x")
    with pytest.raises(ValueError, match=r"online_form: received 'dtp1' with convention 'post' "
                                         r"and activations \['linear', 'relu'\]"):
        TargetPropagation(net, x, y, rule="dfa", convention="post", online_gamma=0.0)
    c = TargetPropagation(net, x, y, rule="dfa", convention="post")
    with pytest.raises(ValueError, match=r"form: received 'dtp1' with convention 'post' and "
                                         r"layer 1's activation 'relu'"):
        c.weight_updates(c.steady_state(), "dtp1")
    assert len(c.weight_updates(c.steady_state(), "local_loss")) == 2
    with pytest.raises(ValueError, match=r"layer: received 2, expected a hidden layer 1\.\.1"):
        difference_reconstruction_loss(net, x, c.feedback, 2, torch.zeros(1, 1, 4), 0.1)
    with pytest.raises(ValueError, match=r"noise: received torch.Size\(\[1, 1, 3\]\), expected"):
        difference_reconstruction_loss(net, x, c.feedback, 1, torch.zeros(1, 1, 3), 0.1)
    with pytest.raises(ValueError, match=r"sigma: received 0\.0, expected a finite number > 0"):
        difference_reconstruction_feedback(net, x, 0.0)
    assert TargetPropagation(net, x, y, rule="dfa").convention == "pre"        # the default
