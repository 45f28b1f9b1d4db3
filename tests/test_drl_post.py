"""The difference reconstruction rule (DRL, Meulemans et al. 2020) for direct feedback Q_ℓ in the
post-activation convention (SPEC §5, "Convention"), float64.

``DifferenceReconstruction(convention="post")`` injects ξ into the rate ``r_ℓ`` and regresses it
on ``Δr_L = r_L(r_ℓ + ξ) − r_L``; with orthogonal (antithetic, ``mean ξξᵀ = σ²I``) noise its
fixed point is ``Q_ℓ* = mean_b J_bᵀ (mean_b J_b J_bᵀ + λI)⁻¹ + O(σ²)`` with ``J_b = ∂r_L/∂r_ℓ``
(for one example: the damped pseudo-inverse ``J̄ᵀ(J̄J̄ᵀ + λI)⁻¹``). Every reference is rebuilt
here from the Jacobians; the tolerances are the measured errors with a margin of about 3–10×.
"""
import math

import pytest
import torch

from circuits import FeedbackLearning, ForwardNetwork, LearnedFeedback, Plastic, Targets
from circuits.feedback_learning import DifferenceReconstruction, initial_feedback, learn_feedback
from circuits.target_propagation import (TargetPropagation, gauss_newton_targets,
                                         post_output_jacobians)
from solvers import solve, train

F64 = torch.float64
LAM = 1e-2


def data(B, n, seed=0):
    return torch.randn(B, n, generator=torch.Generator().manual_seed(seed), dtype=F64)


def jacobians(net, x, convention):
    """Per-example ``J_b = ∂h_L/∂h_ℓ`` ``[S, B, n_L, n_ℓ]``, ℓ = 1..L−1."""
    fwd = net.forward(x)
    Js = net.output_jacobians(fwd) if convention == "pre" else post_output_jacobians(net, fwd)
    return Js[:-1]


def moment_fixed_point(J, damping=LAM):
    """``mean_b J_bᵀ (mean_b J_b J_bᵀ + λI)⁻¹``: the σ → 0 DRL fixed point on a batch (the
    damped pseudo-inverse of ``J̄`` when B = 1 or all J_b are equal)."""
    C = J.mean(1).transpose(-1, -2)
    A = (J @ J.transpose(-1, -2)).mean(1)
    return torch.linalg.solve(A + damping * torch.eye(A.shape[-1], dtype=F64), C, left=False)


def damped_pinv(J, damping=LAM):
    return J.transpose(-1, -2) @ torch.linalg.inv(
        J @ J.transpose(-1, -2) + damping * torch.eye(J.shape[-2], dtype=F64))


def drl_errors(net, x, convention, sigmas):
    refs = [moment_fixed_point(J) for J in jacobians(net, x, convention)]
    errs = []
    for sigma in sigmas:
        Q = DifferenceReconstruction(net, x, sigma=sigma, damping=LAM, seed=3,
                                     convention=convention).fixed_point()
        errs.append(max((Q[f"Q_{l}"] - ref).abs().max().item()
                        for l, ref in enumerate(refs, start=1)))
    return errs


@pytest.mark.parametrize("output_activation", ["linear", "tanh"])
@pytest.mark.parametrize("convention", ["pre", "post"])
def test_drl_fixed_point_is_the_moment_form_of_its_own_jacobian_to_order_sigma_squared(
        convention, output_activation):
    """B = 8 examples: the error to ``mean J_bᵀ (mean J_bJ_bᵀ + λI)⁻¹`` falls ×100 per decade of
    σ (antithetic noise: the O(σ) terms cancel, O(σ²) remains) down to rounding. Measured
    (seed 0, λ = 1e-2), max entry error at σ = 1e-3 / 1e-4 / 1e-5:
    pre 1.1e-6 / 1.1e-8 / 1.2e-10 (either output: a_L does not see φ_L), post 5.1e-7 / 5.1e-9 /
    5.5e-11 (linear output) and 7.2e-7 / 7.2e-9 / 8.0e-11 (tanh output). The pre case is the
    pre-existing rule (bit-for-bit unchanged)."""
    net = ForwardNetwork([4, 6, 5, 3], "tanh", output_activation, seed=0)
    x = data(8, 4)
    e3, e4, e5 = drl_errors(net, x, convention, (1e-3, 1e-4, 1e-5))
    assert e3 < 1e-5 and e4 < 1e-7 and e5 < 1e-9, (e3, e4, e5)
    assert e3 / e4 > 50, (e3, e4)                                  # O(σ²)


