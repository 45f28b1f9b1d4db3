"""The learning APIs added for training scripts, against closed forms, fine integrations,
autograd and hand computations (float64):

* :meth:`RegressionFlow.flow` (the exact flow of the affine feedback-learning rules),
  :func:`learn_feedback`, :func:`initial_feedback`, :class:`LearnedFeedback`;
* :meth:`TargetPropagation.present` (online mode) and :meth:`TargetPropagation.target_angles`;
* :meth:`LocalDecoders.readouts`, :meth:`LocalDecoders.readout_accuracy`,
  :meth:`LocalDecoders.outputs`;
* :func:`circuits.registry.learning_circuit` for every name of ``METHODS``.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from circuits import ForwardNetwork
from circuits.feedback_learning import (DifferenceReconstruction, FeedbackLearning,
                                        LearnedFeedback, ReconstructionLearning, initial_feedback,
                                        learn_feedback)
from circuits.local_decoders import LocalDecoders
from circuits.registry import METHODS, learning_circuit
from circuits.target_propagation import (MirroredDecoder, TargetPropagation,
                                         gauss_newton_targets)
from solvers import solve

F64 = torch.float64
WIDTHS = [4, 6, 5, 3]


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def net2():
    """Two replicas with different weights (a replica mix-up changes the numbers)."""
    return ForwardNetwork(WIDTHS, "tanh", seed=[0, 1])


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def rules(net, x):
    """Both regression flows on one batch, started away from their fixed points."""
    return [ReconstructionLearning(net, x, initial_feedback("decoders", net, scale=0.3, seed=2),
                                   eta=2.0, decay=0.01, noise=0.05, seed=4),
            DifferenceReconstruction(net, x, sigma=0.05, damping=0.01, eta=2.0, seed=4,
                                     feedback=initial_feedback("direct", net, scale=0.3,
                                                               seed=2))]


# -- RegressionFlow.flow ---------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1], ids=["reconstruction", "difference_reconstruction"])
def test_exact_flow_matches_a_fine_rk4_integration_of_the_rule(which):
    """``flow(1.5)`` (one matrix exponential per layer) against RK4 on the rule's vector field
    from the same start: relative error ≤ 1e-9 at dt = 5e-3 (measured 2e-12..5e-12), and
    RK4's error falls 16× (measured 15.6..16.4) when dt halves from 1e-2 — fourth order, so the
    difference is the integrator's truncation, not a different flow. The state moved by ~0.8..1
    of its norm and is still ~0.8..0.9 away from the fixed point (not a trivial comparison)."""
    c = rules(net2(), randn(8, 4, seed=3))[which]
    exact = c.flow(1.5)
    errs = []
    for dt in (1e-2, 5e-3):
        sol = solve(c, c.initial_state(), 0.0, 1.5, dt=dt, method="rk4", steady_state=False)
        errs.append({k: rel(sol.y1[k], exact[k]) for k in exact})
    fp, y0 = c.fixed_point(), c.initial_state()
    for k in exact:
        assert errs[1][k] <= 1e-9, (k, errs)
        assert 12 < errs[0][k] / errs[1][k] < 20, (k, errs)
        assert rel(exact[k], fp[k]) > 0.5 and rel(y0[k], exact[k]) > 0.5, k


def test_flow_from_a_given_start_composes_and_starts_where_it_is_told():
    """``flow(0.9, flow(0.4)) = flow(1.3)`` (the flow is a semigroup; measured ≤ 6e-15
    relative), ``flow(0) = y0`` exactly, and a given ``y0`` is used: the flow from 2·y0 differs
    from the flow from y0 by exactly the homogeneous part, ``y0 · exp(−η t M)`` (checked
    against ``torch.linalg.matrix_exp`` of ``−η t (A + λI)``, 1e-12)."""
    for c in rules(net2(), randn(8, 4, seed=3)):
        y0 = c.initial_state()
        a, b = c.flow(1.3), c.flow(0.9, c.flow(0.4))
        z = c.flow(0.0)
        doubled = c.flow(0.7, {k: 2 * v for k, v in y0.items()})
        once = c.flow(0.7)
        for k, (A, C) in c.moments.items():
            assert rel(b[k], a[k]) < 1e-13, k
            assert torch.equal(z[k], y0[k]), k
            eye = torch.eye(A.shape[-1], dtype=F64)
            homogeneous = y0[k] @ torch.linalg.matrix_exp(-c.eta * 0.7 * (A + c.decay * eye))
            torch.testing.assert_close(doubled[k] - once[k], homogeneous, rtol=1e-12,
                                       atol=1e-14)


def test_flow_to_infinity_is_the_stationary_closed_form_fixed_point():
    """``flow(math.inf)`` is ``C (A + λI)⁻¹``: the vector field there vanishes (measured
    ≤ 6e-16 of η·max|Θ|), it equals a solve of the normal equations written here, and the
    finite flow reaches it (t = 3000: relative ≤ 1e-12, measured 1e-14..1.3e-13; t = 100
    is still 1e-3..4e-2 away, so the limit is approached, not assumed)."""
    for c in rules(net2(), randn(8, 4, seed=3)):
        inf = c.flow(math.inf)
        field = c.vector_field(0.0, inf)
        far, mid = c.flow(3000.0), c.flow(100.0)
        for k, (A, C) in c.moments.items():
            assert field[k].abs().max() <= 1e-14 * c.eta * inf[k].abs().max(), k
            normal = (A + c.decay * torch.eye(A.shape[-1], dtype=F64)).transpose(-1, -2)
            hand = torch.linalg.solve(normal, C.transpose(-1, -2)).transpose(-1, -2)
            assert rel(inf[k], hand) < 1e-12, k
            assert rel(far[k], inf[k]) < 1e-12, k
            assert rel(mid[k], inf[k]) > 1e-4, k


@pytest.mark.parametrize("duration", [-1.0, float("nan"), True, "1"])
def test_flow_rejects_a_bad_duration(duration):
    """A negative, NaN, boolean or non-numeric duration is a ValueError naming it."""
    c = rules(net2(), randn(8, 4, seed=3))[0]
    with pytest.raises(ValueError, match=r"duration: received .*expected a number ≥ 0"):
        c.flow(duration)


# -- learn_feedback, initial_feedback ----------------------------------------------------------


def test_learn_feedback_runs_the_rule_with_the_settings_from_the_current_feedback():
    """``learn_feedback(...)`` with ``settings.duration = 0.7`` (the default duration) equals
    RK4 (dt = 2.5e-3) of the rule built with the settings' η, damping (as λ) and noise σ, from
    ``current``: ≤ 1e-9 relative for decoders (V: measured 1.5e-12; the small bias c: 5.4e-11)
    and for direct Q's (measured 4e-14..2e-13); the result has ``current``'s form and moved
    ≥ 0.1 from it; ``current`` is not modified."""
    net, x = net2(), randn(8, 4, seed=3)
    s = FeedbackLearning(duration=0.7, eta=1.5, noise=0.1, sigma=0.02, damping=0.05)
    dec = initial_feedback("decoders", net, scale=0.3, seed=5)
    before = [(g.V.clone(), g.c.clone()) for g in dec]
    learned = learn_feedback(net, x, dec, s, seed=9)
    c = ReconstructionLearning(net, x, dec, eta=1.5, decay=0.05, noise=0.1, seed=9)
    ref = c.decoders(solve(c, c.initial_state(), 0.0, 0.7, dt=2.5e-3, method="rk4",
                           steady_state=False).y1)
    assert all(isinstance(g, MirroredDecoder) for g in learned) and len(learned) == 2
    for g, r, d, (V0, c0) in zip(learned, ref, dec, before):
        assert rel(g.V, r.V) < 1e-9 and rel(g.c, r.c) < 1e-9
        assert g.activation is d.activation
        assert torch.equal(d.V, V0) and torch.equal(d.c, c0)
        assert rel(g.V, V0) > 0.1
    Q0 = initial_feedback("direct", net, scale=0.3, seed=5)
    Q = learn_feedback(net, x, Q0, s, seed=9)
    d = DifferenceReconstruction(net, x, sigma=0.02, damping=0.05, eta=1.5, seed=9, feedback=Q0)
    refQ = d.feedback(solve(d, d.initial_state(), 0.0, 0.7, dt=2.5e-3, method="rk4",
                            steady_state=False).y1)
    assert len(Q) == 2
    for q, r, q0 in zip(Q, refQ, Q0):
        assert q.shape == q0.shape and rel(q, r) < 1e-9 and rel(q, q0) > 0.1


def test_learn_feedback_resumed_from_its_result_continues_the_same_flow():
    """With the same batch and noise seed, 0.3 then 0.5 time units from the first result equal
    0.8 from the start (relative ≤ 1e-12, measured ~1e-15): the result is a valid ``current``
    and is where the second call starts."""
    net, x = net2(), randn(8, 4, seed=3)
    s = FeedbackLearning(duration=0.8)
    for kind in ("decoders", "direct"):
        start = initial_feedback(kind, net, scale=0.3, seed=5)
        half = learn_feedback(net, x, start, s, duration=0.3, seed=2)
        two = learn_feedback(net, x, half, s, duration=0.5, seed=2)
        one = learn_feedback(net, x, start, s, seed=2)
        for a, b in zip(two, one):
            a, b = (a.V, b.V) if kind == "decoders" else (a, b)
            assert rel(a, b) < 1e-12, kind


def test_learn_feedback_to_its_fixed_point_on_a_linear_network_is_the_closed_form():
    """At ``duration=math.inf`` on a linear network with orthogonal (exactly isotropic) noise,
    the direct feedback is the damped pseudo-inverse ``J̄ᵀ(J̄J̄ᵀ + λI)⁻¹`` with λ the settings'
    damping (measured max error 2e-16 vs 1e-10 allowed); with no corruption noise the decoder
    of a square orthogonal layer is its inverse ``W⁻¹`` up to the ridge λ = 1e-10 (measured
    6e-10 vs 1e-8 allowed) and ``g ∘ f = I`` on the batch (measured 7e-10)."""
    net = ForwardNetwork([3, 4, 4, 2], "linear", seed=[3, 4], init="orthogonal")
    x = randn(6, 3, seed=1)
    s = FeedbackLearning(damping=0.3, sigma=0.5)
    Q = learn_feedback(net, x, initial_feedback("direct", net, seed=1), s, duration=math.inf)
    J = net.weights[2]                                   # ∂a_3/∂a_2 [S, 2, 4]
    Js = [J @ net.weights[1], J]
    eye = 0.3 * torch.eye(2, dtype=F64)
    for q, Jl in zip(Q, Js):
        expected = Jl.transpose(-1, -2) @ torch.linalg.inv(Jl @ Jl.transpose(-1, -2) + eye)
        assert (q - expected).abs().max() < 1e-10
    sq = ForwardNetwork([4, 4, 4], "linear", seed=[5, 6], init="orthogonal")
    x4 = randn(12, 4, seed=2)
    g = learn_feedback(sq, x4, initial_feedback("decoders", sq, seed=1),
                       FeedbackLearning(noise=0.0, damping=1e-10), duration=math.inf)[0]
    assert (g.V - torch.linalg.inv(sq.weights[1])).abs().max() < 1e-8
    h1 = sq.forward(x4).a[0]
    assert (g(sq.layer(2, h1)) - h1).abs().max() < 1e-8


def test_learn_feedback_rejects_what_it_cannot_learn():
    """An empty or mixed ``current`` is a ValueError naming both accepted forms; settings that
    are not a FeedbackLearning are a TypeError."""
    net, x = net2(), randn(4, 4, seed=3)
    for bad in ([], "decoders", [initial_feedback("direct", net)[0], 1.0]):
        with pytest.raises(ValueError, match=r"current: received .*MirroredDecoder.*tensors"):
            learn_feedback(net, x, bad)
    with pytest.raises(TypeError, match=r"settings: received dict, expected a "
                                        r"circuits\.FeedbackLearning"):
        learn_feedback(net, x, initial_feedback("direct", net), {"eta": 1.0})


def test_initial_feedback_shapes_seeds_scale_and_dtype():
    """Decoders ``V_ℓ [S, n_{ℓ-1}, n_ℓ]``, ``c_ℓ [S, 1, n_{ℓ-1}]`` with φ_ℓ; direct ``Q_ℓ
    [S, n_ℓ, n_L]``; the same seed gives bit-identical feedback, another seed different
    feedback, the two replicas differ, scale 0.2 is exactly twice scale 0.1 (entries N(0,
    scale²): the pooled standard deviation of 2000 entries at scale 0.5 is within 6% of 0.5,
    measured 0.4976), and a float32 network gets float32 feedback equal to the float64 draw
    rounded."""
    net = net2()
    dec = initial_feedback("decoders", net, scale=0.1, seed=3)
    assert len(dec) == 2
    for l, g in zip((2, 3), dec):
        assert g.V.shape == (2, WIDTHS[l - 1], WIDTHS[l]) and g.c.shape == (2, 1, WIDTHS[l - 1])
        assert g.activation is net.activation(l)
    Q = initial_feedback("direct", net, scale=0.1, seed=3)
    assert [tuple(q.shape) for q in Q] == [(2, 6, 3), (2, 5, 3)]
    again = initial_feedback("direct", net, scale=0.1, seed=3)
    other = initial_feedback("direct", net, scale=0.1, seed=4)
    double = initial_feedback("direct", net, scale=0.2, seed=3)
    dec2 = initial_feedback("decoders", net, scale=0.2, seed=3)
    for q, a, o, d in zip(Q, again, other, double):
        assert torch.equal(q, a) and (q - o).abs().max() > 1e-3
        assert torch.equal(d, 2 * q)
        assert (q[0] - q[1]).abs().max() > 1e-3
    for g, g2 in zip(dec, dec2):
        assert torch.equal(g2.V, 2 * g.V) and torch.equal(g2.c, 2 * g.c)
    big = ForwardNetwork([4, 20, 20, 50], "tanh", replicas=2)
    entries = torch.cat([q.flatten() for q in initial_feedback("direct", big, scale=0.5)])
    assert entries.numel() == 4000 and abs(entries.std().item() / 0.5 - 1) < 0.06
    net32 = ForwardNetwork(WIDTHS, "tanh", seed=[0, 1], dtype=torch.float32)
    Q32 = initial_feedback("direct", net32, scale=0.1, seed=3)
    for q32, q in zip(Q32, Q):
        assert q32.dtype == torch.float32 and torch.equal(q32, q.to(torch.float32))


@pytest.mark.parametrize("kind", ["decoder", "Q", None])
def test_initial_feedback_names_the_valid_kinds(kind):
    """A bad ``kind`` is a ValueError listing ``['decoders', 'direct']``."""
    with pytest.raises(ValueError, match=r"kind: received .*expected one of "
                                         r"\['decoders', 'direct'\]"):
        initial_feedback(kind, net2())


# -- LearnedFeedback ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["decoders", "direct"])
@pytest.mark.parametrize("warm", [True, False])
def test_learned_feedback_continues_from_call_to_call(kind, warm):
    """Two calls on two batches equal :func:`learn_feedback` chained by hand: from
    ``initial_feedback(kind, seed=seed, scale=init_scale)``, the first to the fixed point
    (``warm_start``) or for ``duration``, with noise seed ``noise_seed``, the second from the
    first's result for ``duration`` with ``noise_seed + 1`` (bit-identical). The second result
    is not what the same batch learns from the initial feedback (largest relative difference
    measured 0.27..6.9 > 1e-3): the second call really starts from the first."""
    net = net2()
    s = FeedbackLearning(duration=0.5, eta=1.0, warm_start=warm, init_scale=0.2)
    x1, x2 = randn(8, 4, seed=11), randn(8, 4, seed=12)
    fb = LearnedFeedback(kind, net, s, seed=7, noise_seed=30)
    first, second = fb(net, x1), fb(net, x2)
    assert fb.calls == 2 and fb.current is second
    g0 = initial_feedback(kind, net, scale=0.2, seed=7)
    h1 = learn_feedback(net, x1, g0, s, duration=math.inf if warm else None, seed=30)
    h2 = learn_feedback(net, x2, h1, s, seed=31)
    fresh = learn_feedback(net, x2, g0, s, seed=31)

    def mats(fbk):
        return [g.V for g in fbk] + [g.c for g in fbk] if kind == "decoders" else list(fbk)
    for a, b in zip(mats(first) + mats(second), mats(h1) + mats(h2)):
        assert torch.equal(a, b)
    assert max(rel(a, b) for a, b in zip(mats(second), mats(fresh))) > 1e-3


def test_learned_feedback_drives_target_propagation_at_each_presentation():
    """As ``feedback=`` of an online ``ddtp_linear`` circuit, a :class:`LearnedFeedback` is
    called once at construction and once per :meth:`TargetPropagation.present`, on the
    presented batch with the state's weights, and the circuit holds exactly what it returned."""
    net = net2()
    fb = LearnedFeedback("direct", net, FeedbackLearning(duration=0.5))
    x, t = randn(5, 4, seed=1), randn(5, 3, seed=2)
    c = TargetPropagation(net, x, t, rule="ddtp_linear", beta=0.1, feedback=fb,
                          online_gamma=0.0)
    assert fb.calls == 1
    for q, h in zip(c.feedback, fb.current):
        assert torch.equal(q, h)
    y = c.initial_state()
    y["W_2"] = y["W_2"] + 0.1 * randn(*y["W_2"].shape, seed=3)
    c.present(randn(5, 4, seed=4), randn(5, 3, seed=5), y)
    assert fb.calls == 2
    for q, h in zip(c.feedback, fb.current):
        assert torch.equal(q, h)


