"""Feedback learning as dynamics: decoders and direct feedback trained by gradient flow on one
batch while the forward weights stay fixed (SPEC §4, §5).

Both rules below are, for a fixed batch, the gradient flow of a ridge regression of the feedback
parameters Θ_ℓ, so they share one vector field and one closed-form fixed point:

    dΘ_ℓ/dt = −η (Θ_ℓ A_ℓ − C_ℓ + λ Θ_ℓ),        Θ_ℓ* = C_ℓ (A_ℓ + λI)⁻¹

(A_ℓ a regressor second moment, C_ℓ a cross moment, per replica). What differs is what is
regressed on what:

* :class:`ReconstructionLearning` (Bengio 2020's auto-encoder rule for a mirrored decoder
  ``g_ℓ(h) = V_ℓ φ_ℓ(h) + c_ℓ``): the noise-corrupted activity ``h̃_{ℓ-1} = h_{ℓ-1} + ξ`` is
  reconstructed from ``r = φ_ℓ(f_ℓ(h̃_{ℓ-1}))``:
  ``dΘ/dt = η mean_b (h̃_{ℓ-1} − V r − c)[r; 1]ᵀ / ‖r‖`` with ``Θ = [V | c]`` — SPEC §4's
  ``Ω += β (h_{ℓ-1} − g(h_ℓ)) σ(h_ℓ)ᵀ/‖σ(h_ℓ)‖`` as a flow. Fixed point: the least-squares decoder
  with example weights 1/‖r‖; on a linear, invertible layer it is the exact inverse.
* :class:`DifferenceReconstruction` (Meulemans et al. 2020's difference reconstruction loss for
  direct linear feedback ``Q_ℓ: n_L → n_ℓ``, SPEC §5): noise ξ ~ σ is injected at layer ℓ, the
  output moves by ``Δa_L = F_ℓ(h_ℓ + ξ) − h_L`` (the network from layer ℓ up), and
  ``dQ_ℓ/dt = −η [mean (Q_ℓ Δa_L − ξ) Δa_Lᵀ/σ² + λ Q_ℓ]``. Fixed point
  ``Q_ℓ* = C(A + λI)⁻¹`` with ``A = mean Δa Δaᵀ/σ²`` and ``C = mean ξ Δaᵀ/σ²``: as σ → 0 and with
  isotropic noise (``noise="orthogonal"`` makes ``mean ξξᵀ = σ²I`` exactly with 2n antithetic
  samples) this is ``J̄_ℓᵀ(J̄_ℓ J̄_ℓᵀ + λI)⁻¹``, the damped pseudo-inverse that makes DDTP-linear
  targets Gauss-Newton targets (one example; on a batch the moments are averaged, ``mean_b
  J_bᵀ (mean_b J_b J_bᵀ + λI)⁻¹``).

  Both conventions of :class:`TargetPropagation` (``convention=``, SPEC §5 "Convention"):
  ``"pre"`` (default) injects ξ into the pre-activation ``a_ℓ`` and measures ``Δa_L`` (J̄ =
  ∂a_L/∂a_ℓ); ``"post"`` (Meulemans et al.'s own setting) injects it into the rate ``r_ℓ`` and
  measures ``Δr_L = r_L(r_ℓ + ξ) − r_L`` (J̄ = ∂r_L/∂r_ℓ, :func:`post_output_jacobians`), so
  post-activation DDTP-linear learns its Q by dynamics too. Post-activation *decoders* are not
  learned here (their DRL is not a ridge regression for a nonlinear ψ).

The noise is drawn once per circuit (``seed``), so the vector field is an ordinary, autonomous,
resumable ODE; build a new circuit (another seed) for the next batch. The flow is affine in Θ,
so :meth:`RegressionFlow.flow` gives its exact solution after any time (no stepping, no solver).

Feedback learned *between* presentations (SPEC §4's decoders trained while the forward weights
hold still, then used for one example's targets), for a script or a learning circuit:

* :func:`initial_feedback` — seeded random decoders or Q's to start from;
* :func:`learn_feedback` — one batch of the rule from the current feedback, for a given time
  (or to its fixed point), with :class:`FeedbackLearning`'s settings;
* :class:`LearnedFeedback` — a function ``(network, x) → feedback`` that learns on every batch it
  is shown: pass it as ``decoders=`` / ``feedback=`` of :class:`TargetPropagation` or as
  ``feedback=`` of :class:`circuits.Targets`, which call it at each presentation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .circuit import Circuit, State
from .feedback import per_seed, replica_seeds
from .network import ForwardNetwork
from .parameters import (Population, Role, check_finite_tensor, check_real_tensor,
                         given_matrices, positive_float)
from .target_propagation import MirroredDecoder, _check_convention, _layer_map

NOISES = ("gaussian", "orthogonal")


def _nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
            or value == float("inf"):
        raise ValueError(f"{name}: received {value!r}, expected a finite number ≥ 0")
    return float(value)


def _count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: received {value!r}, expected an integer ≥ {minimum}")
    return value


def _fit(seeds: list[int], replicas: int) -> list[int]:
    """The per-replica seeds for a batch of ``replicas`` replicas: the circuit's S of them, or
    the one seed of an S = 1 network whose input is ``[S, B, n_0]``."""
    return seeds if len(seeds) == replicas else seeds * replicas if len(seeds) == 1 else seeds


def noise_samples(shape: tuple[int, ...], sigma: float, kind: str, samples: int,
                  generator: torch.Generator, dtype, device) -> torch.Tensor:
    """``[K, *shape]`` noise of scale σ on the last axis (width n): ``gaussian`` draws K samples
    N(0, σ²I); ``orthogonal`` gives K = 2n antithetic samples ±σ√n·(random rotation)·e_i, whose
    second moment is exactly σ²I for every example."""
    n = shape[-1]
    if kind == "gaussian":
        xi = torch.randn(samples, *shape, generator=generator, dtype=torch.float64)
    elif kind == "orthogonal":
        lead = shape[:-1]
        q, _ = torch.linalg.qr(torch.randn(*lead, n, n, generator=generator,
                                           dtype=torch.float64))
        basis = q.movedim(-1, 0) * n ** 0.5                     # [n, *lead, n], columns of q
        xi = torch.cat([basis, -basis])
    else:
        raise ValueError(f"noise: received {kind!r}, expected one of {list(NOISES)}")
    return (sigma * xi).to(dtype=dtype, device=device)


class RegressionFlow(Circuit):
    """Gradient flow ``dΘ_ℓ/dt = −η (Θ_ℓ A_ℓ − C_ℓ + λ Θ_ℓ)`` of per-layer, per-replica ridge
    regressions (subclasses set ``self.moments = {name: (A, C)}`` and the initial Θ's)."""

    moments: dict[str, tuple[torch.Tensor, torch.Tensor]]
    theta0: dict[str, torch.Tensor]

    def initial_state(self) -> State:
        return {k: v.clone() for k, v in self.theta0.items()}

    def vector_field(self, t: float, y: State) -> State:
        return {k: -self.eta * (y[k] @ A - C + self.decay * y[k])
                for k, (A, C) in self.moments.items()}

    def flow(self, duration: float, y0: State | None = None) -> State:
        """The exact state after ``duration`` from ``y0`` (default :meth:`initial_state`);
        ``math.inf`` gives :meth:`fixed_point`. Θ̇ = −ηΘM + ηC (M = A + λI) is affine, so
        ``[Θ(t), I] = [Θ(0), I] · exp(t [[−ηM, 0], [ηC, 0]])``: one ``matrix_exp`` per layer,
        exact whatever the stiffness, and no inverse of M (λ = 0 with a singular A is fine)."""
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) \
                or not duration >= 0:
            raise ValueError(f"duration: received {duration!r}, expected a number ≥ 0 (the "
                             "time the rule runs; math.inf for its fixed point)")
        if math.isinf(duration):
            return self.fixed_point(y0)
        y0 = self.initial_state() if y0 is None else y0
        out = {}
        for k, (A, C) in self.moments.items():
            n, p = A.shape[-1], C.shape[-2]
            G = torch.zeros(*A.shape[:-2], n + p, n + p, dtype=A.dtype, device=A.device)
            eye = torch.eye(n, dtype=A.dtype, device=A.device)
            G[..., :n, :n] = -self.eta * duration * (A + self.decay * eye)
            G[..., n:, :n] = self.eta * duration * C
            E = torch.linalg.matrix_exp(G)
            out[k] = y0[k] @ E[..., :n, :n] + E[..., n:, :n]
        return out

    def fixed_point(self, y0: State | None = None) -> State:
        """What the flow from ``y0`` (default :meth:`initial_state`) settles to, every layer:
        ``Θ_ℓ* = C_ℓ (A_ℓ + λI)⁻¹`` for λ > 0 (unique). For λ = 0 with a singular moment
        matrix A (fewer examples than regressors) every Θ with ``ΘA = C`` is fixed, and the flow
        keeps the part of ``y0`` in A's null space: ``Θ* = y0 (I − A A⁺) + C A⁺``."""
        out = {}
        start = None
        for k, (A, C) in self.moments.items():
            eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
            if self.decay > 0:
                out[k] = torch.linalg.solve(A + self.decay * eye, C, left=False)
                continue
            if start is None:
                start = self.initial_state() if y0 is None else y0
            pinv = torch.linalg.pinv(A, hermitian=True)
            out[k] = start[k] @ (eye - A @ pinv) + C @ pinv
        return out


