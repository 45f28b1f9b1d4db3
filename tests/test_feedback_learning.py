"""Feedback learning as dynamics (SPEC §4, §5): the auto-encoder rule for decoders and the
difference reconstruction rule for direct feedback settle onto their closed-form fixed points
(float64)."""
import pytest
import torch

from circuits import ForwardNetwork
from circuits.feedback_learning import DifferenceReconstruction, ReconstructionLearning
from circuits.target_propagation import MirroredDecoder, TargetPropagation, gauss_newton_targets
from solvers import solve

F64 = torch.float64


def data(B, n, seed=0):
    return torch.randn(B, n, generator=torch.Generator().manual_seed(seed), dtype=F64)


def mirrored(net, seed=1, scale=0.1):
    gen = torch.Generator().manual_seed(seed)
    return [MirroredDecoder(scale * torch.randn(1, net.widths[l - 1], net.widths[l],
                                                generator=gen, dtype=F64),
                            torch.zeros(1, 1, net.widths[l - 1], dtype=F64), net.activation(l))
            for l in range(2, net.L + 1)]


def settle(c, t1, dt):
    sol = solve(c, c.initial_state(), 0.0, t1, dt=dt, method="rk4", atol=1e-12, rtol=1e-12)
    assert bool(sol.converged.all()), sol.status
    return sol.y1


def test_reconstruction_rule_settles_on_weighted_least_squares_decoders():
    net = ForwardNetwork([3, 5, 4, 2], "tanh", seed=2, init="orthogonal", scale=1.5)
    x = data(40, 3)
    c = ReconstructionLearning(net, x, mirrored(net), eta=10.0, noise=0.1, seed=4)
    y = settle(c, t1=300.0, dt=0.02)
    fwd = net.forward(x)
    gen = torch.Generator().manual_seed(4)
    for l in (2, 3):                        # the rule's fixed point, recomputed by lstsq
        h = fwd.a[l - 2] + 0.1 * torch.randn(fwd.a[l - 2].shape, generator=gen, dtype=F64)
        r = torch.tanh(net.layer(l, h)) if l < net.L else net.layer(l, h)
        R = torch.cat([r, torch.ones_like(r[..., :1])], -1)
        w = r.norm(dim=-1, keepdim=True) ** -0.5            # √(1/‖r‖): weighted least squares
        theta = torch.linalg.lstsq(R[0] * w[0], h[0] * w[0]).solution.T
        assert torch.allclose(y[f"theta_{l}"][0], theta, rtol=0, atol=1e-9), l
        assert (y[f"theta_{l}"] - c.initial_state()[f"theta_{l}"]).abs().max() > 0.1
    # the flow's own closed form agrees
    for k, v in c.fixed_point().items():
        assert torch.allclose(y[k], v, rtol=0, atol=1e-9)


def test_reconstruction_rule_learns_the_exact_inverse_of_a_linear_layer():
    net = ForwardNetwork([4, 4, 4], "linear", seed=3, init="orthogonal")
    x = data(30, 4, seed=1)
    c = ReconstructionLearning(net, x, mirrored(net, scale=0.0), eta=5.0)
    g = c.decoders(settle(c, t1=300.0, dt=0.05))[0]
    W = net.weights[1][0]
    assert torch.allclose(g.V[0], torch.linalg.inv(W), rtol=0, atol=1e-9)
    h1 = net.forward(x).a[0]
    assert torch.allclose(g(net.layer(2, h1)), h1, rtol=0, atol=1e-9)      # g ∘ f = I


def test_drl_fixed_point_is_the_damped_pseudo_inverse_on_a_linear_network():
    net = ForwardNetwork([3, 6, 5, 2], "linear", seed=5, init="orthogonal")
    x = data(4, 3, seed=2)
    for damping in (1e-3, 0.3):
        c = DifferenceReconstruction(net, x, sigma=0.5, damping=damping, eta=3.0, seed=1)
        y = settle(c, t1=100.0, dt=0.1)
        Js = net.output_jacobians(net.forward(x))[:-1]                 # linear: same for all b
        eye = torch.eye(2, dtype=F64)
        for l, J in enumerate(Js, start=1):
            J = J[0, 0]
            expected = J.T @ torch.linalg.inv(J @ J.T + damping * eye)
            assert torch.allclose(y[f"Q_{l}"][0], expected, rtol=0, atol=1e-9), (damping, l)


def test_drl_feedback_makes_ddtp_linear_targets_gauss_newton_on_a_tanh_network():
    net = ForwardNetwork([4, 6, 5, 3], "tanh", seed=6)
    x, t = data(1, 4, seed=3), data(1, 3, seed=4)
    errs = []
    for sigma in (1e-2, 1e-3):
        c = DifferenceReconstruction(net, x, sigma=sigma, damping=1e-2, eta=3.0, seed=2)
        Q = c.feedback(settle(c, t1=3000.0, dt=0.1))
        tp = TargetPropagation(net, x, t, rule="ddtp_linear", beta=0.1, feedback=Q)
        tau = tp.targets(solve(tp, tp.initial_state(), 0.0, 60.0, dt=0.1, atol=1e-14,
                               rtol=1e-12).y1)
        gn = gauss_newton_targets(net, x, t, 0.1, damping=1e-2)
        errs.append(max(((a - g) .norm() / (g - h).norm()).item()
                        for a, g, h in zip(tau[:-1], gn, tp.h)))
    # antithetic noise: the bias of the linearisation is second order in σ
    assert errs[1] < 1e-5 and errs[0] / errs[1] > 50, errs


def test_gaussian_noise_drl_approaches_the_pseudo_inverse_with_many_samples():
    net = ForwardNetwork([3, 4, 2], "linear", seed=7)
    x = data(2, 3)
    c = DifferenceReconstruction(net, x, sigma=0.1, damping=1e-2, noise="gaussian",
                                 samples=4000, seed=3)
    Q = c.fixed_point()["Q_1"][0]
    J = net.weights[1][0]
    expected = J.T @ torch.linalg.inv(J @ J.T + 1e-2 * torch.eye(2, dtype=F64))
    rel = ((Q - expected).norm() / expected.norm()).item()
    assert 1e-4 < rel < 0.05, rel                     # sampling error ~ 1/√(K B), not zero


@pytest.mark.parametrize("make,match", [
    (lambda net, x: ReconstructionLearning(net, x, mirrored(net), eta=0.0),
     r"eta: received 0\.0, expected"),
    (lambda net, x: ReconstructionLearning(net, x, mirrored(net)[:1]),
     r"decoders: received list of 1, expected 2 MirroredDecoder"),
    (lambda net, x: ReconstructionLearning(net, x, mirrored(net), noise=-1.0),
     r"noise: received -1\.0, expected a finite number ≥ 0"),
    (lambda net, x: DifferenceReconstruction(net, x, sigma=0.0), r"sigma: received 0\.0"),
    (lambda net, x: DifferenceReconstruction(net, x, noise="uniform"),
     r"noise: received 'uniform', expected one of \['gaussian', 'orthogonal'\]"),
    (lambda net, x: DifferenceReconstruction(net, x, samples=0),
     r"samples: received 0, expected an integer ≥ 1"),
    (lambda net, x: DifferenceReconstruction(net, x, feedback=[torch.zeros(1, 4, 4)]),
     r"feedback: received list of 1, expected None or 2 tensors"),
])
def test_feedback_learning_rejects_bad_arguments(make, match):
    net = ForwardNetwork([3, 4, 4, 2], "tanh")
    with pytest.raises(ValueError, match=match):
        make(net, data(5, 3))