# -- TargetPropagation.present (online mode) -------------------------------------------------


def hand_forward(W, b, x):
    """Pre-activations ``h_ℓ = W_ℓ tanh(h_{ℓ-1}) + b_ℓ`` (``h_0 = x``, no tanh on it)."""
    h, r = [], x
    for l, (Wl, bl) in enumerate(zip(W, b)):
        h.append(r @ Wl.transpose(-1, -2) + bl)
        r = torch.tanh(h[-1])
    return h


def gauss_newton_feedback(W, b, x, damping):
    """``mean_B J̄_ℓᵀ(J̄_ℓJ̄_ℓᵀ + λI)⁻¹`` with ``J̄_ℓ = ∂h_L/∂h_ℓ`` by autograd, per replica."""
    out = []
    h = hand_forward(W, b, x)
    L = len(W)
    for l in range(1, L):
        per_replica = []
        for s in range(W[0].shape[0]):
            def up(v, s=s, l=l):
                for k in range(l, L):
                    v = torch.tanh(v) @ W[k][s].T + b[k][s, 0]
                return v
            Qs = []
            for hb in h[l - 1][s]:
                J = torch.autograd.functional.jacobian(up, hb)
                Qs.append(J.T @ torch.linalg.inv(J @ J.T + damping * torch.eye(J.shape[0],
                                                                                dtype=F64)))
            per_replica.append(torch.stack(Qs).mean(0))
        out.append(torch.stack(per_replica))
    return out


