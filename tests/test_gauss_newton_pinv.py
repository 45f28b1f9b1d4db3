"""Gauss-Newton targets at λ = 0 are the Moore–Penrose pseudo-inverse (SPEC §5), float64.

The references are built here, independently of the code under test: ``torch.linalg.pinv`` of
the Jacobian (formed by autograd or from the weights), or an SVD."""
import pytest
import torch

from circuits import ForwardNetwork, TargetPropagation, gauss_newton
from circuits.credit import damped_pseudo_inverse, gauss_newton_step
from circuits.target_propagation import gauss_newton_targets

from problems import random_problem

F64 = torch.float64


def problem(widths, activation="tanh", seed=0, B=3):
    return random_problem(widths, activation, seed, B, data_offset=100)


def autograd_jacobian(net, x_b, l):
    """``∂a_L/∂a_ℓ`` for one example by autograd through the network's own layers."""
    a_l = net.forward(x_b[None]).a[l - 1][0, 0]
    return torch.autograd.functional.jacobian(lambda h: net.propagate(h[None, None], l)[0, 0],
                                              a_l)


def test_the_bottleneck_case_of_the_issue():
    """[3, 2, 4] linear, seed 0, x and y drawn from seed 0: the undamped solve of the singular
    J Jᵀ gave [-4, 4] (or [-4, 2], depending on rounding); the pseudo-inverse is [-2.85, 2.79]."""
    net = ForwardNetwork([3, 2, 4], "linear", seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 3, generator=g, dtype=F64), torch.randn(1, 4, generator=g, dtype=F64)
    h = net.forward(x).a[0]
    step = gauss_newton_targets(net, x, y, 1.0)[0] - h
    assert step[0, 0].tolist() == pytest.approx([-2.85120, 2.78558], abs=1e-5)
    J = net.weights[1][0]
    ref = torch.linalg.pinv(J) @ (y[0] - net.forward(x).r[-1][0, 0])
    assert torch.allclose(step[0, 0], ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("widths,activation", [((3, 2, 4), "linear"), ((3, 2, 4), "tanh"),
                                               ((5, 3, 2, 6), "tanh"), ((5, 3, 2, 6), "linear"),
                                               ((4, 6, 5, 3), "tanh")])
def test_undamped_targets_are_the_pseudo_inverse_step(widths, activation):
    net, x, y = problem(widths, activation, seed=1)
    beta = 0.3
    targets = gauss_newton_targets(net, x, y, beta)
    fwd = net.forward(x)
    for b in range(x.shape[0]):
        e = y[b] - fwd.r[-1][0, b]                      # −∂ℒ/∂a_L (linear output)
        for l in range(1, net.L):
            J = autograd_jacobian(net, x[b], l)
            ref = beta * torch.linalg.pinv(J) @ e
            got = targets[l - 1][0, b] - fwd.a[l - 1][0, b]
            assert torch.allclose(got, ref, rtol=1e-11, atol=1e-12), (l, b)
    # the output target is the nudge itself
    assert torch.allclose(targets[-1], fwd.a[-1] + beta * (y - fwd.r[-1]), atol=1e-14)


def test_method_and_credit_agree_with_the_module_function_at_zero_damping():
    net, x, y = problem((5, 3, 2, 6), "tanh", seed=2)
    c = TargetPropagation(net, x, y, rule="ddtp_linear", beta=0.2, damping=1e-3)
    star = c.gauss_newton_targets(0.0)
    mod = gauss_newton_targets(net, x, y, 0.2)
    steps = gauss_newton(net, c.fwd, c.delta_L, damping=0.0)
    for l in range(1, net.L):
        assert torch.allclose(star[f"tau_{l}"], mod[l - 1], rtol=0, atol=1e-14)
        assert torch.allclose(star[f"tau_{l}"] - c.h[l - 1], 0.2 * steps[l - 1], rtol=0,
                              atol=1e-14)


def test_pseudo_inverse_step_is_the_minimum_norm_least_squares_solution():
    """J⁺v minimises ‖Jx − v‖; among minimisers it is the shortest: adding any null-space
    vector of J (J has more columns than rows at [5, 6, 2]: x ∈ R⁶ → R²; at [3, 2, 4] J is
    4 × 2, so the residual is orthogonal to range(J))."""
    g = torch.Generator().manual_seed(3)
    # wide J (hidden wider than output): exact solution, minimum norm
    net, x, y = problem((5, 6, 2), "tanh", seed=3, B=2)
    fwd = net.forward(x)
    J = net.output_jacobians(fwd)[0]                                   # [1, B, 2, 6]
    v = y[None] - fwd.r[-1]
    s = gauss_newton_step(J, v)
    assert torch.allclose((J @ s[..., None])[..., 0], v, atol=1e-12)  # solves J s = v
    null = torch.eye(6, dtype=F64) - torch.linalg.pinv(J) @ J         # projector on null(J)
    for _ in range(5):
        z = null @ torch.randn(6, generator=g, dtype=F64)
        assert ((s + z).norm(dim=-1) >= s.norm(dim=-1) - 1e-14).all()
        assert torch.allclose((null @ s[..., None])[..., 0], torch.zeros_like(s), atol=1e-12)
    # narrow J (bottleneck): least squares, residual ⟂ range(J), no other x does better
    net, x, y = problem((3, 2, 4), "tanh", seed=3, B=2)
    fwd = net.forward(x)
    J = net.output_jacobians(fwd)[0]                                   # [1, B, 4, 2]
    v = y[None] - fwd.r[-1]
    s = gauss_newton_step(J, v)
    res = v - (J @ s[..., None])[..., 0]
    assert (J.transpose(-1, -2) @ res[..., None]).abs().max() < 1e-12
    for _ in range(5):
        other = s + torch.randn(s.shape, generator=g, dtype=F64) * 0.1
        worse = v - (J @ other[..., None])[..., 0]
        assert (worse.norm(dim=-1) >= res.norm(dim=-1)).all()


def orthogonal(n, seed):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed),
                                       dtype=F64))
    return q