class ReconstructionLearning(RegressionFlow):
    """Bengio's auto-encoder rule for mirrored decoders ``g_2..g_L`` on one batch ``x``.

    Args:
        network: the forward network (fixed here).  x: input ``[B, n_0]`` (``check=False``:
            finite already, checked for shape only).
        decoders: initial ``[g_2, ..., g_L]`` (:class:`MirroredDecoder` with biases c).
        eta: rate η.  decay: weight decay λ ≥ 0.
        noise: σ of the Gaussian corruption of ``h_{ℓ-1}`` (0: none).  seed: the noise's seed,
            an int (every replica the same noise) or S ints (replica s's from ``seed[s]``, as
            an S = 1 circuit with that int draws it; :mod:`circuits.feedback`'s seed rule).

    State: ``theta_ℓ = [V_ℓ | c_ℓᵀ]`` of shape ``[S, n_{ℓ-1}, n_ℓ + 1]``; :meth:`decoders`
    reads the decoders back from a state.
    """

    def __init__(self, network: ForwardNetwork, x: torch.Tensor,
                 decoders: Sequence[MirroredDecoder], *, eta: float = 1.0, decay: float = 0.0,
                 noise: float = 0.0, seed: int = 0, check: bool = True):
        self._bind(network)
        net = self.network
        self.eta = positive_float("eta", eta)
        self.decay = _nonnegative("decay", decay)
        sigma = _nonnegative("noise", noise)
        seeds = replica_seeds("seed", seed, self.S)
        if not isinstance(check, bool):
            raise ValueError(f"check: received {check!r}, expected True or False")
        if not isinstance(decoders, (list, tuple)) or len(decoders) != net.L - 1 or not all(
                isinstance(g, MirroredDecoder) and g.c is not None for g in decoders):
            raise ValueError(f"decoders: received {type(decoders).__name__}"
                             f"{' of %d' % len(decoders) if hasattr(decoders, '__len__') else ''}"
                             f", expected {net.L - 1} MirroredDecoder objects with biases "
                             "[g_2, ..., g_L]")
        for i, g in enumerate(decoders):
            for part, value in (("V", g.V), ("c", g.c)):
                (check_finite_tensor if check else check_real_tensor)(
                    f"decoders[{i}].{part}", value, (2, 3))
            n_in = net.widths[i + 1]
            if tuple(g.c.shape[-2:]) != (1, n_in):
                raise ValueError(f"decoders[{i}].c: received shape {tuple(g.c.shape)}, expected "
                                 f"[S, 1, {n_in}] (layer {i + 2} → {i + 1})")
        fwd = net.forward(net.input(x, check_finite=check), prepared=True)
        corruption = None
        if sigma:      # replica s's noise from its own seed, layer after layer (seed rule)
            corruption = per_seed(_fit(seeds, fwd.a[0].shape[0]), lambda g: [
                torch.randn(a.shape[1:], generator=g, dtype=torch.float64) for a in fwd.a[:-1]])
        self.moments, self.theta0, self.populations, self._activations = {}, {}, [], {}
        for l, g in enumerate(decoders, start=2):
            n_in, n = net.widths[l - 1], net.widths[l]
            if tuple(g.V.shape[-2:]) != (n_in, n):
                raise ValueError(f"decoders[{l - 2}].V: received shape {tuple(g.V.shape)}, "
                                 f"expected [S, {n_in}, {n}] (layer {l} → {l - 1})")
            h_below = fwd.a[l - 2]
            if corruption is not None:
                h_below = h_below + sigma * corruption[l - 2].to(h_below)
            r = net.activation(l).phi(net.layer(l, h_below))
            R = torch.cat([r, torch.ones_like(r[..., :1])], dim=-1)        # [S, B, n + 1]
            w = 1 / r.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(r.dtype).tiny)
            B = r.shape[-2]
            self.moments[f"theta_{l}"] = ((R * w).transpose(-1, -2) @ R / B,
                                          (h_below * w).transpose(-1, -2) @ R / B)
            V = g.V.expand(self.S, -1, -1).to(net.dtype)
            c = g.c.expand(self.S, -1, -1).to(net.dtype)
            self.theta0[f"theta_{l}"] = torch.cat([V, c.transpose(-1, -2)], dim=-1)
            self._activations[l] = g.activation
            self.populations.append(Population(f"theta_{l}", Role.FEEDBACK, n_in, l))

    def decoders(self, y: State) -> list[MirroredDecoder]:
        """The decoders ``g_2..g_L`` a state holds."""
        return [MirroredDecoder(y[f"theta_{l}"][..., :-1],
                                y[f"theta_{l}"][..., -1:].transpose(-1, -2), act)
                for l, act in self._activations.items()]