def moved(y, seed=20, size=0.2):
    """The state with every weight and bias moved (nonzero biases)."""
    out = dict(y)
    for i, k in enumerate(sorted(k for k in y if k[0] in "Wb")):
        out[k] = y[k] + size * randn(*y[k].shape, seed=seed + i)
    return out


def test_present_rebinds_to_the_state_weights_and_resets_targets_to_the_new_forward_pass():
    """``present(x', t', y)`` returns ``{tau_ℓ: h_ℓ}`` equal to the pre-activations of x' under
    y's weights computed by hand (≤ 1e-14; the old forward pass differs by ~0.1..1), recomputes
    the default Gauss-Newton Q at those weights and x' (against autograd Jacobians, ≤ 1e-12;
    it moved by ≥ 1e-2 from the old Q), and its vector field at the reset state equals a circuit
    built from scratch on y's weights and (x', t') (≤ 1e-13), including the online weight
    change. ``y=None`` rebinds to the weights the circuit holds."""
    net = net2()
    x, t = randn(5, 4, seed=1), randn(5, 3, seed=2)
    c = TargetPropagation(net, x, t, rule="ddtp_linear", beta=0.1, damping=1e-2,
                          online_gamma=0.05)
    y = moved(c.initial_state())
    old_Q, old_h = [q.clone() for q in c.feedback], [h.clone() for h in c.h]
    x2, t2 = randn(5, 4, seed=3), randn(5, 3, seed=4)
    reset = c.present(x2, t2, y)
    W = [y[f"W_{l}"] for l in (1, 2, 3)]
    b = [y[f"b_{l}"] for l in (1, 2, 3)]
    h = hand_forward(W, b, x2)
    assert sorted(reset) == ["tau_1", "tau_2", "tau_3"]
    for l, hl in enumerate(h, start=1):
        assert (reset[f"tau_{l}"] - hl).abs().max() < 1e-14
        assert (reset[f"tau_{l}"] - old_h[l - 1]).abs().max() > 0.05
    via = net.with_parameters(W, b).forward(x2).a
    for l in (1, 2, 3):
        assert torch.equal(reset[f"tau_{l}"], via[l - 1])
    for q, g, o in zip(c.feedback, gauss_newton_feedback(W, b, x2, 1e-2), old_Q):
        assert (q - g).abs().max() < 1e-12 and (q - o).abs().max() > 1e-2
    fresh = TargetPropagation(ForwardNetwork(WIDTHS, "tanh", weights=W, biases=b), x2, t2,
                              rule="ddtp_linear", beta=0.1, damping=1e-2, online_gamma=0.05)
    state = dict(y, **reset)
    state["tau_3"] = state["tau_3"] + 0.1 * randn(2, 5, 3, seed=8)     # the nudge under way
    got, ref = c.vector_field(0.0, state), fresh.vector_field(0.0, state)
    assert sorted(got) == sorted(state)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-13, atol=1e-15)
    assert got["W_1"].abs().max() > 1e-4
    again = c.present(x, t)                           # y=None: the weights held (y's)
    for l, hl in enumerate(hand_forward(W, b, x), start=1):
        assert (again[f"tau_{l}"] - hl).abs().max() < 1e-14