def conditioned_network(cond, n=4):
    """Linear [3, n, n] whose output Jacobian at layer 1 is exactly W_2 = U diag(s) Vᵀ with
    singular values from 1 down to 1/cond (log-spaced)."""
    U, V = orthogonal(n, 1), orthogonal(n, 2)
    s = torch.logspace(0, -torch.log10(torch.tensor(float(cond))).item(), n, dtype=F64)
    W2 = U @ torch.diag(s) @ V.T
    W1 = torch.randn(n, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    net = ForwardNetwork([3, n, n], "linear", weights=[W1[None], W2[None]], bias=False)
    return net, U, s, V


@pytest.mark.parametrize("cond", [1e5, 1e6, 1e8])
def test_ill_conditioned_jacobian_is_solved_to_rounding(cond):
    net, U, s, V = conditioned_network(cond)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 4, generator=g, dtype=F64)
    fwd = net.forward(x)
    d = y - fwd.r[-1][0]
    got = gauss_newton(net, fwd, d[None], damping=0.0)[0][0]
    J = net.output_jacobians(fwd)[0][0, 0]
    assert torch.equal(J, net.weights[1][0])
    # against an SVD computed here
    Ut, st, Vht = torch.linalg.svd(J)
    ref = ((d @ Ut) / st) @ Vht
    rel = ((got - ref).norm() / ref.norm()).item()
    assert rel <= 1e-10, rel
    # and against the constructed factors, within the perturbation bound cond·ε
    built = ((d @ U) / s) @ V.T
    rel_built = ((got - built).norm() / built.norm()).item()
    assert rel_built <= 10 * cond * torch.finfo(F64).eps, rel_built
    if cond == 1e5:
        assert rel_built <= 1e-10, rel_built