class DifferenceReconstruction(RegressionFlow):
    """The DRL rule for direct feedback ``Q_1..Q_{L-1}`` (``[S, n_ℓ, n_L]``) on one batch.

    In the activities ``h_ℓ`` of ``convention`` (``"pre"``: ``h_ℓ = a_ℓ``; ``"post"``: ``h_ℓ =
    r_ℓ = φ_ℓ(a_ℓ)``), K noise samples ξ per example are injected at layer ℓ and carried to the
    output by the network from layer ℓ up, ``F_ℓ = f_L ∘ … ∘ f_{ℓ+1}`` with ``f_k(h) =
    W_k φ_{k-1}(h) + b_k`` (pre) or ``f_k(h) = φ_k(W_k h + b_k)`` (post):

        Δ = F_ℓ(h_ℓ + ξ) − h_L,   A_ℓ = mean_{K,B} ΔΔᵀ/σ²,   C_ℓ = mean_{K,B} ξΔᵀ/σ²,
        dQ_ℓ/dt = −η (Q_ℓ A_ℓ − C_ℓ + λ Q_ℓ),   Q_ℓ* = C_ℓ (A_ℓ + λI)⁻¹.

    With ``noise="orthogonal"`` (``mean_K ξ = 0``, ``mean_K ξξᵀ = σ²I`` per example) ``Δ = J_b ξ
    + O(σ²)`` and the odd terms cancel, so ``Q_ℓ* = mean_b J_bᵀ (mean_b J_b J_bᵀ + λI)⁻¹ +
    O(σ²)`` with ``J_b = ∂h_L/∂h_ℓ`` at example b (pre: :meth:`ForwardNetwork.output_jacobians`;
    post: :func:`post_output_jacobians`): for one example, or a linear network, the damped
    pseudo-inverse ``J̄ᵀ(J̄J̄ᵀ + λI)⁻¹``, which makes DDTP-linear's targets (in the same
    convention) Gauss-Newton targets. The two conventions coincide on a linear network.

    Args:
        network: the forward network (fixed here).  x: input ``[B, n_0]`` (``check=False``:
            finite already, checked for shape only).
        sigma: noise scale σ.  damping: λ (the fixed point's damping).  eta: rate η.
        noise: ``"orthogonal"`` (2n antithetic samples, second moment exactly σ²I) or
            ``"gaussian"`` (``samples`` draws).  seed: the noise's seed, an int (every replica
            the same noise) or S ints (replica s's from ``seed[s]``; the seed rule of
            :mod:`circuits.feedback`).
        feedback: initial Q's (default zeros).
        convention: ``"pre"`` (default: noise into ``a_ℓ``, output change ``Δa_L``) or
            ``"post"`` (noise into ``r_ℓ``, output change ``Δr_L``; Meulemans et al. 2020).
    """

    def __init__(self, network: ForwardNetwork, x: torch.Tensor, *, sigma: float = 1e-3,
                 damping: float = 1e-3, eta: float = 1.0, noise: str = "orthogonal",
                 samples: int = 64, seed: int = 0,
                 feedback: Sequence[torch.Tensor] | None = None, check: bool = True,
                 convention: str = "pre"):
        self.convention = _check_convention(convention)
        self._bind(network)
        net = self.network
        sigma = positive_float("sigma", sigma)
        self.decay = _nonnegative("damping", damping)
        self.eta = positive_float("eta", eta)
        samples = _count("samples", samples)
        seeds = replica_seeds("seed", seed, self.S)
        if noise not in NOISES:
            raise ValueError(f"noise: received {noise!r}, expected one of {list(NOISES)}")
        shapes = [(n, net.widths[-1]) for n in net.widths[1:-1]]
        if feedback is not None:
            feedback = given_matrices("feedback", feedback, shapes, self.S, net.dtype,
                                      net.device, "None", finite=check)
        fwd = net.forward(net.input(x, check_finite=check), prepared=True)
        hs = fwd.a if self.convention == "pre" else fwd.r[1:]          # h_ℓ, ℓ = 1..L
        f = _layer_map(net, self.convention)                            # f_k: h_{k-1} → h_k
        # replica s's noise from its own seed, layer after layer (the seed rule)
        xis = per_seed(_fit(seeds, hs[0].shape[0]), lambda g: [
            noise_samples(tuple(hs[l - 1].shape[1:]), sigma, noise, samples, g, net.dtype,
                          net.device) for l in range(1, len(shapes) + 1)])
        self.moments, self.theta0, self.populations = {}, {}, []
        for l, (n, m) in enumerate(shapes, start=1):
            h = hs[l - 1]
            xi = xis[l - 1].movedim(0, 1)                                # [K, S, B, n_ℓ]
            out = h + xi
            for k in range(l + 1, net.L + 1):                           # F_ℓ(h_ℓ + ξ)
                out = f(k, out)
            delta = out - hs[-1]                                        # [K, S, B, n_L]
            K, B = xi.shape[0], h.shape[-2]
            xi, delta = xi.movedim(0, -2).flatten(-3, -2), delta.movedim(0, -2).flatten(-3, -2)
            self.moments[f"Q_{l}"] = (delta.transpose(-1, -2) @ delta / (K * B * sigma ** 2),
                                      xi.transpose(-1, -2) @ delta / (K * B * sigma ** 2))
            self.theta0[f"Q_{l}"] = torch.zeros(self.S, n, m, dtype=net.dtype,
                                                 device=net.device) \
                if feedback is None else feedback[l - 1]
            self.populations.append(Population(f"Q_{l}", Role.FEEDBACK, n, l))

    def feedback(self, y: State) -> list[torch.Tensor]:
        """``[Q_1, ..., Q_{L-1}]`` of a state, ready for ``TargetPropagation(feedback=...)``."""
        return [y[k] for k in self.moments]