def test_present_keeps_given_feedback_and_calls_a_decoder_function():
    """Given Q's are held as they are across a presentation (bit-identical), and a decoder
    function is called with the state's weights (bit-identical to y's W_ℓ) and the new batch,
    its decoders becoming the circuit's."""
    net = net2()
    x, t = randn(5, 4, seed=1), randn(5, 3, seed=2)
    Q = initial_feedback("direct", net, seed=5)
    c = TargetPropagation(net, x, t, rule="ddtp_linear", beta=0.1, feedback=Q, online_gamma=0.0)
    c.present(randn(5, 4, seed=3), randn(5, 3, seed=4), moved(c.initial_state()))
    assert all(torch.equal(a, b) for a, b in zip(c.feedback, Q))
    seen = []

    def decoders(network, xb):
        seen.append((network, xb))
        return initial_feedback("decoders", network, seed=len(seen))
    d = TargetPropagation(net, x, t, rule="iterated_output", beta=0.1, decoders=decoders,
                          online_gamma=0.0)
    y = moved(d.initial_state())
    x2 = randn(5, 4, seed=3)
    d.present(x2, randn(5, 3, seed=4), y)
    assert len(seen) == 2
    network, xb = seen[1]
    assert all(torch.equal(network.weights[l - 1], y[f"W_{l}"]) for l in (1, 2, 3))
    assert all(torch.equal(network.biases[l - 1], y[f"b_{l}"]) for l in (1, 2, 3))
    assert torch.equal(xb, x2.expand(2, -1, -1))
    expected = initial_feedback("decoders", net, seed=2)
    assert all(torch.equal(g.V, e.V) for g, e in zip(d.decoders, expected))


