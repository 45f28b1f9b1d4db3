"""The measurements behind the Bengio (2020) reproduction, in the library (float64):

* :func:`normalised_inverse_decoders`, :meth:`TargetPropagation.iterated_limit`,
  :meth:`~TargetPropagation.iteration_residual`, :meth:`~TargetPropagation.contraction_bounds`,
  :func:`visited_region`, :func:`contraction_rate` (the iterated inverse's convergence);
* :meth:`TargetPropagation.layer_target_angles` (alignment with Gauss-Newton and backprop);
* the demo helpers they made room for: :func:`demos.config.check_numbers`,
  :func:`~demos.config.check_layer_widths` and the figures :func:`workbench.plots.decay_figure`
  and :func:`~workbench.plots.log_log_figure`.
"""
import math

import pytest
import torch

from circuits import ForwardNetwork, credit
from circuits.target_propagation import (MirroredDecoder, TargetPropagation, contraction_rate,
                                         normalised_inverse_decoders, visited_region)
from demos.config import check_layer_widths, check_numbers
from figures import assert_png
from solvers import solve
from workbench.plots import decay_figure, log_log_figure

F64 = torch.float64
EYE3 = torch.eye(3, dtype=F64)


def problem(widths, activation="linear", init="uniform", seed=1, scale=1.0):
    net = ForwardNetwork(list(widths), activation, seed=seed, init=init)
    g = torch.Generator().manual_seed(10)
    return (net, scale * torch.randn(1, widths[0], generator=g, dtype=F64),
            torch.randn(1, widths[-1], generator=g, dtype=F64))


def iterate(c, steps, save_every=1):
    return solve(c, c.initial_state(), 0.0, float(steps), dt=1.0, steady_state=False,
                 save_every=save_every, progress=False)


def tanh_case(rule):
    """A 3-3-3 orthogonal tanh layer fed x ~ N(0, ¼), β = 0.05, decoders at radius 0.1; the
    iterates of τ_1 (output) or u_2 (input) from step 1, and their limit."""
    net, x, y = problem((3, 3, 3), "tanh", "orthogonal", seed=0, scale=0.5)
    c = TargetPropagation(net, x, y, rule=rule, beta=0.05,
                          decoders=normalised_inverse_decoders(net, 0.1, seed=1))
    key = "tau_1" if rule == "iterated_output" else "u_2"
    return c, iterate(c, 60).ys[key][1:, 0, 0], c.iterated_limit()[key][0, 0]


# -- normalised decoders, the limit, the residual -------------------------------------------

def test_normalised_decoders_give_the_linearised_iteration_exactly_that_spectral_radius():
    """ρ(I − M_ℓ W_ℓ) and ρ(W_ℓ M_ℓ − I) measured 0.4 ± 3e-16 on both layers of a 3-3-3-3
    network for radius 0.4 (seed 3)."""
    net, _, _ = problem((3, 3, 3, 3))
    decoders = normalised_inverse_decoders(net, 0.4, seed=3)
    assert len(decoders) == 2
    for l, g in enumerate(decoders, start=2):
        W, M = net.weights[l - 1][0], g.M[0]
        for E in (EYE3 - M @ W, W @ M - EYE3):
            assert torch.linalg.eigvals(E).abs().max().item() == pytest.approx(0.4, abs=1e-14)
    with pytest.raises(ValueError, match=r"radius: received -1\.0, expected a finite number"):
        normalised_inverse_decoders(net, -1.0)


@pytest.mark.parametrize("rule", ["iterated_output", "iterated_input"])
def test_the_iteration_settles_on_its_limit_which_inverts_the_layers(rule):
    """200 unit Euler steps end within 3.6e-15 (output) and 1.3e-15 (input) of
    ``iterated_limit`` on a linear 3-3-3-3 network at radius 0.4; the limit's targets satisfy
    f_ℓ(τ_{ℓ-1}) = τ_ℓ."""
    net, x, y = problem((3, 3, 3, 3))
    c = TargetPropagation(net, x, y, rule=rule, beta=0.5,
                          decoders=normalised_inverse_decoders(net, 0.4, seed=3))
    limit = c.iterated_limit()
    assert set(limit) == set(c.initial_state())
    end = iterate(c, 200, save_every=200).y1
    assert max((end[k] - v).abs().max().item() for k, v in limit.items()) < 1e-13
    tau = c.targets(limit)
    for l in (2, 3):
        assert (c.f(l, tau[l - 2]) - tau[l - 1]).abs().max().item() < 1e-13