FEEDBACK_KINDS = ("decoders", "direct")


@dataclass(frozen=True)
class FeedbackLearning:
    """How feedback learns on each presented batch while the forward weights hold still.

    duration: how long the rule runs on a batch (time units; ``math.inf``: to its fixed point).
    eta: its rate η.  warm_start: on the first batch, go straight to the rule's fixed point (the
    limit of a long warm-up; random decoders make the first settles diverge).  noise: σ of the
    decoders' input corruption (:class:`ReconstructionLearning`).  sigma: the injected noise of
    the difference reconstruction rule (:class:`DifferenceReconstruction`).  damping: λ, the
    DRL damping and the decoders' weight decay (with fewer examples than regressors the decoder
    regression is singular without it).  init_scale: std of the random initial feedback.
    """

    duration: float = 2.0
    eta: float = 2.0
    warm_start: bool = True
    noise: float = 0.05
    sigma: float = 0.01
    damping: float = 0.01
    init_scale: float = 0.1

    def __post_init__(self):
        for name in ("duration", "eta", "sigma", "damping", "init_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 \
                    or (math.isinf(v) and name != "duration"):
                raise ValueError(f"feedback.{name}: received {v!r}, expected a "
                                 + ("number > 0 (math.inf: the fixed point)"
                                    if name == "duration" else "finite number > 0"))
        _nonnegative("feedback.noise", self.noise)
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"feedback.warm_start: received {self.warm_start!r}, expected "
                             "true or false")