def test_present_refuses_a_fixed_weight_circuit_a_missing_target_and_a_new_batch_size():
    """Not online: TypeError naming ``online_gamma``; target None: ValueError; another batch
    size: ValueError naming B."""
    net = net2()
    x, t = randn(5, 4, seed=1), randn(5, 3, seed=2)
    fixed = TargetPropagation(net, x, t, rule="ddtp_linear")
    with pytest.raises(TypeError, match=r"online_gamma=None.*online_gamma=0\.0"):
        fixed.present(x, t)
    online = TargetPropagation(net, x, t, rule="ddtp_linear", online_gamma=0.0)
    with pytest.raises(ValueError, match=r"target: received None, expected a target"):
        online.present(x, None)
    with pytest.raises(ValueError, match=r"received 4 and 4 examples, expected B = 5"):
        online.present(x[:4], t[:4])


# -- TargetPropagation.target_angles -------------------------------------------------------


def backprop_deltas(net, x, t):
    """``δ_ℓ = −∂ℒ/∂h_ℓ`` for ℒ = ½‖t − r_L‖² (summed over the batch), by autograd."""
    W, b = net.weights, net.biases
    h, r = [], net.input(x)
    for l in range(3):
        a = (r @ W[l].transpose(-1, -2) + b[l]).detach().requires_grad_(True)
        h.append(a)
        r = torch.tanh(a) if l < 2 else a
    # ℒ depends on h_ℓ only through the layers above: differentiate the chain from each h_ℓ
    out = []
    for l in range(3):
        v = h[l].detach().requires_grad_(True)
        u = v
        for k in range(l + 1, 3):
            u = torch.tanh(u) @ W[k].transpose(-1, -2) + b[k]
        loss = 0.5 * ((t - u) ** 2).sum()
        out.append(-torch.autograd.grad(loss, v)[0])
    return [a.detach() for a in h], out