def test_iterated_limit_and_residual_refuse_what_they_cannot_measure():
    net, x, y = problem((3, 3, 3))
    exact = TargetPropagation.iterated_inverse(net, x, y)
    with pytest.raises(ValueError, match="rule: received 'dtp'"):
        TargetPropagation(net, x, y, rule="dtp", decoders=exact.decoders).iterated_limit()
    with pytest.raises(ValueError, match="anchor: received 0.5"):
        TargetPropagation(net, x, y, decoders=exact.decoders, anchor=0.5).iterated_limit()
    mirrored = [MirroredDecoder(torch.linalg.inv(net.weights[1]), None, net.activation(2))]
    with pytest.raises(ValueError, match="decoders: received a MirroredDecoder for layer 2"):
        TargetPropagation(net, x, y, rule="iterated_input", decoders=mirrored).iterated_limit()
    with pytest.raises(ValueError, match=r"l: received 1, expected a layer 2\.\.2"):
        exact.iteration_residual(1, x[None])
    with pytest.raises(ValueError, match="rule: received 'tp'"):
        TargetPropagation(net, x, y, rule="tp", decoders=exact.decoders).iteration_residual(
            2, x[None])


def test_exact_decoders_leave_no_residual():
    """g∘f − I of exact inverse decoders measured ≤ 5e-15 on a linear 3-3-3-3 network."""
    net, x, y = problem((3, 3, 3, 3))
    c = TargetPropagation.iterated_inverse(net, x, y)
    v = torch.randn(1, 1, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    for l in (2, 3):
        assert c.iteration_residual(l, v).abs().max().item() < 1e-13


# -- α, ρ and the measured rate ---------------------------------------------------------------

@pytest.mark.parametrize("rule, product, alphas", [
    ("iterated_output", lambda W, M: M @ W, (0.7114342351123318, 0.48179793618686645)),
    ("iterated_input", lambda W, M: W @ M, (0.6663921700713197, 0.6634981972054818))])
def test_contraction_bounds_of_an_affine_layer_are_a_spectral_norm_and_the_radius(
        rule, product, alphas):
    """Linear 3-3-3-3, radius 0.4: α = ‖M W − I‖₂ = 0.7114, 0.4818 (output) and ‖W M − I‖₂ =
    0.6664, 0.6635 (input) for layers 2, 3, computed by hand; ρ = 0.4 on each."""
    net, x, y = problem((3, 3, 3, 3))
    dec = normalised_inverse_decoders(net, 0.4, seed=3)
    c = TargetPropagation(net, x, y, rule=rule, beta=0.5, decoders=dec)
    limit = c.iterated_limit()
    for l, expected in zip((2, 3), alphas):
        key = f"tau_{l - 1}" if rule == "iterated_output" else f"u_{l}"
        alpha, rho = c.contraction_bounds(l, limit[key][0, 0])
        by_hand = torch.linalg.matrix_norm(product(net.weights[l - 1][0], dec[l - 2].M[0]) - EYE3,
                                           ord=2).item()
        assert alpha == pytest.approx(by_hand, rel=1e-12)
        assert alpha == pytest.approx(expected, rel=1e-9)
        assert rho == pytest.approx(0.4, abs=1e-12)


@pytest.mark.parametrize("rule, alpha_path, max_ratio", [("iterated_output", 0.18663, 0.16372),
                                                         ("iterated_input", 0.16653, 0.14488)])
def test_a_tanh_iteration_contracts_within_the_sampled_lipschitz_constant(rule, alpha_path,
                                                                          max_ratio):
    """Tanh 3-3-3 at radius 0.1: α over the iterates and segments (1021 points) 0.18663
    (output; 0.18231 at the limit alone, 0.18828 over the bounding box) and 0.16653 (input,
    where f∘g is affine: the same everywhere); the largest per-step ratio 0.16372 and 0.14488
    stays below it, and the rate (0.1218, 0.1014) sits between ρ (0.1197, 0.1000) and α."""
    c, iterates, limit = tanh_case(rule)
    pts, box = visited_region(iterates, limit, 400, seed=0)
    assert pts.shape == (60 + 1 + 16 * 60, 3) and box.shape == (400, 3)
    at_limit, rho = c.contraction_bounds(2, limit)
    alpha, rho_again = c.contraction_bounds(2, limit, pts)
    alpha_box = c.contraction_bounds(2, limit, box)[0]
    assert rho == rho_again
    assert alpha == pytest.approx(alpha_path, abs=1e-5)
    assert at_limit <= alpha * (1 + 1e-12) and alpha <= alpha_box * (1 + 1e-12)
    rate, largest, measured = contraction_rate((iterates - limit).norm(dim=-1))
    assert measured >= 10
    assert largest == pytest.approx(max_ratio, abs=1e-5)
    assert rho * 0.99 < rate <= largest <= alpha


def test_non_finite_jacobians_are_skipped():
    """A NaN point (outside the decoder's domain) leaves α at the limit's 0.18231; only NaN
    points give α = nan, with ρ still measured at the limit (0.11966)."""
    c, _, limit = tanh_case("iterated_output")
    nan = torch.full((2, 3), math.nan, dtype=F64)
    alone = c.contraction_bounds(2, limit)
    assert c.contraction_bounds(2, limit, torch.cat([limit[None], nan])) == alone
    alpha, rho = c.contraction_bounds(2, limit, nan)
    assert math.isnan(alpha) and rho == pytest.approx(0.11966, abs=1e-5)


def test_contraction_rate_reads_the_leading_run_above_roundoff():
    """2·0.3^k: rate 0.3, 21 ratios (0.3^21 ≈ 1.05e-11 is the last above 1e-11); a run cut by
    round-off or a non-finite error stops there; under two usable errors: nan."""
    rate, largest, count = contraction_rate(2 * 0.3 ** torch.arange(40, dtype=F64))
    assert (rate, count) == (pytest.approx(0.3, rel=1e-12), 21)
    assert largest == pytest.approx(0.3, rel=1e-12)
    assert contraction_rate(torch.tensor([1.0, 0.5, 0.25, 1e-13, 1e-14], dtype=F64)) == (
        0.5, 0.5, 2)
    assert contraction_rate(torch.tensor([1.0, 2.0, math.inf, math.nan], dtype=F64)) == (
        2.0, 2.0, 1)
    rate, largest, count = contraction_rate(torch.tensor([1.0, 1e-12], dtype=F64))
    assert math.isnan(rate) and math.isnan(largest) and count == 0


def test_visited_region_holds_the_iterates_the_limit_and_the_segments():
    iterates = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    limit = torch.zeros(2, dtype=F64)
    pts, box = visited_region(iterates, limit, 50, seed=3, per_segment=5)
    assert pts.shape == (2 + 1 + 5 * 2, 2)
    assert torch.equal(pts[:2], iterates) and torch.equal(pts[2], limit)
    assert torch.equal(pts[3], iterates[0]) and torch.equal(pts[-1], limit)   # s = 0 … 1
    lo, hi = torch.tensor([-0.1, -0.2], dtype=F64), torch.tensor([1.1, 2.2], dtype=F64)
    assert ((box >= lo - 1e-9) & (box <= hi + 1e-9)).all()
    assert torch.equal(box, visited_region(iterates, limit, 50, seed=3, per_segment=5)[1])


# -- angles to Gauss-Newton and backprop -------------------------------------------------------

def test_layer_target_angles_vanish_on_their_references_and_fall_with_beta():
    """Orthogonal tanh 4-4-4-4, x ~ N(0, ¼): exact-inverse targets are 0.4075°, 0.04172°,
    0.004182° (layer 1) and 0.1315°, 0.01338°, 0.001341° (layer 2) off Gauss-Newton at β =
    1e-2, 1e-3, 1e-4 (first order in β); GN's own targets 0° exactly, and 31.93°, 4.456° off
    backprop at every β; targets along backprop ≤ 1.2e-11° off it."""
    net, x, y = problem((4, 4, 4, 4), "tanh", "orthogonal", seed=0, scale=0.5)
    c = TargetPropagation.iterated_inverse(net, x, y, beta=[1e-2, 1e-3, 1e-4])
    angles = c.layer_target_angles(c.exact_inverse_targets())["gauss_newton"]
    assert [a.shape for a in angles] == [(3,), (3,)]
    assert angles[0].tolist() == pytest.approx([0.40755, 0.041724, 0.0041825], rel=1e-4)
    assert angles[1].tolist() == pytest.approx([0.13147, 0.013385, 0.0013409], rel=1e-4)
    for a in angles:
        assert 9.5 < (a[1] / a[2]).item() < 10.5
    own = c.layer_target_angles(c.gauss_newton_targets(0.0))
    assert all(torch.equal(a, torch.zeros(3, dtype=F64)) for a in own["gauss_newton"])
    assert own["backprop"][0].tolist() == pytest.approx([31.9265] * 3, abs=1e-4)
    assert own["backprop"][1].tolist() == pytest.approx([4.4562] * 3, abs=1e-4)
    bp = credit.backprop(c.network, c.fwd, c.delta_L)
    along = {f"tau_{l}": h + c.beta * d for l, (h, d) in enumerate(zip(c.h, bp), start=1)}
    assert max(a.max().item() for a in c.layer_target_angles(along)["backprop"]) < 1e-9


def test_layer_target_angles_of_one_hidden_layer_are_target_angles():
    """With a single hidden layer the per-layer angles are :meth:`target_angles` (1.4825°,
    1.5715° off backprop and 0.7989°, 0.1059° off damped Gauss-Newton at β = 0.1, 0.01)."""
    net, x, y = problem((3, 3, 3), "tanh", "orthogonal", seed=0, scale=0.5)
    c = TargetPropagation.iterated_inverse(net, x, y, beta=[0.1, 0.01])
    star = c.exact_inverse_targets()
    mine, flat = c.layer_target_angles(star, damping=1e-3), c.target_angles(star, damping=1e-3)
    assert torch.equal(mine["backprop"][0], flat["backprop"])
    assert torch.allclose(mine["gauss_newton"][0], flat["gauss_newton"], rtol=1e-6)
    assert flat["backprop"].tolist() == pytest.approx([1.4825, 1.5715], abs=1e-4)
    assert flat["gauss_newton"].tolist() == pytest.approx([0.7989, 0.1059], abs=1e-4)


# -- demo helpers -------------------------------------------------------------------------------

def test_check_numbers_and_layer_widths_name_what_they_received():
    assert check_numbers("betas", [0.1, 0.01], at_least=2) == (0.1, 0.01)
    assert check_numbers("p", (0.0, 1.0), positive=False) == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"betas: received \[0\.1\], expected at least 2 finite"):
        check_numbers("betas", [0.1], at_least=2)
    with pytest.raises(ValueError, match=r"p: received \[-1\.0\], expected finite numbers > 0"):
        check_numbers("p", (-1.0,))
    with pytest.raises(ValueError, match=r"p: received \[\], expected finite numbers ≥ 0"):
        check_numbers("p", (), positive=False)
    assert check_layer_widths("w", [4, 5, 5], layers=2, square=True) == (4, 5, 5)
    with pytest.raises(ValueError, match=r"w: received \[4, 5\], expected at least 3 positive"):
        check_layer_widths("w", [4, 5], layers=2)
    with pytest.raises(ValueError, match=r"w: received \[4, 4, 5\], expected equal widths"):
        check_layer_widths("w", (4, 4, 5), square=True)


def test_figure_helpers_write_pngs(tmp_path):
    errors = [1.0, 0.3, 0.09, None, 0.0081]
    assert_png(decay_figure(tmp_path / "decay.png", {"a": [("p", errors, 0.3)],
                                                     "b": [("q", [1.0, 2.0, 4.0], 2.0)]},
                            title="decay"))
    assert_png(log_log_figure(tmp_path / "lines.png", [1e-2, 1e-3], {"a": ([1.0, 0.1], {})},
                              hlines=[(5.0, {"color": "C1"})], hline_label="ref", title="lines"))