def initial_feedback(kind: str, network: ForwardNetwork, *, scale: float = 0.1, seed: int = 0
                     ) -> list[MirroredDecoder] | list[torch.Tensor]:
    """Random feedback to start learning from, entries N(0, scale²) drawn in float64 from
    ``seed`` (then cast to the network's dtype and device), S = ``network.replicas``; ``seed``
    is an int, whose replica s starts from seed ``seed + s`` (the replicas of a training run are
    its seeds, so each starts from feedback of its own; replica 0's is the S = 1 draw), or S
    ints (replica s's from ``seed[s]``, as an S = 1 network with that int gets it):

    * ``kind="decoders"``: mirrored decoders ``[g_2, ..., g_L]``, ``g_ℓ(h) = V_ℓ φ_ℓ(h) + c_ℓ``
      with ``V_ℓ [S, n_{ℓ-1}, n_ℓ]`` and ``c_ℓ [S, 1, n_{ℓ-1}]`` (for the decoder rules of
      :class:`TargetPropagation`: ``iterated_output``, ``dtp``, ...);
    * ``kind="direct"``: direct feedback ``[Q_1, ..., Q_{L-1}]``, ``Q_ℓ [S, n_ℓ, n_L]``
      (``ddtp_linear``, ``dfa``).
    """
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"kind: received {kind!r}, expected one of {list(FEEDBACK_KINDS)}")
    scale = positive_float("scale", scale)
    S, w = network.replicas, network.widths
    seeds = replica_seeds("seed", seed, S)
    if isinstance(seed, int) and S > 1:               # an int: one start per replica
        seeds = [seed + r for r in range(S)]
    if kind == "decoders":        # V_2, c_2, V_3, c_3, ... per replica
        shapes = [s for l in range(2, network.L + 1) for s in ((w[l - 1], w[l]), (1, w[l - 1]))]
    else:
        shapes = [(n, w[-1]) for n in w[1:-1]]
    mats = [(scale * m).to(dtype=network.dtype, device=network.device) for m in per_seed(
        seeds, lambda g: [torch.randn(*shape, generator=g, dtype=torch.float64)
                          for shape in shapes])]
    if kind == "decoders":
        return [MirroredDecoder(mats[2 * i], mats[2 * i + 1], network.activation(l))
                for i, l in enumerate(range(2, network.L + 1))]
    return mats