def test_target_angles_vanish_for_the_backprop_and_gauss_newton_steps():
    """A state whose hidden targets are ``h_ℓ + 0.1 δ_ℓ`` (δ_ℓ by autograd) has backprop angle
    ≤ 1e-6° (measured 3e-14°/8e-14°) per replica and the opposite step 180° ± 1e-6; targets from
    :func:`gauss_newton_targets` (same damping) have Gauss-Newton angle ≤ 1e-6° while their
    backprop angle is 10°..90° (measured 62°/50°); a random state's angles lie in
    [0, 180] and equal arccos of the cosine computed by hand (1e-9°)."""
    net = net2()
    x, t = randn(5, 4, seed=1), randn(5, 3, seed=2)
    c = TargetPropagation(net, x, t, rule="ddtp_linear", beta=0.1)
    h, delta = backprop_deltas(net, x, t)
    base = c.initial_state()
    along = dict(base, tau_1=h[0] + 0.1 * delta[0], tau_2=h[1] + 0.1 * delta[1])
    back = dict(base, tau_1=h[0] - 0.1 * delta[0], tau_2=h[1] - 0.1 * delta[1])
    a, o = c.target_angles(along), c.target_angles(back)
    assert a["backprop"].shape == (2,)
    assert a["backprop"].abs().max() < 1e-6 and (o["backprop"] - 180).abs().max() < 1e-6
    gn = gauss_newton_targets(net, x, t, 0.1, damping=1e-2)
    g = c.target_angles(dict(base, tau_1=gn[0], tau_2=gn[1]), damping=1e-2)
    assert g["gauss_newton"].abs().max() < 1e-6
    assert ((g["backprop"] > 10) & (g["backprop"] < 90)).all(), g
    rnd = {k: v + 0.3 * randn(*v.shape, seed=40 + i) for i, (k, v) in enumerate(base.items())}
    r = c.target_angles(rnd)
    change = torch.cat([(rnd["tau_1"] - h[0]).flatten(1), (rnd["tau_2"] - h[1]).flatten(1)], 1)
    bp = torch.cat([delta[0].flatten(1), delta[1].flatten(1)], 1)
    cos = (change * bp).sum(1) / (change.norm(dim=1) * bp.norm(dim=1))
    torch.testing.assert_close(r["backprop"], torch.rad2deg(torch.arccos(cos)), rtol=0,
                               atol=1e-9)
    for v in r.values():
        assert ((v >= 0) & (v <= 180)).all()