def test_post_drl_fixed_point_is_the_damped_pseudo_inverse_of_the_rate_jacobian():
    """One example: ``Q_ℓ* = J̄ᵀ(J̄J̄ᵀ + λI)⁻¹``, ``J̄ = ∂r_L/∂r_ℓ``, reached by the flow itself
    (rk4 on the vector field, to 1e-10) and by its closed forms. Measured at σ = 1e-5: 9.3e-11
    (max entry error), rk4 at t = 1500 vs the fixed point 1.2e-11; the pre-activation
    pseudo-inverse is a different matrix (differs by 1.1)."""
    net = ForwardNetwork([4, 6, 5, 3], "tanh", seed=0)
    x = data(1, 4)
    c = DifferenceReconstruction(net, x, sigma=1e-5, damping=LAM, eta=3.0, seed=3,
                                 convention="post")
    assert c.convention == "post"
    # the slowest mode decays at η·λ = 0.03: by t = 1500 it is down by e⁻⁴⁵
    sol = solve(c, c.initial_state(), 0.0, 1500.0, dt=0.1, method="rk4", atol=1e-13,
                rtol=1e-13)
    fixed, flowed = c.fixed_point(), c.flow(math.inf)
    pre_Js = jacobians(net, x, "pre")
    for l, J in enumerate(jacobians(net, x, "post"), start=1):
        ref = damped_pinv(J[:, 0])
        assert (fixed[f"Q_{l}"] - ref).abs().max() < 1e-9, l
        assert torch.allclose(sol.y1[f"Q_{l}"], fixed[f"Q_{l}"], rtol=0, atol=1e-10), l
        assert torch.allclose(flowed[f"Q_{l}"], fixed[f"Q_{l}"], rtol=0, atol=1e-12), l
        if l == 1:      # the conventions' Jacobians differ for a tanh net
            assert (damped_pinv(pre_Js[0][:, 0]) - ref).abs().max() > 1e-2


def test_pre_and_post_drl_coincide_exactly_on_a_linear_network():
    """a = r for a linear network, so the noise, the propagation and the moments are the same
    (measured difference 0; asserted to 1e-12), at any σ."""
    net = ForwardNetwork([4, 6, 5, 3], "linear", seed=0)
    x = data(8, 4)
    for noise in ("orthogonal", "gaussian"):
        pre = DifferenceReconstruction(net, x, sigma=0.3, damping=LAM, noise=noise, seed=3)
        post = DifferenceReconstruction(net, x, sigma=0.3, damping=LAM, noise=noise, seed=3,
                                        convention="post")
        a, b = pre.fixed_point(), post.fixed_point()
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=0, atol=1e-12), (noise, k)
        for k in pre.moments:
            for m, n in zip(pre.moments[k], post.moments[k]):
                assert torch.allclose(m, n, rtol=0, atol=1e-12), (noise, k)


def test_post_drl_feedback_gives_post_gauss_newton_targets_in_ddtp_linear():
    """One example, σ = 1e-5: DDTP-linear (post) with the learned Q settles on the damped
    Gauss-Newton targets of the rates, ``τ_ℓ = r_ℓ + β J̄ᵀ(J̄J̄ᵀ + λI)⁻¹ e_L``. Measured relative
    error of the target change: 5.1e-11 (settled) / 5.0e-11 (closed-form steady state), worst
    layer; with the pre-activation DRL feedback instead it is 0.18."""
    net = ForwardNetwork([4, 6, 5, 3], "tanh", seed=0)
    x, t = data(1, 4, seed=1), 0.5 * data(1, 3, seed=2)
    beta = 0.1

    def target_errors(convention):
        Q = DifferenceReconstruction(net, x, sigma=1e-5, damping=LAM, seed=3,
                                     convention=convention).fixed_point()
        tp = TargetPropagation(net, x, t, rule="ddtp_linear", beta=beta, damping=LAM,
                               feedback=[Q[f"Q_{l}"] for l in (1, 2)], convention="post")
        settled = solve(tp, tp.initial_state(), 0.0, 60.0, dt=0.1, atol=1e-14, rtol=1e-12).y1
        gn, steady = tp.gauss_newton_targets(LAM), tp.steady_state()
        ref = gauss_newton_targets(net, x, t, beta, LAM, convention="post")
        errs = []
        for l in (1, 2):
            h, g = tp.h[l - 1], gn[f"tau_{l}"]
            assert torch.allclose(g, ref[l - 1], rtol=0, atol=1e-14)
            errs.append(max(((y[f"tau_{l}"] - g).norm() / (g - h).norm()).item()
                            for y in (settled, steady)))
        return max(errs)

    assert target_errors("post") < 1e-9
    assert target_errors("pre") > 1e-2


# -- learning the feedback between presentations --------------------------------------------

X = data(24, 4, seed=5)
#: a learnable target: a random tanh teacher of the student's shape
Y = ForwardNetwork([4, 6, 5, 3], activation="tanh", seed=7, scale=1.0).forward(X).r[-1][0]
BATCH = 6