def _decoders_pre(convention: str) -> None:
    if convention != "pre":
        raise ValueError(f"convention: received {convention!r} for decoders, expected 'pre': "
                         "post-activation decoders are not learned by dynamics (their DRL is "
                         "not a ridge regression for a nonlinear ψ); only direct feedback Q "
                         "(kind 'direct', DDTP-linear) is")


def learn_feedback(network: ForwardNetwork, x: torch.Tensor,
                   current: Sequence[MirroredDecoder] | Sequence[torch.Tensor],
                   settings: FeedbackLearning | None = None, *, duration: float | None = None,
                   seed: int = 0, check: bool = True, convention: str = "pre"
                   ) -> list[MirroredDecoder] | list[torch.Tensor]:
    """The feedback after its rule has run on batch ``x`` (``[B, n_0]`` or ``[S, B, n_0]``) for
    ``duration`` (default ``settings.duration``; ``math.inf``: its fixed point), starting from
    ``current`` and with ``network``'s weights held still (exact flow,
    :meth:`RegressionFlow.flow`). Mirrored decoders (with biases) learn by the auto-encoder rule
    (:class:`ReconstructionLearning`), a list of ``Q_ℓ`` tensors by the difference
    reconstruction rule (:class:`DifferenceReconstruction`); the result has ``current``'s
    form. ``seed``: the rule's noise. ``check=False``: ``x`` was checked already (finite), as a
    drive's batches are at their first presentation: no host synchronisation. ``convention``:
    the activities the direct feedback is learned on, ``"pre"`` (``a_ℓ``) or ``"post"``
    (``r_ℓ``, for ``TargetPropagation(convention="post")``); decoders learn in ``"pre"`` only."""
    _check_convention(convention)
    s = FeedbackLearning() if settings is None else settings
    if not isinstance(s, FeedbackLearning):
        raise TypeError(f"settings: received {type(s).__name__}, expected a "
                        "circuits.FeedbackLearning or None")
    t = s.duration if duration is None else duration
    if isinstance(current, (list, tuple)) and current and all(
            isinstance(g, MirroredDecoder) for g in current):
        _decoders_pre(convention)
        c = ReconstructionLearning(network, x, current, eta=s.eta, decay=s.damping,
                                   noise=s.noise, seed=seed, check=check)
        return c.decoders(c.flow(t))
    if isinstance(current, (list, tuple)) and current and all(
            isinstance(q, torch.Tensor) for q in current):
        c = DifferenceReconstruction(network, x, sigma=s.sigma, damping=s.damping, eta=s.eta,
                                     feedback=current, seed=seed, check=check,
                                     convention=convention)
        return c.feedback(c.flow(t))
    raise ValueError(f"current: received {type(current).__name__}, expected a list of "
                     "MirroredDecoder (decoders) or of tensors [S, n_ℓ, n_L] (direct feedback), "
                     "e.g. from circuits.initial_feedback")