# -- LocalDecoders read-outs -------------------------------------------------------------------


def local_circuit(dtype=F64):
    net = ForwardNetwork(WIDTHS, "tanh", output_activation="sigmoid", seed=[0, 1], dtype=dtype)
    x = randn(9, 4, seed=1)
    y = (randn(9, 3, seed=2) > 0).to(F64)
    c = LocalDecoders(net, x.to(dtype), y.to(dtype), eta=0.5)
    state = {k: v + 0.5 * randn(*v.shape, seed=60 + i).to(dtype)
             for i, (k, v) in enumerate(c.initial_state().items())}
    return c, state, x, y


def hand_readouts(state, x):
    """``[D_1 r_1, D_2 r_2, r_3]`` with ``r_ℓ = tanh(a_ℓ)/‖tanh(a_ℓ)‖`` and a sigmoid output."""
    r, out = x.to(state["W_1"].dtype), []
    for l in (1, 2, 3):
        a = r @ state[f"W_{l}"].transpose(-1, -2) + state[f"b_{l}"]
        if l < 3:
            r = F.normalize(torch.tanh(a), dim=-1)
            out.append(r @ state[f"D_{l}"].transpose(-1, -2))
        else:
            out.append(torch.sigmoid(a))
    return out


def test_local_decoder_readouts_and_outputs_equal_the_hand_computed_decodings():
    """``readouts(y)`` (the bound batch) and ``readouts(y, x')`` are ``[D_1 r_1, D_2 r_2, r_L]``
    computed by hand from the state (≤ 1e-14), each ``[S, B, n_y]``; ``outputs(y, x')`` is
    ``forward(y, x')[-1]`` bit for bit, shape ``[S, M, n_L]``."""
    c, state, x, _ = local_circuit()
    x2 = randn(7, 4, seed=3)
    for xs, got in ((x, c.readouts(state)), (x2, c.readouts(state, x2))):
        ref = hand_readouts(state, xs)
        assert len(got) == 3
        for g, r in zip(got, ref):
            assert g.shape == (2, xs.shape[0], 3)
            assert (g - r).abs().max() < 1e-14
    out = c.outputs(state, x2)
    assert out.shape == (2, 7, 3) and torch.equal(out, c.forward(state, x2)[-1])


