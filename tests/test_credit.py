"""Closed-form credit baselines against autograd and linear algebra; the alignment monitor."""
import torch

from circuits import (DynamicInversion, ForwardNetwork, alignment, angle, backprop,
                      feedback_alignment, gauss_newton, pseudo_backprop, reference_credits,
                      weight_updates)
from solvers import solve

F64 = torch.float64


def setup(widths=(4, 7, 6, 3), S=2, B=5, activation="tanh"):
    net = ForwardNetwork(list(widths), activation=activation, replicas=S, seed=[3, 4][:S])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, widths[0], generator=g, dtype=F64)
    y = torch.randn(B, widths[-1], generator=g, dtype=F64)
    return net, x, y


def test_backprop_equals_autograd_for_squared_error():
    net, x, y = setup()
    ws = [w.clone().requires_grad_(True) for w in net.weights]
    probe = ForwardNetwork(net.widths, net.hidden_activation.name, weights=ws,
                           biases=net.biases)
    loss = 0.5 * ((probe.forward(x).r[-1] - y) ** 2).sum()
    grads = torch.autograd.grad(loss, ws)
    fwd = net.forward(x)
    updates = weight_updates(fwd, backprop(net, fwd, y - fwd.r[-1]))
    for g, u in zip(grads, updates):
        assert torch.allclose(u, -g, rtol=1e-12, atol=1e-14)


def test_feedback_alignment_with_transposed_feedback_is_backprop():
    net, x, y = setup()
    fwd = net.forward(x)
    d = y - fwd.r[-1]
    fa = feedback_alignment(net, fwd, d, [w.transpose(-1, -2) for w in net.weights[1:]])
    for a, b in zip(fa, backprop(net, fwd, d)):
        assert torch.allclose(a, b, rtol=1e-13)


def test_gauss_newton_is_minimum_norm_inverse_of_output_jacobian():
    net, x, y = setup(B=1)
    fwd = net.forward(x)
    d = y - fwd.r[-1]
    gn = gauss_newton(net, fwd, d, damping=1e-12)
    J1 = net.output_jacobians(fwd)[0]                      # ∂a_L/∂a_1, [S, 1, 3, 7]
    for s in range(2):
        expected = torch.linalg.pinv(J1[s, 0]) @ d[s, 0]
        assert torch.allclose(gn[0][s, 0], expected, rtol=1e-6)
    # J̄_1 is right: a finite difference of a_L with respect to a_1
    eps = 1e-6
    a1 = fwd.a[0].clone()
    a1[0, 0, 2] += eps
    r = net.hidden_activation.phi(a1)
    for l in range(2, 4):
        a = r @ net.weights[l - 1].transpose(-1, -2) + net.biases[l - 1]
        r = net.activation(l).phi(a)
    fd = (a[0, 0] - fwd.a[-1][0, 0]) / eps
    assert torch.allclose(fd, J1[0, 0, :, 2], rtol=1e-5)
    # heavy damping gives the gradient direction
    big = gauss_newton(net, fwd, d, damping=1e8)
    assert angle(big[0], backprop(net, fwd, d)[0], dims=2).max() < 1e-3


def test_pseudo_backprop_on_square_linear_net_inverts_exactly():
    net, x, y = setup(widths=(4, 4, 4, 4), activation="linear")
    fwd = net.forward(x)
    d = y - fwd.r[-1]
    pbp = pseudo_backprop(net, fwd, d)
    assert torch.allclose(pbp[0] @ (net.weights[2] @ net.weights[1]).transpose(-1, -2), d,
                          atol=1e-10)


def test_alignment_monitor_over_a_settle():
    """DI with a tiny leak ends aligned with pseudo-backprop (0°) and, in a linear square net,
    with Gauss-Newton too; the monitor works on whole trajectories [T, S, B, n]."""
    net, x, y = setup(widths=(4, 5, 5, 3), S=1, B=3, activation="linear")
    c = DynamicInversion(net, x, y, alpha=1e-8)
    sol = solve(c, c.initial_state(), 0.0, 3000.0, dt=0.2, method="exp_euler", save_every=50,
                atol=1e-13, rtol=1e-11)
    refs = reference_credits(net, c.forward, c.delta_L, damping=1e-10)
    angles = alignment(c.forward, c.credits(sol.ys), refs)
    assert angles["pseudo_backprop"].shape == (len(sol.ts), 1)
    assert angles["pseudo_backprop"][-1].item() < 1e-3
    assert angles["pseudo_backprop"][1].item() > 1.0      # not aligned while it settles
    assert angle(torch.ones(2, 3), torch.ones(2, 3)).abs().max() < 1e-5
    assert abs(angle(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), dims=1).item()
               - 90.0) < 1e-12


def test_joint_gauss_newton_is_what_feedback_control_delivers():
    """DFC with Q = Jᵀ (linear output) and a small leak delivers Q u* = joint GN credit."""
    from circuits import DeepFeedbackControl
    net, x, y = setup(S=1, B=1)
    c = DeepFeedbackControl(net, x, y, nudge=1e-4, alpha=1e-6)
    star = c.steady_state()
    delivered = [star["u_total"] @ q.transpose(-1, -2) for q in c.feedback]
    joint = gauss_newton(net, c.forward, c.delta_L, damping=1e-6, joint=True)
    assert angle(delivered, joint).item() < 1e-6