class LearnedFeedback:
    """Feedback that learns on every batch it is shown: a function ``(network, x) → feedback``
    for :class:`TargetPropagation` (``decoders=`` or ``feedback=``) or :class:`circuits.Targets`
    (``feedback=``), which call it when an example is presented and hold the result while it is
    shown (feedback learns between examples, the forward weights hold still meanwhile).

    Each call runs :func:`learn_feedback` on ``(network, x)`` from the feedback of the previous
    call (the first from :func:`initial_feedback` ``(kind, network, seed=seed)``, straight to the
    fixed point if ``settings.warm_start``), with the noise seed ``noise_seed + calls so far``,
    in ``convention``.

    Args:
        kind: ``"decoders"`` (mirrored decoders, the auto-encoder rule) or ``"direct"``
            (``Q_ℓ``, the difference reconstruction rule).
        network: the forward network (its widths, activations, S, dtype and device).
        settings: :class:`FeedbackLearning` (default: its defaults).
        seed: the initial feedback's seed.  noise_seed: the first batch's noise seed.
        convention: ``"pre"`` (default) or ``"post"``: the activities the feedback learns on,
            to match the :class:`TargetPropagation` it feeds; ``"post"`` for ``"direct"`` only
            (the rule injects noise into the rates ``r_ℓ`` and measures ``Δr_L``).

    ``current`` holds the latest feedback and ``calls`` the batches learned so far (neither is
    part of an integration's state: a run resumed from a checkpoint restarts them).
    """

    def __init__(self, kind: str, network: ForwardNetwork,
                 settings: FeedbackLearning | None = None, *, seed: int = 1,
                 noise_seed: int = 1000, convention: str = "pre"):
        self.convention = _check_convention(convention)
        if kind == "decoders":
            _decoders_pre(convention)
        self.settings = FeedbackLearning() if settings is None else settings
        if not isinstance(self.settings, FeedbackLearning):
            raise TypeError(f"settings: received {type(self.settings).__name__}, expected a "
                            "circuits.FeedbackLearning or None")
        self.kind = kind
        self.current = initial_feedback(kind, network, scale=self.settings.init_scale,
                                        seed=seed)
        self.noise_seed, self.calls = noise_seed, 0

    def __call__(self, network: ForwardNetwork, x: torch.Tensor):
        warm = self.settings.warm_start and self.calls == 0
        # the first call checks x and the initial feedback; later ones learn from the feedback
        # this object made itself, on a drive's batches (checked when first shown), so a
        # replica whose weights diverged passes its non-finite feedback on to be flagged
        self.current = learn_feedback(network, x, self.current, self.settings,
                                      duration=math.inf if warm else None,
                                      seed=self.noise_seed + self.calls,
                                      check=self.calls == 0, convention=self.convention)
        self.calls += 1
        return self.current

    def __repr__(self) -> str:
        post = "" if self.convention == "pre" else f", convention={self.convention!r}"
        return f"LearnedFeedback({self.kind!r}, calls={self.calls}{post})"


__all__ = ["RegressionFlow", "ReconstructionLearning", "DifferenceReconstruction",
           "FeedbackLearning", "FEEDBACK_KINDS", "initial_feedback", "learn_feedback",
           "LearnedFeedback", "noise_samples"]