def test_damped_step_tends_to_the_pseudo_inverse_as_damping_vanishes():
    """J of full row rank (hidden wider than output): ‖J⁺_λ v − J⁺ v‖ = O(λ)."""
    net, x, y = problem((4, 6, 5, 3), "tanh", seed=5)
    fwd = net.forward(x)
    d = y[None] - fwd.r[-1]
    exact = gauss_newton(net, fwd, d, damping=0.0)
    errs = []
    for lam in (1e-2, 1e-4, 1e-6, 1e-8):
        damped = gauss_newton(net, fwd, d, damping=lam)
        errs.append(max((a - b).norm().item() / b.norm().item()
                        for a, b in zip(damped[:-1], exact[:-1])))
    assert errs[-1] < 1e-5, errs
    # linear in λ once λ ≪ s_min² (here s_min² ≈ 1e-2)
    assert all(90 < a / b < 110 for a, b in zip(errs[1:-1], errs[2:])), errs


def test_damped_step_on_a_bottleneck_uses_the_small_gram_system_and_tends_to_pinv():
    """Narrow J (4 × 2, rank 2): (JᵀJ + λI)⁻¹Jᵀ v → J⁺ v as λ → 0, and it equals the other
    form Jᵀ(JJᵀ + λI)⁻¹ v for λ > 0."""
    net, x, y = problem((3, 2, 4), "tanh", seed=6)
    fwd = net.forward(x)
    J = net.output_jacobians(fwd)[0]
    v = y[None] - fwd.r[-1]
    ref = (torch.linalg.pinv(J) @ v[..., None])[..., 0]
    for lam in (1e-1, 1e-3):
        wide = (J.transpose(-1, -2) @ torch.linalg.solve(
            J @ J.transpose(-1, -2) + lam * torch.eye(4, dtype=F64), v[..., None]))[..., 0]
        assert torch.allclose(gauss_newton_step(J, v, lam), wide, atol=1e-12)
    errs = [(gauss_newton_step(J, v, lam) - ref).norm().item() for lam in (1e-4, 1e-6, 1e-8)]
    assert errs[-1] < 1e-6 and errs[0] > errs[1] > errs[2], errs
    Q = damped_pseudo_inverse(J, 1e-10)
    assert torch.allclose(Q, torch.linalg.pinv(J), atol=1e-7)
    assert torch.allclose(damped_pseudo_inverse(J, 0.0), torch.linalg.pinv(J), atol=1e-13)


def test_rank_cutoff_drops_numerically_zero_directions():
    """A rank-1 J (exactly singular in exact arithmetic, not in floating point): the step has
    no component along the dropped direction and matches pinv with the same cutoff."""
    u = torch.tensor([1.0, 2.0, -1.0], dtype=F64)
    w = torch.tensor([0.5, -1.0], dtype=F64)
    J = (u[:, None] * w[None, :])[None, None]                          # [1, 1, 3, 2]
    v = torch.tensor([[[1.0, 0.0, 2.0]]], dtype=F64)
    got = gauss_newton_step(J, v)
    ref = (torch.linalg.pinv(J[0, 0]) @ v[0, 0])
    assert torch.allclose(got[0, 0], ref, atol=1e-14)
    assert abs(torch.dot(got[0, 0], torch.tensor([2.0, 1.0], dtype=F64)).item()) < 1e-14
    with pytest.raises(ValueError, match=r"rtol: received -1\.0, expected a finite number ≥ 0"):
        gauss_newton_step(J, v, rtol=-1.0)
    with pytest.raises(ValueError, match=r"damping: received -1\.0, expected a finite"):
        gauss_newton_step(J, v, -1.0)
    with pytest.raises(ValueError, match=r"v: received shape \(1, 1, 2\), expected \[\.\.\., 3\]"):
        gauss_newton_step(J, v[..., :2])


def test_batched_over_replicas_and_examples():
    nets = [ForwardNetwork([5, 3, 2, 6], "tanh", seed=s) for s in (0, 1, 2)]
    net = ForwardNetwork([5, 3, 2, 6], "tanh", seed=[0, 1, 2])
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(4, 5, generator=g, dtype=F64), torch.randn(4, 6, generator=g, dtype=F64)
    together = gauss_newton_targets(net, x, y, 0.1)
    for s, single in enumerate(nets):
        alone = gauss_newton_targets(single, x, y, 0.1)
        for a, b in zip(together, alone):
            assert torch.allclose(a[s], b[0], rtol=0, atol=1e-13)