def test_local_decoder_readout_accuracy_is_the_hand_count():
    """``readout_accuracy(y, x', t')`` is ``[L, S]`` = (hits at threshold ½)/(B n_y) counted
    here, equal exactly (strictly between 0 and 1 somewhere, so neither all-right nor
    all-wrong passes); the default is the bound batch; in a float32 circuit the result is still
    float64 and still the exact count; x alone is a ValueError."""
    for dtype in (F64, torch.float32):
        c, state, x, y = local_circuit(dtype)
        x2, t2 = randn(8, 4, seed=5), (randn(8, 3, seed=6) > 0).to(F64)
        for xs, ts, acc in ((x, y, c.readout_accuracy(state)),
                            (x2, t2, c.readout_accuracy(state, x2, t2))):
            hits = torch.stack([((o > 0.5) == (ts > 0.5)).sum((-2, -1))
                                for o in hand_readouts(state, xs)])
            assert acc.dtype == F64 and acc.shape == (3, 2)
            assert torch.equal(acc, hits.to(F64) / ts.numel())
            assert ((acc > 0) & (acc < 1)).any()
    with pytest.raises(ValueError, match=r"x, target: received x alone, expected both"):
        c.readout_accuracy(state, x2)


# -- circuits.registry.learning_circuit -----------------------------------------------------


def registry_problem(method):
    x, y = randn(6, 4, seed=7), randn(6, 3, seed=8)
    if method == "iterated_dtp":           # square layers: decoders invert them
        net = ForwardNetwork([4, 4, 4, 4], "tanh", init="orthogonal", scale=0.5, seed=[0, 1])
        return net, 0.3 * x, 0.1 * x
    if method == "local_decoders":
        net = ForwardNetwork(WIDTHS, "tanh", output_activation="sigmoid", seed=[0, 1])
        return net, x, (y > 0).to(F64)
    return ForwardNetwork(WIDTHS, "tanh", seed=[0, 1]), x, y


@pytest.mark.parametrize("method", METHODS)
def test_every_registered_method_builds_a_learning_circuit(method):
    """Each name of ``METHODS`` builds on a 2-replica network: the vector field at the initial
    state has the state's keys and shapes, is finite and not identically zero; ``outputs(y,
    x')`` is ``[S, M, n_L]`` and, with the state's weights moved, equals the network rebuilt
    from those weights (≤ 1e-14; local decoders: their own normalised forward pass)."""
    net, x, target = registry_problem(method)
    c = learning_circuit(method, net, x, target)
    y = c.initial_state()
    d = c.vector_field(0.0, y)
    assert sorted(d) == sorted(y)
    for k in y:
        assert d[k].shape == y[k].shape and d[k].dtype == F64, k
        assert torch.isfinite(d[k]).all(), k
    assert max(v.abs().max().item() for v in d.values()) > 1e-3
    x2 = 0.5 * randn(5, 4, seed=9)
    ym = moved(y, seed=80)
    out = c.outputs(ym, x2)
    n_L = net.widths[-1]
    assert out.shape == (2, 5, n_L)
    if method == "local_decoders":
        ref = hand_readouts(ym, x2)[-1]
    else:
        ref = ForwardNetwork(net.widths, "tanh", weights=[ym[f"W_{l}"] for l in (1, 2, 3)],
                             biases=[ym[f"b_{l}"] for l in (1, 2, 3)]).forward(x2).r[-1]
    assert (out - ref).abs().max() < 1e-14
    assert (out - c.outputs(y, x2)).abs().max() > 1e-3


def test_an_unknown_method_lists_the_registered_ones():
    """An unknown name is a ValueError whose message lists every name of ``METHODS``."""
    net, x, t = registry_problem("backprop")
    with pytest.raises(ValueError, match=r"method: received 'dtp', expected one of") as err:
        learning_circuit("dtp", net, x, t)
    assert str(list(METHODS)) in str(err.value)


def test_flow_to_infinity_without_decay_keeps_the_start_in_the_null_space():
    """λ = 0 and fewer examples than regressors: A is singular, every Θ with ΘA = C is fixed,
    and the flow keeps the start's null-space part. ``flow(math.inf)`` is then the limit of
    ``flow(t)`` (measured: 9e-10 relative to t = 1e6), not an arbitrary solution of ΘA = C."""
    import math as _math
    from circuits import ReconstructionLearning as _RL, initial_feedback as _init
    net = ForwardNetwork([4, 6, 5, 3], "tanh", seed=0)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = _RL(net, x, _init("decoders", net, scale=0.3, seed=2), eta=1.0)
    far, limit = c.flow(1e6), c.flow(_math.inf)
    for k in far:
        assert ((far[k] - limit[k]).norm() / far[k].norm()).item() < 1e-8