def stream(k):
    i = (k % (X.shape[0] // BATCH)) * BATCH
    return X[i:i + BATCH], Y[i:i + BATCH]


def test_learned_feedback_threads_the_convention_to_the_rule():
    """``LearnedFeedback(..., convention="post")``'s first call (warm start) is the post DRL
    fixed point from the settings, seeded ``noise_seed``; ``learn_feedback`` likewise."""
    net = ForwardNetwork([4, 6, 5, 3], "tanh", seed=1)
    s = FeedbackLearning(sigma=1e-3, damping=LAM)
    x = stream(0)[0]
    fb = LearnedFeedback("direct", net, s, noise_seed=40, convention="post")
    assert fb.convention == "post" and "convention='post'" in repr(fb)
    Q = fb(net, x)
    star = DifferenceReconstruction(net, x, sigma=1e-3, damping=LAM, eta=s.eta, seed=40,
                                    convention="post").fixed_point()
    pre = DifferenceReconstruction(net, x, sigma=1e-3, damping=LAM, eta=s.eta, seed=40
                                   ).fixed_point()
    for l, q in enumerate(Q, start=1):
        assert torch.allclose(q, star[f"Q_{l}"], rtol=0, atol=1e-12)
        assert (q - pre[f"Q_{l}"]).abs().max() > 1e-3
    start = initial_feedback("direct", net, seed=1)
    one = learn_feedback(net, x, start, s, duration=0.5, seed=2, convention="post")
    c = DifferenceReconstruction(net, x, sigma=1e-3, damping=LAM, eta=s.eta, seed=2,
                                 feedback=start, convention="post")
    for q, r in zip(one, c.feedback(c.flow(0.5))):
        assert torch.allclose(q, r, rtol=0, atol=1e-14)


def test_post_ddtp_linear_with_learned_feedback_lowers_the_loss():
    """8 presentations (2 passes over 4 minibatches of 6, period 10, ``exp_euler``), feedback
    learned by the post DRL between presentations, local-loss weight updates on the rates.
    Measured loss ½‖y − r_L‖² on all 24 examples: 0.1552 → 0.0322 (×0.21); asserted < ×0.5.
    (``form="dtp1"`` at β = 0.5 diverges in post, with Gauss-Newton feedback too: the targets
    leave tanh's range and φ⁻¹(τ) is not finite.)"""
    network = ForwardNetwork([4, 6, 5, 3], "tanh", seed=1)
    fb = LearnedFeedback("direct", network, FeedbackLearning(sigma=1e-3, damping=LAM),
                         convention="post")
    family = Targets("ddtp_linear", feedback=fb, convention="post", beta=0.5,
                     form="local_loss")
    c = Plastic(family, network, *stream(0), eta=0.2)
    assert c.circuit.convention == "post"                  # Targets passes it through
    r = train(c, c.initial_state(), stream, period=10.0, presentations=8, dt=0.05, chunk=4,
              method="exp_euler")
    assert not r.diverged.any()
    assert fb.calls == 9                       # at construction, then at every presentation

    def loss(n):
        return 0.5 * ((n.forward(X).r[-1][0] - Y) ** 2).sum(-1).mean().item()
    before, after = loss(network), loss(c.network_of(r.y))
    assert after < 0.5 * before, (before, after)


def test_a_diverging_replica_with_learned_feedback_is_flagged_not_an_error():
    """Two replicas, η = 0.2 and 1e3 (``dtp1``, β = 0.1): the second's weights blow up, its
    learned Q follows, and the run flags it diverged (held finite) instead of stopping on its
    non-finite feedback (it raised ``feedback[0]: received non-finite values`` before); the
    first trains as it does alone, to rounding amplified by the feedback's ridge solves
    (measured 1.7e-9 absolute, 1.8e-7 relative, once the diverged replica leaves the batch)."""
    network = ForwardNetwork([4, 6, 5, 3], "tanh", seed=1)
    settings = FeedbackLearning(sigma=1e-3, damping=LAM)

    def run(eta):
        fb = LearnedFeedback("direct", network, settings, convention="post")
        c = Plastic(Targets("ddtp_linear", feedback=fb, convention="post", beta=0.1,
                            form="dtp1"), network, *stream(0), eta=eta)
        return train(c, c.initial_state(), stream, period=10.0, presentations=8, dt=0.05,
                     chunk=4, method="exp_euler", divergence_bound=1e3)
    both, alone = run([0.2, 1e3]), run(0.2)
    assert both.diverged.tolist() == [False, True]
    assert all(torch.isfinite(v).all() for v in both.y.values())
    torch.testing.assert_close(both.y["W_1"][0], alone.y["W_1"][0], rtol=1e-6, atol=1e-8)


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda net, x: DifferenceReconstruction(net, x, convention="sideways"),
     r"convention: received 'sideways', expected one of \['pre', 'post'\]"),
    (lambda net, x: DifferenceReconstruction(net, x, convention=None),
     r"convention: received None, expected one of"),
    (lambda net, x: learn_feedback(net, x, initial_feedback("direct", net), convention="up"),
     r"convention: received 'up', expected one of"),
    (lambda net, x: LearnedFeedback("direct", net, convention="sideways"),
     r"convention: received 'sideways', expected one of"),
    (lambda net, x: LearnedFeedback("decoders", net, convention="post"),
     r"convention: received 'post' for decoders, expected 'pre': post-activation decoders "
     r"are not learned by dynamics"),
    (lambda net, x: learn_feedback(net, x, initial_feedback("decoders", net),
                                   convention="post"),
     r"convention: received 'post' for decoders.*only direct feedback Q"),
])
def test_bad_conventions_are_refused(make, match):
    net = ForwardNetwork([3, 4, 4, 2], "tanh")
    with pytest.raises(ValueError, match=match):
        make(net, data(5, 3))
