"""Target propagation as settling dynamics (Bengio 2020; Meulemans et al. 2020; SPEC §4, §5).

Activities are the pre-activations of :class:`ForwardNetwork`, ``h_ℓ = f_ℓ(h_{ℓ-1}) =
W_ℓ φ_{ℓ-1}(h_{ℓ-1}) + b_ℓ`` (φ_0 the identity, so ``h_0 = x``). Each layer ℓ ≥ 2 has a decoder
``g_ℓ ≈ f_ℓ⁻¹`` (:class:`MirroredDecoder`, :class:`InverseDecoder`). Target populations
``τ_ℓ`` (ℓ = 1..L) settle, all layers in parallel, with time constant T:

    T dτ_L/dt     = h_L + β δ_L − τ_L                          the output nudge (δ_L = −∂ℒ/∂h_L)
    iterated_output:  T dτ_{ℓ-1}/dt = g_ℓ(τ_ℓ) − g_ℓ(f_ℓ(τ_{ℓ-1}))          (correction on g's output)
    iterated_input:   T du_ℓ/dt = τ_ℓ − f_ℓ(g_ℓ(u_ℓ)),  τ_{ℓ-1} = g_ℓ(u_ℓ)  (correction on g's input)
    dtp:              T dτ_{ℓ-1}/dt = g_ℓ(τ_ℓ) + h_{ℓ-1} − g_ℓ(h_ℓ) − τ_{ℓ-1}
    tp:               T dτ_{ℓ-1}/dt = g_ℓ(τ_ℓ) − τ_{ℓ-1}
    ddtp_linear, dfa: T dτ_ℓ/dt = h_ℓ + Q_ℓ (τ_L − h_L) − τ_ℓ   (direct feedback from the output)

Every target starts at its activity (``τ_ℓ(0) = h_ℓ``, ``u_ℓ(0) = h_ℓ``). One unit Euler step
(dt = T) of ``iterated_output`` from there is difference target propagation; the iteration
converges geometrically when ``Lip(g∘f − I) < 1`` (``iterated_input``: ``Lip(f∘g − I) < 1``), to
the exact inverse ``τ_{ℓ-1} = f_ℓ⁻¹(τ_ℓ)`` wherever one exists. Closed forms:
:meth:`TargetPropagation.exact_inverse_targets`, :meth:`~TargetPropagation.gauss_newton_targets`
and :meth:`~TargetPropagation.steady_state` (the fixed point of each rule that has one).

Weights (``online_gamma`` given): ``dW_ℓ/dt = −γ W_ℓ + η mean_B τ̇_ℓ n_{ℓ-1}ᵀ`` (and
``db_ℓ/dt = −γ b_ℓ + η mean_B τ̇_ℓ / ‖r_{ℓ-1}‖²``; η = ``online_eta``, default 1) with ``n_{ℓ-1} = r_{ℓ-1}/‖r_{ℓ-1}‖²`` and
``r_{ℓ-1} = φ(h_{ℓ-1})`` the feed-forward rate (the bias sees a constant input 1, so ‖·‖²
counts it); integrated over a settle from ``τ(0) = h`` at γ = 0 it is exactly η·DTP1,
:meth:`TargetPropagation.dtp1_updates`, which moves ``h_ℓ`` onto ``τ_ℓ`` (for one example).
``online_form="local_loss"`` (``n = r``) integrates to the local-loss gradient step instead. After a
settle, :meth:`TargetPropagation.weight_updates` gives DTP1, DTP1 scaled by each layer's
influence on the loss (:func:`influence_scaled`, the scale carried as a scalar so no squared norm
of a tiny target change is formed) or the local-loss step. The online rule is refused under
``iterated_input``, whose targets start at ``g_ℓ(h_ℓ)`` rather than ``h_{ℓ-1}``.

Measuring the iterated inverse (Bengio 2020 §4, §5): :meth:`TargetPropagation.iterated_limit`
(where the state settles), :meth:`~TargetPropagation.iteration_residual` (``g∘f − I`` or
``f∘g − I``), :meth:`~TargetPropagation.contraction_bounds` (its Lipschitz constant α and the
spectral radius ρ of the linearised iteration), :func:`contraction_rate` (the measured per-step
ratio), :func:`visited_region`, :func:`normalised_inverse_decoders` (decoders of a given ρ) and
:meth:`~TargetPropagation.layer_target_angles` (per-layer angles to Gauss-Newton and backprop).

Two conventions (``convention=``; SPEC §5, "Convention"). ``"pre"`` (default, above; Bengio
2020's parameterisation) puts activities, targets, decoders and Gauss-Newton targets on the
pre-activations ``h_ℓ = a_ℓ``. ``"post"`` (Meulemans et al. 2020's framework: DTP, DRL,
DDTP-linear) puts them on the rates ``h_ℓ = r_ℓ = φ_ℓ(W_ℓ h_{ℓ-1} + b_ℓ)`` (``h_0 = x``):

    f_ℓ(h_{ℓ-1}) = φ_ℓ(W_ℓ h_{ℓ-1} + b_ℓ),      τ_L = h_L + β e_L,   e_L = −∂ℒ/∂r_L = y − r_L
    DTP:          τ_{ℓ-1} = g_ℓ(τ_ℓ) + h_{ℓ-1} − g_ℓ(h_ℓ)     (g_ℓ e.g. :class:`FeedbackDecoder`
                  ``ψ(Q h + d)``, or :class:`PostInverseDecoder` ``W⁻¹(φ⁻¹(h) − b)``)
    DDTP-linear:  τ_ℓ = h_ℓ + Q_ℓ (τ_L − h_L)
    GN targets:   τ_ℓ = h_ℓ + β J̄_ℓ⁺ e_L,   J̄_ℓ = ∂r_L/∂r_ℓ (:func:`post_output_jacobians`)

and the weight update is the local loss ``½‖τ_ℓ − h_ℓ‖²`` backpropagated through φ inside the
layer, ``ΔW_ℓ = mean_B (φ'(a_ℓ) ⊙ (τ_ℓ − h_ℓ)) h_{ℓ-1}ᵀ`` (``form="local_loss"``), or the
minimum-norm change moving ``h_ℓ`` onto ``τ_ℓ`` exactly, ``ΔW_ℓ = mean_B (φ⁻¹(τ_ℓ) − a_ℓ)
n_{ℓ-1}ᵀ`` (``"dtp1"``, invertible φ). The two conventions coincide for linear networks. The
settling rules are the same equations with these ``f_ℓ``, ``h_ℓ`` and ``τ_L``. The feedback of
DDTP-linear and of DTP is trained by the difference reconstruction loss (DRL,
:func:`difference_reconstruction_loss`; the ridge minimiser for direct linear feedback,
:func:`difference_reconstruction_feedback`, tends to the GN matrix ``J̄⁺`` as σ → 0).

Training (online mode) is one :func:`solvers.train` integration: at each jump
:meth:`TargetPropagation.present` shows the next batch, rebinds the forward pass (and ``f_ℓ``)
to the weights of the state there, asks a feedback function for the batch's decoders or Q's,
and restarts the targets at the new forward pass, so each presentation is exactly one settle
of the online rule (η·DTP1 at γ = 0).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Sequence

import torch

from . import credit
from .activations import Activation, get_activation
from .circuit import CreditCircuit, State
from .network import ForwardNetwork
from .feedback import per_seed, random_feedback, replica_seeds
from .parameters import (Population, Role, check_finite_tensor, check_real_tensor, describe,
                         given_matrices, nonnegative_float, positive_float)

RULES = ("iterated_output", "iterated_input", "dtp", "tp", "ddtp_linear", "dfa")
CONVENTIONS = ("pre", "post")
UPDATE_FORMS = ("dtp1", "dtp", "local_loss")
INVERSES = {"linear": lambda v: v, "tanh": torch.atanh,
            "sigmoid": lambda v: torch.log(v) - torch.log1p(-v)}
#: ``(φ⁻¹)'(r) = 1/φ'(φ⁻¹(r))`` for the invertible activations.
INVERSE_SLOPES = {"linear": torch.ones_like, "tanh": lambda r: 1 / (1 - r * r),
                  "sigmoid": lambda r: 1 / (r * (1 - r))}


class Decoder(ABC):
    """``g_ℓ``: layer ℓ's activity ``[..., S, B, n_ℓ]`` → layer ℓ−1's ``[..., S, B, n_{ℓ-1}]``."""

    @abstractmethod
    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        ...


class MirroredDecoder(Decoder):
    """A layer run backwards: ``g(h) = V φ_ℓ(h) + c`` (Bengio's decoder), ``V [S, n_{ℓ-1}, n_ℓ]``,
    ``c [S, 1, n_{ℓ-1}]`` or None."""

    def __init__(self, V: torch.Tensor, c: torch.Tensor | None, activation: Activation):
        self.V, self.c, self.activation = V, c, activation

    def __call__(self, h):
        out = self.activation.phi(h) @ self.V.transpose(-1, -2)
        return out if self.c is None else out + self.c


class InverseDecoder(Decoder):
    """``g(h) = φ_{ℓ-1}⁻¹(M (h − b))``: with ``M = W⁻¹`` the exact inverse of ``f_ℓ`` (square W,
    invertible φ); another M gives an approximate inverse with ``g∘f − I`` of known size."""

    def __init__(self, M: torch.Tensor, b: torch.Tensor | None, activation: Activation):
        if activation.name not in INVERSES:
            raise ValueError(f"activation: received {activation.name!r}, expected one of "
                             f"{sorted(INVERSES)} (an invertible φ) for an inverse decoder")
        self.M, self.b, self.inverse = M, b, INVERSES[activation.name]
        self.activation_name = activation.name

    def __call__(self, h):
        v = h if self.b is None else h - self.b
        return self.inverse(v @ self.M.transpose(-1, -2))

    def preimage(self, t: torch.Tensor) -> torch.Tensor:
        """``u`` with ``g(u) = t``: ``b + M⁻¹ φ_{ℓ-1}(t)`` (M invertible)."""
        act = get_activation(self.activation_name).phi
        u = torch.linalg.solve(self.M, act(t).transpose(-1, -2)).transpose(-1, -2)
        return u if self.b is None else self.b + u


class PostInverseDecoder(Decoder):
    """Post-activation convention: ``g(h) = M (φ_ℓ⁻¹(h) − b)``, ``M [S, n_{ℓ-1}, n_ℓ]``,
    ``b [S, 1, n_ℓ]`` or None. With ``M = W_ℓ⁻¹`` it is the exact inverse of the post-activation
    layer ``f_ℓ(h) = φ_ℓ(W_ℓ h + b_ℓ)`` (square W, invertible φ_ℓ: ``|h| < 1`` under tanh)."""

    def __init__(self, M: torch.Tensor, b: torch.Tensor | None, activation: Activation):
        if activation.name not in INVERSES:
            raise ValueError(f"activation: received {activation.name!r}, expected one of "
                             f"{sorted(INVERSES)} (an invertible φ) for an inverse decoder")
        self.M, self.b, self.activation_name = M, b, activation.name
        self.inverse = INVERSES[activation.name]

    def __call__(self, h):
        v = self.inverse(h)
        v = v if self.b is None else v - self.b
        return v @ self.M.transpose(-1, -2)

    def preimage(self, t: torch.Tensor) -> torch.Tensor:
        """``u`` with ``g(u) = t``: ``φ_ℓ(M⁻¹ t + b)`` (M invertible)."""
        act = get_activation(self.activation_name).phi
        v = torch.linalg.solve(self.M, t.transpose(-1, -2)).transpose(-1, -2)
        return act(v if self.b is None else v + self.b)


class FeedbackDecoder(Decoder):
    """Meulemans et al.'s decoder for the post-activation convention: ``g(h) = ψ(Q h + d)``,
    ``Q [S, n_{ℓ-1}, n_ℓ]``, ``d [S, 1, n_{ℓ-1}]`` or None, ψ the feedback activation (an
    :class:`Activation` or its name; ``linear`` makes g affine)."""

    def __init__(self, Q: torch.Tensor, d: torch.Tensor | None, activation="linear"):
        self.Q, self.d = Q, d
        self.activation = get_activation(activation, "activation")

    def __call__(self, h):
        out = h @ self.Q.transpose(-1, -2)
        return self.activation.phi(out if self.d is None else out + self.d)


def inverse_decoders(network: ForwardNetwork, perturbation: float = 0.0, seed=0,
                     convention: str = "pre") -> list[Decoder]:
    """Decoders ``g_2..g_L`` inverting each layer of a network with square weights, optionally
    with ``M = W⁻¹ + perturbation·E`` (E standard normal / √n, seeded).

    ``convention``: ``"pre"`` gives :class:`InverseDecoder` ``φ_{ℓ-1}⁻¹(M (h − b_ℓ))`` (inverse
    of ``h ↦ W φ(h) + b``), ``"post"`` gives :class:`PostInverseDecoder` ``M (φ_ℓ⁻¹(h) − b_ℓ)``
    (inverse of ``h ↦ φ(W h + b)``); the same M either way.

    ``seed``: an int (every replica the same E) or S ints (replica s's E drawn from ``seed[s]``,
    layer after layer, as for an S = 1 network with that int): a replica's E never depends on S
    or on the other replicas (:mod:`circuits.feedback`)."""
    _check_convention(convention)
    seeds = replica_seeds("seed", seed, network.weights[0].shape[0])
    Ms = []
    for l in range(2, network.L + 1):
        W = network.weights[l - 1]
        if W.shape[-1] != W.shape[-2]:
            raise ValueError(f"network.widths: layer {l} maps {W.shape[-1]} → {W.shape[-2]} "
                             "units, expected square layers (equal widths) for exact inverses")
        Ms.append(torch.linalg.inv(W))
    if perturbation:
        Es = per_seed(seeds, lambda g: [torch.randn(M.shape[-2:], generator=g,
                                                    dtype=torch.float64) for M in Ms])
        Ms = [M + perturbation * (E.to(M) / M.shape[-1] ** 0.5) for M, E in zip(Ms, Es)]
    out = []
    for l, M in zip(range(2, network.L + 1), Ms):
        b = None if network.biases is None else network.biases[l - 1]
        out.append(InverseDecoder(M, b, network.activation(l - 1)) if convention == "pre"
                   else PostInverseDecoder(M, b, network.activation(l)))
    return out


def _check_convention(convention) -> str:
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        raise ValueError(f"convention: received {convention!r}, expected one of "
                         f"{list(CONVENTIONS)} ('pre': targets on pre-activations a_ℓ, Bengio "
                         "2020; 'post': on rates φ(a_ℓ), Meulemans et al. 2020)")
    return convention


class TargetPropagation(CreditCircuit):
    """Targets settling by one of :data:`RULES` on one batch (see the module docstring).

    Args:
        network: the forward network (copied to S replicas if S = 1).
        x, target: input ``[B, n_0]`` and label ``[B, n_L]``; the loss is ``½‖y − r_L‖²``.
        rule: one of :data:`RULES`.
        beta: the output nudge β (number or S numbers).
        tau: T, the targets' time constant; ``tau_out``: the output target's (default T).
        decoders: ``[g_2, ..., g_L]`` (decoder rules), each a :class:`Decoder`, or a function
            ``(network, x [S, B, n_0]) → [g_2, ..., g_L]`` called now and at every
            :meth:`present` (e.g. :class:`circuits.LearnedFeedback`: decoders learned between
            presentations).
        feedback: ``[Q_1, ..., Q_{L-1}]`` each ``[S, n_ℓ, n_L]`` (``ddtp_linear``/``dfa``), or
            ``"gauss_newton"`` (the damped pseudo-inverse ``J̄ᵀ(J̄J̄ᵀ + λI)⁻¹`` at the
            feed-forward pass, batch-averaged; ``damping`` = λ; recomputed at every
            :meth:`present`) or ``"random"`` (seeded), or a function ``(network, x) → [Q_ℓ]``
            called now and at every :meth:`present`.
        feedback_seed: for ``"random"``: an int (every replica the same ``Q``), S ints (replica
            s drawn from ``feedback_seed[s]``, as an S = 1 circuit with that int draws it) or None
            (default: replica s from seed s). See :mod:`circuits.feedback`.
        online_gamma: make weights state with the online rule and this decay γ (None: fixed);
            the circuit is then a learning circuit for :func:`solvers.train` (:meth:`present`).
        online_form: ``"dtp1"`` (``n = r/(‖r‖² + 1)``: integrates to η·DTP1) or
            ``"local_loss"`` (``n = r``: integrates to η times the local-loss gradient step,
            :meth:`weight_updates` ``form="local_loss"``).
        online_eta: the online rule's rate η: a small β keeps the targets differential (an exact
            inverse of a saturating layer exists only for small nudges) while η β sets the step.
        anchor: λ ≥ 0, hidden targets also leak towards the forward pass, ``dτ_ℓ/dt +=
            −λ (τ_ℓ − h_ℓ)`` (ℓ < L). In training as one integration the targets run on from one
            example to the next instead of restarting at ``h_ℓ``, and the iterated inverse's fixed
            points are not unique (``τ_1 ↦ g_2(f_2(τ_1))`` has rank n_L: every ``τ_1`` on a manifold
            of dimension ``n_1 − n_L`` is fixed), so without the leak the targets keep the previous
            example's offset along it and layer 1's update decorrelates from backprop's. The leak
            picks the fixed point nearest ``h_ℓ`` (for λ small against the correction's 1/T).
        convention: ``"pre"`` (default: activities, targets and decoders on pre-activations
            ``a_ℓ``, Bengio 2020) or ``"post"`` (on rates ``r_ℓ = φ(a_ℓ)``, Meulemans et al.
            2020: ``f_ℓ(h) = φ_ℓ(W_ℓ h + b_ℓ)``, ``τ_L = r_L + β(y − r_L)``, Gauss-Newton
            feedback from ``∂r_L/∂r_ℓ``); see the module docstring. In online mode under
            ``"post"`` the rule integrates ``φ⁻¹(τ_ℓ)`` (``dtp1``: ``dW_ℓ/dt = η mean_B (τ̇_ℓ /
            φ'(φ⁻¹(τ_ℓ))) n_{ℓ-1}ᵀ``, an invertible φ) or ``φ'(a_ℓ) ⊙ τ̇_ℓ`` (``local_loss``).
    """

    def __init__(self, network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor, *,
                 rule: str = "iterated_output", beta=0.1, tau=1.0, tau_out=None,
                 decoders: Sequence[Decoder] | None = None,
                 feedback: str | Sequence[torch.Tensor] | None = None, damping: float = 1e-3,
                 feedback_seed=None, online_gamma: float | None = None,
                 online_eta: float = 1.0, online_form: str = "dtp1", anchor: float = 0.0,
                 convention: str = "pre"):
        if rule not in RULES:
            raise ValueError(f"rule: received {rule!r}, expected one of {list(RULES)}")
        self.convention = _check_convention(convention)
        self._bind(network, ("beta", "tau", "tau_out"), beta=beta, tau=tau,
                   tau_out=tau if tau_out is None else tau_out)
        net = self.network
        self.rule, self.L = rule, net.L
        self.direct = rule in ("ddtp_linear", "dfa")
        if isinstance(anchor, bool) or not isinstance(anchor, (int, float)) \
                or not math.isfinite(anchor) or anchor < 0:
            raise ValueError(f"anchor: received {anchor!r}, expected a finite number ≥ 0 (the "
                             "rate at which hidden targets leak towards the forward pass)")
        self.anchor = float(anchor)
        self._prepare_drive(x, target)
        self._feedback_fn = None
        self.online = online_gamma is not None
        if self.online:
            self.eta = positive_float("online_eta", online_eta)
            if isinstance(online_gamma, bool) or not isinstance(online_gamma, (int, float)) \
                    or not math.isfinite(online_gamma) or online_gamma < 0:
                raise ValueError(f"online_gamma: received {online_gamma!r}, expected a number "
                                 "≥ 0 (finite) or None")
            self.gamma = float(online_gamma)
            if rule == "iterated_input":
                raise ValueError("online_gamma: received a number for rule 'iterated_input', "
                                 "expected None: its targets start at g_ℓ(h_ℓ), not at h_{ℓ-1}, "
                                 "so the integrated rule would carry the decoders' "
                                 "reconstruction error; use dtp1_updates() after the settle")
            if online_form not in ("dtp1", "local_loss"):
                raise ValueError(f"online_form: received {online_form!r}, expected 'dtp1' or "
                                 "'local_loss'")
            self.online_form = online_form
            if convention == "post" and online_form == "dtp1":
                names = {network.activation(l).name for l in range(1, network.L + 1)}
                if not names <= set(INVERSES):
                    raise ValueError(f"online_form: received 'dtp1' with convention 'post' and "
                                     f"activations {sorted(names)}, expected invertible ones "
                                     f"{sorted(INVERSES)} (the rule integrates φ⁻¹(τ_ℓ)); "
                                     "use online_form='local_loss'")
        self._derive(True)
        if self.direct:
            self.damping = damping
            if _is_function(feedback):
                self._feedback_fn, feedback = feedback, feedback(net, self.x)
            self.gauss_newton = feedback is None and rule == "ddtp_linear" \
                or (isinstance(feedback, str) and feedback == "gauss_newton")
            self.feedback = self._feedback(feedback, damping, feedback_seed)
        else:
            if _is_function(decoders):
                self._feedback_fn, decoders = decoders, decoders(net, self.x)
            self.decoders = self._checked_decoders(decoders)
        widths = net.widths
        if rule == "iterated_input":
            self.populations = [Population(f"u_{l}", Role.TARGET, widths[l], l)
                                for l in range(2, self.L + 1)]
        else:
            self.populations = [Population(f"tau_{l}", Role.TARGET, widths[l], l)
                                for l in range(1, self.L)]
        self.populations.append(Population(f"tau_{self.L}", Role.TARGET, widths[-1], self.L))
        if self.online:
            self.populations += [Population(f"W_{l}", Role.WEIGHT, widths[l], l)
                                 for l in range(1, self.L + 1)]
            if net.biases is not None:
                self.populations += [Population(f"b_{l}", Role.WEIGHT, widths[l], l)
                                     for l in range(1, self.L + 1)]

    @classmethod
    def iterated_inverse(cls, network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor, *,
                         beta=0.1, tau=1.0, perturbation: float = 0.0, decoder_seed=0
                         ) -> "TargetPropagation":
        """Bengio's iterated inverse (rule ``iterated_output``) with inverse decoders
        ``g_ℓ(h) = φ⁻¹(M_ℓ(h − b_ℓ))``, ``M_ℓ = W_ℓ⁻¹ + perturbation·E`` (:func:`inverse_decoders`,
        E seeded by ``decoder_seed``: an int or S ints): the network needs square layers and an
        invertible hidden activation. The targets settle on :meth:`exact_inverse_targets` whenever the iteration
        contracts (``‖g∘f − I‖ < 1``, i.e. a small enough perturbation)."""
        return cls(network, x, target, rule="iterated_output", beta=beta, tau=tau,
                   decoders=inverse_decoders(network, perturbation, replica_seeds(
                       "decoder_seed", decoder_seed, network.weights[0].shape[0])))

    def _checked_decoders(self, decoders, check: bool = True) -> list[Decoder]:
        """The decoders ``[g_2, ..., g_L]``: Decoder objects; the matrices of mirrored and
        inverse decoders shaped ``[S, n_{ℓ-1}, n_ℓ]`` (S = 1 or this circuit's) and, with
        ``check``, finite (one host sync per matrix)."""
        if not isinstance(decoders, (list, tuple)) or len(decoders) != self.L - 1 or not all(
                isinstance(g, Decoder) for g in decoders):
            raise ValueError(f"decoders: received {describe(decoders)}, expected "
                             f"{self.L - 1} circuits.target_propagation.Decoder objects "
                             f"[g_2, ..., g_L] for rule {self.rule!r} (or a function "
                             "(network, x) returning them)")
        widths = self.network.widths
        for i, g in enumerate(decoders):
            n_below, n = widths[i + 1], widths[i + 2]
            parts = ((("V", g.V, (n_below, n)), ("c", g.c, (1, n_below)))
                     if isinstance(g, MirroredDecoder) else
                     (("M", g.M, (n_below, n)), ("b", g.b, (1, n)))
                     if isinstance(g, (InverseDecoder, PostInverseDecoder)) else
                     (("Q", g.Q, (n_below, n)), ("d", g.d, (1, n_below)))
                     if isinstance(g, FeedbackDecoder) else ())
            for part, value, shape in parts:
                if value is None:
                    continue
                name = f"decoders[{i}].{part}"
                check_real_tensor(name, value, dims=(2, 3))
                if tuple(value.shape[-2:]) != shape or value.dim() == 3 \
                        and value.shape[0] not in (1, self.S):
                    raise ValueError(f"{name}: received shape {tuple(value.shape)}, expected "
                                     f"[S, {shape[0]}, {shape[1]}] with S = 1"
                                     f"{' or %d' % self.S if self.S > 1 else ''} "
                                     f"(decoder g_{i + 2}: layer {i + 2} → {i + 1})")
                if check:
                    check_finite_tensor(name, value)
        return list(decoders)

    def _derive(self, compact_weights: bool) -> None:
        net = self.network
        self.fwd = fwd = net.forward(self.x, prepared=True)
        self.rates = fwd.r[:-1]                               # r_0..r_{L-1}
        if self.convention == "pre":
            self.h = fwd.a                                    # h_1..h_L = a_1..a_L
            self.delta_L = fwd.dphi[-1] * (self.given - fwd.r[-1])    # −∂ℒ/∂a_L
        else:
            self.h = fwd.r[1:]                                # h_1..h_L = r_1..r_L
            self.delta_L = self.given - fwd.r[-1]             # e_L = −∂ℒ/∂r_L
        self.output_target = self.h[-1] + self.beta * self.delta_L
        if self.online:
            if self.online_form == "dtp1":
                sq = [(r ** 2).sum(-1, keepdim=True) + (net.biases is not None)
                      for r in self.rates]
            else:                                       # the local-loss gradient: n = r
                sq = [torch.ones_like(r[..., :1]) for r in self.rates]
            self._n = [r / s for r, s in zip(self.rates, sq)]
            self._n_bias = [1 / s for s in sq]

    def credits(self, y: State) -> list[torch.Tensor]:
        """The target changes ``τ_ℓ − h_ℓ`` (what DTP1 and the local loss learn from)."""
        return [t - h for t, h in zip(self.targets(y), self.h)]

    def refresh_feedback(self) -> None:
        """The default ``ddtp_linear`` feedback (damped Gauss-Newton at the feed-forward pass)
        recomputed at the current weights and input; a learning circuit calls this once per
        presentation. Given, random and decoder feedback are left as they are."""
        if self.direct and self.gauss_newton:
            self.feedback = self._feedback("gauss_newton", self.damping, 0)

    # -- training as integration (online mode) ---------------------------------------------

    def network_of(self, y: State) -> ForwardNetwork:
        """The forward network with the weights of state ``y`` (online mode)."""
        if not self.online:
            raise ValueError("y: the weights of a state were asked for, but this circuit has "
                             "none (online_gamma=None); pass online_gamma=0.0 to make the "
                             "weights state")
        L, net = self.L, self.network
        return net.with_parameters([y[f"W_{l}"] for l in range(1, L + 1)],
                                   None if net.biases is None else
                                   [y[f"b_{l}"] for l in range(1, L + 1)])

    def present(self, x: torch.Tensor, target: torch.Tensor, y: State | None = None, *,
                check: bool = True) -> State:
        """Show a new batch ``x [B, n_0]``, ``target [B, n_L]`` (B as before: it is part of the
        state's shape); :func:`solvers.train` calls this at each jump with the state ``y``
        there. The circuit is rebound to the weights of ``y`` (forward pass, ``f_ℓ``, output
        nudge), the feedback function (if one was given) computes this batch's decoders / Q's,
        ``"gauss_newton"`` feedback is recomputed, and the targets restart at the new forward
        pass: the returned ``{tau_ℓ: h_ℓ}`` is the jump of the target populations (a reset map
        the drive applies to the state). ``y=None``: the weights the circuit holds.
        ``check=False`` checks shapes only (no host synchronisation). Online mode only
        (``online_gamma`` given)."""
        if not self.online:
            raise TypeError("circuit: received a TargetPropagation without weights in its "
                            "state (online_gamma=None), expected a learning circuit: pass "
                            "online_gamma=0.0, or use circuits.Plastic(circuits.Targets(...))")
        if target is None:
            raise ValueError("target: received None, expected a target [B, n_L] (target "
                             "propagation nudges the output towards it)")
        net = self.network if y is None else self.network_of(y)
        x = net.input(x, check_finite=check)
        given = net.output_like(target, check_finite=check)
        if x.shape[1] != self.batch or given.shape[1] != self.batch:
            raise ValueError(f"x, target: received {x.shape[1]} and {given.shape[1]} examples, "
                             f"expected B = {self.batch} (the batch is part of the state's "
                             "shape)")
        self.network, self.x, self.given = net, x, given
        self._derive(False)
        if self._feedback_fn is not None:
            given_fb = self._feedback_fn(net, x)
            if self.direct:
                self.feedback = self._feedback(given_fb, self.damping, 0)
            else:
                self.decoders = self._checked_decoders(given_fb, check)
        else:
            self.refresh_feedback()
        return {f"tau_{l}": h.clone() for l, h in enumerate(self.h, start=1)}

    def target_angles(self, y: State, damping: float = 1e-3) -> dict[str, torch.Tensor]:
        """Per replica ``[S]``: the angle (degrees) between the hidden target changes
        ``τ_ℓ − h_ℓ`` (ℓ < L, batch and layers flattened together) and backprop's step
        ``β·δ_ℓ`` (``"backprop"``) and the damped Gauss-Newton target step
        ``β J̄_ℓᵀ(J̄_ℓJ̄_ℓᵀ + λI)⁻¹δ_L`` (``"gauss_newton"``, λ = ``damping``; λ = 0 the
        pseudo-inverse), both in this circuit's convention (pre: on ``a_ℓ``; post: on ``r_ℓ``,
        backprop's step ``−∂ℒ/∂r_ℓ``)."""
        change = self.credits(y)[:-1]
        bp, gn = self._backprop_steps(), self._gauss_newton_steps(damping)
        return {"backprop": credit.angle(change, bp), "gauss_newton": credit.angle(change, gn)}

    def _backprop_steps(self) -> list[torch.Tensor]:
        """Backprop's ``−∂ℒ/∂h_ℓ = J̄_ℓᵀ δ_L`` (ℓ < L, each ``[S, B, n_ℓ]``) in this
        circuit's convention."""
        net, fwd = self.network, self.fwd
        if self.convention == "pre":
            return credit.backprop(net, fwd, self.delta_L)[:-1]
        return [(self.delta_L[..., None, :] @ J)[..., 0, :]
                for J in post_output_jacobians(net, fwd)[:-1]]

    def _gauss_newton_steps(self, damping: float) -> list[torch.Tensor]:
        """The Gauss-Newton steps ``J̄_ℓ⁺_λ δ_L`` (ℓ < L, each ``[S, B, n_ℓ]``; λ = 0 the
        pseudo-inverse) in this circuit's convention."""
        net, fwd = self.network, self.fwd
        if self.convention == "pre":
            return credit.gauss_newton(net, fwd, self.delta_L, damping=damping)[:-1]
        return [credit.gauss_newton_step(J, self.delta_L, damping)
                for J in post_output_jacobians(net, fwd)[:-1]]

    # -- closed forms ------------------------------------------------------------------------

    def exact_inverse_targets(self) -> State:
        """The targets of an exact inverse, keyed like the state (``tau_ℓ`` ``[S, B, n_ℓ]``)::

            τ_L* = h_L + β δ_L,      τ_{ℓ-1}* = f_ℓ⁻¹(τ_ℓ*)     (ℓ = L..2)

        with ``f_ℓ⁻¹(τ) = φ_{ℓ-1}⁻¹(W_ℓ⁻¹(τ − b_ℓ))`` (convention ``"pre"``) or
        ``W_ℓ⁻¹(φ_ℓ⁻¹(τ) − b_ℓ)`` (``"post"``: the composition of :class:`PostInverseDecoder`'s,
        so ``τ_1* = f_2⁻¹ ∘ … ∘ f_L⁻¹(τ_L*)``). It is where ``iterated_output`` settles
        with one-to-one decoders (its fixed point is ``f_ℓ(τ_{ℓ-1}) = τ_ℓ``) and what
        ``iterated_input``'s targets reach. Needs square layers and an invertible hidden
        activation; a target outside φ's range (tanh: |·| < 1) comes back non-finite."""
        exact = inverse_decoders(self.network, convention=self.convention)
        star: State = {f"tau_{self.L}": self.output_target}
        for l in range(self.L, 1, -1):
            star[f"tau_{l - 1}"] = exact[l - 2](star[f"tau_{l}"])
        return {f"tau_{l}": star[f"tau_{l}"] for l in range(1, self.L + 1)}

    def gauss_newton_targets(self, damping: float | None = None) -> State:
        """Damped Gauss-Newton targets keyed like the state (``tau_ℓ`` ``[S, B, n_ℓ]``)::

            τ_ℓ* = h_ℓ + β J̄_ℓᵀ(J̄_ℓ J̄_ℓᵀ + λI)⁻¹ δ_L     (ℓ < L, J̄_ℓ = ∂h_L/∂h_ℓ per example)
            τ_L* = h_L + β δ_L                            (the output nudge itself)

        in this circuit's convention (``"pre"``: ``h = a``, ``δ_L = −∂ℒ/∂a_L``; ``"post"``:
        ``h = r``, ``δ_L = e_L = −∂ℒ/∂r_L``, :func:`post_output_jacobians`); λ = 0 is the
        Moore–Penrose pseudo-inverse ``J̄_ℓ⁺ δ_L`` (:func:`circuits.credit.gauss_newton_step`,
        from an SVD), right also for layers narrower than the output. λ = ``damping`` (None:
        this circuit's ``damping``, set for ``ddtp_linear``/``dfa``). It is where
        ``ddtp_linear`` with ``feedback="gauss_newton"`` settles for one example per batch (its
        Q is the batch mean of the per-example pseudo-inverses); the first-order targets of an
        exact inverse. (:func:`gauss_newton_targets` is the same from a network,
        with GN's own output target.)"""
        if damping is None:
            if not self.direct:
                raise ValueError(f"damping: received None for rule {self.rule!r}, expected a "
                                 "number ≥ 0 (only 'ddtp_linear' and 'dfa' keep a damping of "
                                 "their own)")
            damping = self.damping
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) \
                or not math.isfinite(damping) or damping < 0:
            raise ValueError(f"damping: received {damping!r}, expected a finite number ≥ 0 "
                             "(the Gauss-Newton damping λ)")
        steps = self._gauss_newton_steps(damping)
        star: State = {f"tau_{l}": h + self.beta * s
                       for l, (h, s) in enumerate(zip(self.h[:-1], steps), start=1)}
        star[f"tau_{self.L}"] = self.output_target
        return star

    def steady_state(self) -> State:
        """The fixed point of the targets, keyed like the state (``tau_ℓ`` ``[S, B, n_ℓ]``),
        with ``τ_L* = h_L + β δ_L`` and, for the hidden layers (ℓ < L, from the top)::

            ddtp_linear, dfa:   c_ℓ = h_ℓ + Q_ℓ (τ_L* − h_L)              (exact for any Q)
            dtp:                c_ℓ = g_{ℓ+1}(τ_{ℓ+1}*) + h_ℓ − g_{ℓ+1}(h_{ℓ+1})
            tp:                 c_ℓ = g_{ℓ+1}(τ_{ℓ+1}*)
            τ_ℓ* = (c_ℓ + Tλ h_ℓ) / (1 + Tλ)      (λ = ``anchor``, T = ``tau``)

        ``iterated_output`` (no anchor, one-to-one decoders) settles on
        :meth:`exact_inverse_targets`. ``iterated_input`` (state ``u_ℓ``, not ``τ_ℓ``) has no
        closed form here; its targets reach :meth:`exact_inverse_targets`. In online mode the
        weights are left out: where they end depends on the path (from :meth:`initial_state`
        at γ = 0, at ``η·`` :meth:`weight_updates` of these targets)."""
        L = self.L
        if self.rule == "iterated_input":
            raise ValueError("rule: received 'iterated_input', expected one of "
                             f"{[r for r in RULES if r != 'iterated_input']} (its state is "
                             "u_ℓ; its targets settle on exact_inverse_targets())")
        if self.rule == "iterated_output":
            if self.anchor:
                raise ValueError(f"anchor: received {self.anchor!r} for rule "
                                 "'iterated_output', expected 0 (the anchored iterated inverse "
                                 "has no closed form)")
            return self.exact_inverse_targets()
        top = self.output_target
        star: State = {f"tau_{L}": top}
        kT = self.anchor * self.tau
        for l in range(L - 1, 0, -1):
            if self.direct:
                c = self.h[l - 1] + (top - self.h[-1]) @ self.feedback[l - 1].transpose(-1, -2)
            else:
                g = self.decoders[l - 1]                      # g_{ℓ+1}: layer ℓ+1 → ℓ
                c = g(star[f"tau_{l + 1}"])
                if self.rule == "dtp":
                    c = c + self.h[l - 1] - g(self.h[l])
            star[f"tau_{l}"] = (c + kT * self.h[l - 1]) / (1 + kT) if self.anchor else c
        return {f"tau_{l}": star[f"tau_{l}"] for l in range(1, L + 1)}

    def iterated_limit(self) -> State:
        """Where the iterated inverse's *state* settles, keyed like the state (Bengio 2020 §4):
        ``iterated_output`` → :meth:`exact_inverse_targets`; ``iterated_input`` → ``u_ℓ* =
        g_ℓ⁻¹(τ_{ℓ-1}*) = b_ℓ + M_ℓ⁻¹ φ_{ℓ-1}(τ_{ℓ-1}*)`` (ℓ = 2..L, each decoder an
        :class:`InverseDecoder` with invertible M) and ``τ_L*``. The point each iterate's error
        is measured to; its residual's Jacobian there (:meth:`contraction_bounds`) decides
        whether the iteration converges."""
        if self.rule not in ("iterated_output", "iterated_input"):
            raise ValueError(f"rule: received {self.rule!r}, expected 'iterated_output' or "
                             "'iterated_input' (the iterated inverse; the other rules' fixed "
                             "points are steady_state())")
        if self.anchor:
            raise ValueError(f"anchor: received {self.anchor!r}, expected 0 (the anchored "
                             "iteration settles off the exact inverse)")
        star = self.exact_inverse_targets()
        if self.rule == "iterated_output":
            return star
        out: State = {}
        for l, g in enumerate(self.decoders, start=2):
            if not isinstance(g, (InverseDecoder, PostInverseDecoder)):
                raise ValueError(f"decoders: received a {type(g).__name__} for layer {l}, "
                                 "expected an InverseDecoder or PostInverseDecoder (g_ℓ⁻¹ in "
                                 "closed form) to place the limit of u_ℓ")
            out[f"u_{l}"] = g.preimage(star[f"tau_{l - 1}"])
        out[f"tau_{self.L}"] = star[f"tau_{self.L}"]
        return out

    def _feedback(self, feedback, damping: float, seed) -> list[torch.Tensor]:
        net, S = self.network, self.S
        shapes = [(n, net.widths[-1]) for n in net.widths[1:-1]]
        if feedback is None:
            feedback = "random" if self.rule == "dfa" else "gauss_newton"
        if feedback == "gauss_newton":
            damping = positive_float("damping", damping)
            Js = output_jacobians(net, self.fwd, self.convention)[:-1]   # ∂h_L/∂h_ℓ
            return [credit.damped_pseudo_inverse(J, damping).mean(1) for J in Js]
        if feedback == "random":
            return random_feedback(shapes, S, seed, net.dtype, net.device)
        return given_matrices("feedback", feedback, shapes, S, net.dtype, net.device,
                              "'gauss_newton', 'random'")

    # -- the dynamics ------------------------------------------------------------------------

    def f(self, l: int, h_below: torch.Tensor) -> torch.Tensor:
        """``f_ℓ(h_{ℓ-1}) = W_ℓ φ_{ℓ-1}(h_{ℓ-1}) + b_ℓ`` (``"pre"``) or ``φ_ℓ(W_ℓ h_{ℓ-1} +
        b_ℓ)`` (``"post"``) with the network's (initial) weights."""
        if self.convention == "pre":
            return self.network.layer(l, h_below)
        return post_layer(self.network, l, h_below)

    def initial_state(self) -> State:
        L = self.L
        if self.rule == "iterated_input":
            y = {f"u_{l}": self.h[l - 1].clone() for l in range(2, L + 1)}
        else:
            y = {f"tau_{l}": self.h[l - 1].clone() for l in range(1, L)}
        y[f"tau_{L}"] = self.h[-1].clone()
        if self.online:
            net = self.network
            y.update({f"W_{l}": W.clone() for l, W in enumerate(net.weights, start=1)})
            if net.biases is not None:
                y.update({f"b_{l}": b.clone() for l, b in enumerate(net.biases, start=1)})
        return y

    def targets(self, y: State) -> list[torch.Tensor]:
        """``[τ_1, ..., τ_L]`` (for ``iterated_input``, ``τ_{ℓ-1} = g_ℓ(u_ℓ)``)."""
        if self.rule == "iterated_input":
            return [g(y[f"u_{l}"]) for l, g in enumerate(self.decoders, start=2)] \
                + [y[f"tau_{self.L}"]]
        return [y[f"tau_{l}"] for l in range(1, self.L + 1)]

    def vector_field(self, t: float, y: State) -> State:
        L, T = self.L, self.tau
        tau = self.targets(y)
        out: State = {f"tau_{L}": (self.output_target - tau[-1]) / self.tau_out}
        if self.rule == "iterated_input":
            for l, g in enumerate(self.decoders, start=2):
                out[f"u_{l}"] = (tau[l - 1] - self.f(l, tau[l - 2])) / T
        else:
            drive = getattr(self, f"_drive_{self.rule if not self.direct else 'direct'}")
            for l in range(1, L):
                out[f"tau_{l}"] = drive(l, tau) / T
                if self.anchor:                 # hidden targets leak towards the forward pass
                    out[f"tau_{l}"] = out[f"tau_{l}"] - self.anchor * (tau[l - 1] - self.h[l - 1])
        if self.online:
            rates = [self.eta * out[f"tau_{l}"] for l in range(1, L + 1)]        # η τ̇_ℓ
            if self.convention == "post":           # η d/dt of the pre-activation target
                rates = [r * self._pre_activation_rate(l, tau[l - 1])
                         for l, r in enumerate(rates, start=1)]
            for l in range(1, L + 1):
                W = y[f"W_{l}"]
                out[f"W_{l}"] = (rates[l - 1].transpose(-1, -2) @ self._n[l - 1]) \
                    / rates[l - 1].shape[-2] - self.gamma * W
                if self.network.biases is not None:
                    out[f"b_{l}"] = (rates[l - 1] * self._n_bias[l - 1]).mean(-2, keepdim=True) \
                        - self.gamma * y[f"b_{l}"]
        return out

    def _pre_activation_rate(self, l: int, tau_l: torch.Tensor) -> torch.Tensor:
        """Post-activation online rule: the factor turning ``τ̇_ℓ`` into the rate of the
        pre-activation quantity the weights learn, ``1/φ'(φ⁻¹(τ_ℓ))`` (``dtp1``: integrates to
        ``φ⁻¹(τ_ℓ) − a_ℓ``) or ``φ'(a_ℓ)`` at the forward pass (``local_loss``)."""
        if self.online_form == "local_loss":
            return self.fwd.dphi[l - 1]
        return INVERSE_SLOPES[self.network.activation(l).name](tau_l)

    def mean_jacobian(self, y: State) -> torch.Tensor | None:
        """The batch-averaged Jacobian of the target dynamics at fixed weights,
        ``mean_B ∂τ̇/∂τ`` ``[S, D, D]`` over ``τ_1 … τ_L`` (D = n_1 + … + n_L), in closed form
        for ``iterated_output`` with mirrored decoders and for ``ddtp_linear``/``dfa``; None for
        the other rules (a stepping method then takes Jacobian-vector products instead).

        ``iterated_output``, ℓ < L, with ``g(h) = V φ_g(h) + c`` and ``f(τ) = W φ(τ) + b``:
        ``∂τ̇_ℓ/∂τ_{ℓ+1} = V diag(φ_g'(τ_{ℓ+1}))/T`` and ``∂τ̇_ℓ/∂τ_ℓ = −V diag(φ_g'(f(τ_ℓ))) W
        diag(φ'(τ_ℓ))/T − λI``, whose batch mean is ``−V (W ⊙ mean_B a cᵀ)/T − λI``; direct
        feedback: ``∂τ̇_ℓ/∂τ_L = Q_ℓ/T``, ``∂τ̇_ℓ/∂τ_ℓ = −(1/T + λ) I``; ``∂τ̇_L/∂τ_L = −I/T_out``
        (either convention). The iterated form is for convention ``"pre"`` only."""
        iterated = self.rule == "iterated_output" and self.convention == "pre" and all(
            isinstance(g, MirroredDecoder) for g in self.decoders)
        if not (iterated or self.direct):
            return None
        net, L, T = self.network, self.L, self.tau
        tau = self.targets(y)
        widths = net.widths[1:]
        offsets = [sum(widths[:l]) for l in range(L + 1)]
        S, D = tau[0].shape[0], offsets[-1]
        J = torch.zeros(S, D, D, dtype=tau[0].dtype, device=tau[0].device)

        def block(i, j):                        # rows of τ_{i+1}, columns of τ_{j+1}
            return J[:, offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]]
        B = tau[0].shape[-2]
        for l in range(1, L):
            eye = torch.eye(widths[l - 1], dtype=J.dtype, device=J.device)
            if self.direct:
                block(l - 1, L - 1).copy_(self.feedback[l - 1] / T)
                block(l - 1, l - 1).copy_(-(1 / T + self.anchor) * eye)
                continue
            g = self.decoders[l - 1]
            W = net.weights[l]                                  # W_{ℓ+1} [S, n_{ℓ+1}, n_ℓ]
            a = g.activation.dphi(self.f(l + 1, tau[l - 1]))    # [S, B, n_{ℓ+1}]
            c = net.activation(l).dphi(tau[l - 1])              # [S, B, n_ℓ]
            M = a.transpose(-1, -2) @ c / B                     # mean_B a cᵀ
            block(l - 1, l).copy_(g.V * g.activation.dphi(tau[l]).mean(-2, keepdim=True) / T)
            block(l - 1, l - 1).copy_(-(g.V @ (W * M)) / T - self.anchor * eye)
        block(L - 1, L - 1).copy_(-torch.eye(widths[-1], dtype=J.dtype, device=J.device)
                                  / self.tau_out)
        return J

    def _drive_iterated_output(self, l, tau):
        g = self.decoders[l - 1]                  # g_{ℓ+1}: layer ℓ+1 → ℓ
        return g(tau[l]) - g(self.f(l + 1, tau[l - 1]))

    def _drive_dtp(self, l, tau):
        g = self.decoders[l - 1]
        return g(tau[l]) + self.h[l - 1] - g(self.h[l]) - tau[l - 1]

    def _drive_tp(self, l, tau):
        return self.decoders[l - 1](tau[l]) - tau[l - 1]

    def _drive_direct(self, l, tau):
        return self.h[l - 1] + (tau[-1] - self.h[-1]) @ self.feedback[l - 1].transpose(-1, -2) \
            - tau[l - 1]

    # -- read-outs ---------------------------------------------------------------------------

    def observe(self, y: State) -> State:
        obs = dict(y)
        for l, t in enumerate(self.targets(y), start=1):
            obs[f"tau_{l}"] = t
            obs[f"dtau_{l}"] = t - self.h[l - 1]
        return obs

    def dtp1_updates(self, y: State) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """DTP1: ``ΔW_ℓ = mean_B (τ_ℓ − h_ℓ) n_{ℓ-1}ᵀ`` with ``n = r/(‖r‖² + 1)`` (biased
        layers; the bias takes ``(τ_ℓ − h_ℓ)/(‖r‖² + 1)``): the minimum-norm change of
        ``(W_ℓ, b_ℓ)`` that moves ``h_ℓ`` onto ``τ_ℓ`` exactly, for one example."""
        return self.weight_updates(y, "dtp1")

    def weight_updates(self, y: State, form: str = "dtp1"
                       ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(ΔW_ℓ, Δb_ℓ)`` for ℓ = 1..L from the targets of state ``y``, batch-averaged:

        * ``dtp1``: :meth:`dtp1_updates`.
        * ``dtp``: DTP1 scaled by each layer's influence on the loss (Bengio 2020 §8),
          ``‖τ_L − h_L‖²/‖τ_ℓ − h_ℓ‖²`` per example, computed by :func:`influence_scaled`
          (no squared norm of a tiny vector is ever formed; a layer without a target change
          gets no update instead of 0/0).
        * ``local_loss``: gradient descent on ``½‖τ_ℓ − h_ℓ‖²`` with the target held fixed
          (Lee et al. 2015; Meulemans et al. 2020): ``ΔW_ℓ = mean_B (τ_ℓ − h_ℓ) r_{ℓ-1}ᵀ``.
          (Under ``"pre"`` targets live on pre-activations, so φ' of the post-activation form is
          absorbed.)

        Convention ``"post"`` (``h_ℓ = φ(a_ℓ)``): the same forms on the pre-activation change
        each implies, ``d_ℓ = φ_ℓ⁻¹(τ_ℓ) − a_ℓ`` for ``dtp1``/``dtp`` (the minimum-norm change of
        ``(W_ℓ, b_ℓ)`` that moves ``h_ℓ`` onto ``τ_ℓ`` exactly; an invertible φ and targets in
        its range) and ``d_ℓ = φ'(a_ℓ) ⊙ (τ_ℓ − h_ℓ)`` for ``local_loss`` (Meulemans et al.'s
        forward update: the gradient of ``½‖τ_ℓ − φ(W_ℓ h_{ℓ-1} + b_ℓ)‖²``).
        """
        if form not in UPDATE_FORMS:
            raise ValueError(f"form: received {form!r}, expected one of {list(UPDATE_FORMS)}")
        has_b = self.network.biases is not None
        changes = self._pre_activation_changes(y, form)
        if form == "dtp":
            changes = influence_scaled(changes)
        out = []
        for r, d in zip(self.rates, changes):
            if form == "local_loss":
                n, nb = r, torch.ones_like(r[..., :1])
            else:
                sq = (r ** 2).sum(-1, keepdim=True) + has_b
                n, nb = r / sq, 1 / sq
            dW = (d.transpose(-1, -2) @ n) / d.shape[-2]
            out.append((dW, (d * nb).mean(-2, keepdim=True) if has_b else None))
        return out

    def _pre_activation_changes(self, y: State, form: str) -> list[torch.Tensor]:
        """``[d_1, ..., d_L]`` for :meth:`weight_updates`: ``τ_ℓ − h_ℓ`` under ``"pre"``; under
        ``"post"`` ``φ_ℓ⁻¹(τ_ℓ) − a_ℓ`` (``dtp1``, ``dtp``) or ``φ'(a_ℓ) ⊙ (τ_ℓ − h_ℓ)``."""
        tau = self.targets(y)
        if self.convention == "pre":
            return [t - h for t, h in zip(tau, self.h)]
        if form == "local_loss":
            return [dp * (t - h) for t, h, dp in zip(tau, self.h, self.fwd.dphi)]
        out = []
        for l, (t, a) in enumerate(zip(tau, self.fwd.a), start=1):
            name = self.network.activation(l).name
            if name not in INVERSES:
                raise ValueError(f"form: received {form!r} with convention 'post' and layer "
                                 f"{l}'s activation {name!r}, expected an invertible one "
                                 f"{sorted(INVERSES)} (the update moves a_ℓ onto φ⁻¹(τ_ℓ)); "
                                 "use form='local_loss'")
            out.append(INVERSES[name](t) - a)
        return out

    # -- the iteration's contraction and alignment (Bengio 2020 §4, §5) ----------------------

    def iteration_residual(self, l: int, v: torch.Tensor) -> torch.Tensor:
        """The residual ``m_ℓ`` of layer ℓ's iterated inverse at ``v [S, B, n]``:

            iterated_output:  v = τ_{ℓ-1},  m_ℓ(v) = g_ℓ(f_ℓ(v)) − v     (g∘f − I)
            iterated_input:   v = u_ℓ,      m_ℓ(v) = f_ℓ(g_ℓ(v)) − v     (f∘g − I)

        One unit Euler step (dt = T) is ``v ↦ c − m_ℓ(v)`` with c = ``g_ℓ(τ_ℓ)`` (output) or
        ``τ_ℓ`` (input) once ``τ_ℓ`` has settled, so the iteration contracts at a rate ≤
        ``Lip(m_ℓ)`` and diverges where the spectral radius of ``∂m_ℓ/∂v`` at the limit
        exceeds 1 (:meth:`contraction_bounds`). ℓ = 2..L."""
        if self.rule not in ("iterated_output", "iterated_input"):
            raise ValueError(f"rule: received {self.rule!r}, expected 'iterated_output' or "
                             "'iterated_input' (only the iterated inverse has a residual)")
        if isinstance(l, bool) or not isinstance(l, int) or not 2 <= l <= self.L:
            raise ValueError(f"l: received {l!r}, expected a layer 2..{self.L} (one with a "
                             "decoder g_ℓ)")
        g = self.decoders[l - 2]
        if self.rule == "iterated_output":
            return g(self.f(l, v)) - v
        return self.f(l, g(v)) - v

    def contraction_bounds(self, l: int, limit: torch.Tensor, region: torch.Tensor | None = None,
                           replica: int = 0) -> tuple[float, float]:
        """``(α, ρ)`` of layer ℓ's iteration (:meth:`iteration_residual` ``m_ℓ``, one replica,
        one example): ``ρ`` the spectral radius of ``J = ∂m_ℓ/∂v`` at ``limit [n]`` (the
        linearised iteration is ``−J``: it converges locally for ρ < 1, diverges for ρ > 1);
        ``α = max ‖J‖₂`` over ``region [P, n]`` (None: at ``limit`` alone, exact for affine
        layers, whose J is constant), the Lipschitz constant of ``m_ℓ`` estimated from below by
        sampling, which bounds the per-step error ratio of iterates that stay in the region
        (e.g. :func:`visited_region`). Points where J is not finite (outside the decoder's
        domain, e.g. ``|·| ≥ 1`` under atanh) are skipped; α is nan when none is left."""
        def m(v):
            return self.iteration_residual(l, v[None, None])[replica, 0]
        jac = torch.func.vmap(torch.func.jacrev(m))
        rho = torch.linalg.eigvals(jac(limit[None])[0]).abs().max().item()
        J = jac(limit[None] if region is None else region)
        ok = torch.isfinite(J).flatten(1).all(1)
        if not ok.any():
            return float("nan"), rho
        return torch.linalg.matrix_norm(J[ok], ord=2).max().item(), rho

    def layer_target_angles(self, y: State, damping: float = 0.0) -> dict[str, list[torch.Tensor]]:
        """Per hidden layer ℓ = 1..L−1, per replica ``[S]``: the angle (degrees, batch
        flattened) between the target change ``τ_ℓ − h_ℓ`` of state ``y`` and

        * ``"gauss_newton"``: the Gauss-Newton target change ``τ_ℓ^GN − h_ℓ``
          (:meth:`gauss_newton_targets`, λ = ``damping``; formed as a difference of targets,
          like ``τ_ℓ − h_ℓ``, so both carry the same rounding), to which an exact inverse's
          targets align to first order in β (Bengio 2020 §5);
        * ``"backprop"``: backprop's ``δ_ℓ = −∂ℒ/∂h_ℓ``.

        :meth:`target_angles` is the same with the layers flattened together."""
        change = self.credits(y)[:-1]
        gn = self.gauss_newton_targets(damping)
        bp = self._backprop_steps()
        return {"gauss_newton": [credit.angle(d, gn[f"tau_{l}"] - h) for l, (d, h)
                                 in enumerate(zip(change, self.h), start=1)],
                "backprop": [credit.angle(d, b) for d, b in zip(change, bp)]}


def _is_function(value) -> bool:
    """A feedback function ``(network, x) → feedback`` (not a list, a string or a decoder)."""
    return callable(value) and not isinstance(value, (Decoder, torch.Tensor, str, list, tuple))


def influence_scaled(changes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``d_ℓ ‖d_L‖²/‖d_ℓ‖²`` per example for target changes ``d_ℓ = τ_ℓ − h_ℓ`` (last = output),
    with the scale carried as a scalar: ``d_ℓ = m_ℓ d̂_ℓ`` with ``m_ℓ = max|d_ℓ|``, so the result
    is ``(m_L/m_ℓ)·m_L·‖d̂_L‖²/‖d̂_ℓ‖² · d̂_ℓ`` and only O(1) vectors are squared (Bengio 2020
    §10.4). Where ``d_ℓ = 0`` the result is 0."""
    def split(d):                       # d = m·u with m = max|d| (1 where d = 0)
        m = d.abs().amax(-1, keepdim=True)
        m = torch.where(m > 0, m, torch.ones_like(m))
        u = d / m
        return m, u, (u ** 2).sum(-1, keepdim=True)
    m_L, _, usq_L = split(changes[-1])
    out = []
    for d in changes:
        m, u, usq = split(d)
        moved = usq > 0
        scale = (m_L / m) * m_L * usq_L / torch.where(moved, usq, torch.ones_like(usq))
        out.append(torch.where(moved, scale * u, torch.zeros_like(u)))
    return out


def gauss_newton_targets(network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor,
                         beta, damping: float = 0.0, convention: str = "pre"
                         ) -> list[torch.Tensor]:
    """``τ_ℓ = h_ℓ + β J̄_ℓᵀ(J̄_ℓ J̄_ℓᵀ + λI)⁻¹ δ_L`` for ℓ = 1..L, each ``[S, B, n_ℓ]`` (SPEC
    §5; λ = ``damping``, δ_L = −∂ℒ/∂h_L, J̄_ℓ = ∂h_L/∂h_ℓ per example), the first-order targets
    of an exact inverse when J̄_ℓ is invertible. λ = 0 (default) is the Moore–Penrose
    pseudo-inverse ``J̄_ℓ⁺ δ_L`` from an SVD (:func:`circuits.credit.gauss_newton_step`): the
    minimum-norm least-squares step, right also where a layer is narrower than the output
    (``J̄ J̄ᵀ`` singular). ``convention``: ``"pre"`` (``h = a``, ``δ_L = φ_L'(a_L) ⊙ (y − r_L)``)
    or ``"post"`` (``h = r``, ``δ_L = y − r_L``, :func:`post_output_jacobians`; Meulemans et
    al. 2020). ``x [B, n_0]``, ``target [B, n_L]`` (or with a leading S)."""
    _check_convention(convention)
    fwd = network.forward(x)
    error = network.output_like(target) - fwd.r[-1]
    if convention == "pre":
        steps = credit.gauss_newton(network, fwd, fwd.dphi[-1] * error, damping=damping)
        return [h + beta * s for h, s in zip(fwd.a, steps)]
    steps = [credit.gauss_newton_step(J, error, damping)
             for J in post_output_jacobians(network, fwd)]
    return [h + beta * s for h, s in zip(fwd.r[1:], steps)]


# -- the post-activation convention (Meulemans et al. 2020) ------------------------------------

def post_layer(network: ForwardNetwork, l: int, h_below: torch.Tensor) -> torch.Tensor:
    """``f_ℓ(h_{ℓ-1}) = φ_ℓ(W_ℓ h_{ℓ-1} + b_ℓ)``: layer ℓ's rate from layer ℓ−1's rate
    (``h_0 = x``); ``h_below [..., S, B, n_{ℓ-1}]`` → ``[..., S, B, n_ℓ]``."""
    out = h_below @ network.weights[l - 1].transpose(-1, -2)
    if network.biases is not None:
        out = out + network.biases[l - 1]
    return network.activation(l).phi(out)


def post_output_jacobians(network: ForwardNetwork, fwd) -> list[torch.Tensor]:
    """``J̄_ℓ = ∂r_L/∂r_ℓ`` for ℓ = 1..L, each ``[S, B, n_L, n_ℓ]`` (``J̄_L = I``), by
    ``J̄_ℓ = J̄_{ℓ+1} diag(φ'_{ℓ+1}(a_{ℓ+1})) W_{ℓ+1}`` from the top (``fwd``: a forward pass).
    Related to the pre-activation ``∂a_L/∂a_ℓ`` of :meth:`ForwardNetwork.output_jacobians` by
    ``∂r_L/∂r_ℓ = diag(φ_L') (∂a_L/∂a_{ℓ+1}) W_{ℓ+1}``."""
    S, B, nL = fwd.r[-1].shape
    J = torch.eye(nL, dtype=network.dtype, device=network.device).expand(S, B, nL, nL)
    out = [J]
    for l in range(network.L - 1, 0, -1):                    # from J̄_{ℓ+1} to J̄_ℓ
        J = (J * fwd.dphi[l][:, :, None, :]) @ network.weights[l][:, None]
        out.append(J)
    return out[::-1]


def output_jacobians(network: ForwardNetwork, fwd, convention: str = "pre"
                     ) -> list[torch.Tensor]:
    """``J̄_ℓ = ∂h_L/∂h_ℓ`` ``[S, B, n_L, n_ℓ]`` (ℓ = 1..L) in a convention: ``"pre"`` (h = a,
    :meth:`ForwardNetwork.output_jacobians`) or ``"post"`` (h = r,
    :func:`post_output_jacobians`)."""
    if _check_convention(convention) == "pre":
        return network.output_jacobians(fwd)
    return post_output_jacobians(network, fwd)


def _activities(network: ForwardNetwork, x: torch.Tensor, convention: str
                ) -> list[torch.Tensor]:
    """``[h_0 = x, h_1, ..., h_L]`` (``[S, B, n_ℓ]``) in a convention."""
    fwd = network.forward(x)
    return [fwd.r[0]] + (fwd.a if convention == "pre" else fwd.r[1:])


def _layer_map(network: ForwardNetwork, convention: str):
    return network.layer if convention == "pre" else \
        (lambda l, h: post_layer(network, l, h))


def difference_reconstruction_loss(network: ForwardNetwork, x: torch.Tensor, feedback,
                                   layer: int, noise: torch.Tensor, sigma: float,
                                   convention: str = "post") -> torch.Tensor:
    """The difference reconstruction loss (DRL, Meulemans et al. 2020) of the feedback into
    hidden layer ``layer`` = k (1..L−1), per replica ``[S]``.

    The activity ``h_k`` is corrupted, ``h̃_k = h_k + ξ`` (``noise`` ξ ``[K, B, n_k]`` or
    ``[K, S, B, n_k]``: K noise samples per example), propagated to the output, ``h̃_L =
    f_L ∘ … ∘ f_{k+1}(h̃_k)``, and reconstructed at layer k by the feedback in difference form:

    * direct linear feedback (DDTP-linear; ``feedback`` = ``[Q_1, ..., Q_{L-1}]`` each
      ``[S, n_ℓ, n_L]``): ``ĥ_k = h_k + Q_k (h̃_L − h_L)``;
    * decoders (DTP-DRL; ``feedback`` = ``[g_2, ..., g_L]``): DTP from ``τ_L = h̃_L`` down,
      ``τ_{ℓ-1} = g_ℓ(τ_ℓ) + h_{ℓ-1} − g_ℓ(h_ℓ)``, and ``ĥ_k = τ_k``;

    and ``DRL = mean_{K,B} ‖ĥ_k − h̃_k‖² / σ²``. Minimising it over Q_k (with a weight decay λ)
    gives :func:`difference_reconstruction_feedback`, which tends to the damped pseudo-inverse
    ``J̄_kᵀ(J̄_k J̄_kᵀ + λI)⁻¹`` as σ → 0; an exact inverse reconstructs exactly (DRL = 0).
    Differentiable in the feedback's tensors (autograd gives the DRL's gradient)."""
    _check_convention(convention)
    L = network.L
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= L - 1:
        raise ValueError(f"layer: received {layer!r}, expected a hidden layer 1..{L - 1} (where "
                         "the noise enters and the reconstruction is measured)")
    sigma = positive_float("sigma", sigma)
    if not isinstance(feedback, (list, tuple)) or len(feedback) != L - 1:
        raise ValueError(f"feedback: received {describe(feedback)}, expected {L - 1} matrices "
                         f"Q_ℓ [S, n_ℓ, n_L] (direct feedback) or {L - 1} decoders [g_2..g_L]")
    n_k = network.widths[layer]
    if not isinstance(noise, torch.Tensor) or noise.dim() not in (3, 4) \
            or noise.shape[-1] != n_k:
        raise ValueError(f"noise: received {getattr(noise, 'shape', describe(noise))}, expected "
                         f"a tensor [K, B, {n_k}] or [K, S, B, {n_k}] (noise at layer {layer})")
    h = _activities(network, x, convention)
    noise = noise.to(h[0])
    xi = noise if noise.dim() == 4 else noise[:, None]
    f = _layer_map(network, convention)
    corrupted = h[layer] + xi                                   # [K, S, B, n_k]
    out = corrupted
    for l in range(layer + 1, L + 1):
        out = f(l, out)
    if all(isinstance(g, Decoder) for g in feedback):
        tau = out
        for l in range(L, layer, -1):
            g = feedback[l - 2]                                 # g_ℓ: layer ℓ → ℓ−1
            tau = g(tau) + h[l - 1] - g(h[l])
        recon = tau
    else:
        Q = feedback[layer - 1]
        recon = h[layer] + (out - h[L]) @ Q.transpose(-1, -2)
    return ((recon - corrupted) ** 2).sum(-1).mean((0, -1)) / sigma ** 2


def coordinate_noise(width: int, sigma: float, dtype=torch.float64, device="cpu"
                     ) -> torch.Tensor:
    """Antithetic coordinate noise ``ξ = ±σ√n e_i`` (i = 1..n), ``[2n, 1, n]``: the same for
    every example, with ``mean ξ = 0`` and ``mean ξξᵀ = σ² I`` exactly (a deterministic
    stand-in for isotropic Gaussian noise of scale σ per unit)."""
    eye = sigma * width ** 0.5 * torch.eye(width, dtype=dtype, device=device)
    return torch.cat([eye, -eye])[:, None, :]


def difference_reconstruction_feedback(network: ForwardNetwork, x: torch.Tensor, sigma: float,
                                       damping: float = 0.0, noise=None,
                                       convention: str = "post") -> list[torch.Tensor]:
    """The direct linear feedback ``[Q_1, ..., Q_{L-1}]`` (each ``[S, n_ℓ, n_L]``) minimising
    :func:`difference_reconstruction_loss` plus the weight decay ``λ‖Q_ℓ‖²`` (λ = ``damping``)
    on the batch ``x``: the ridge regression of the injected noise on the output change,

        Δ = h̃_L − h_L,   A = mean_{K,B} ΔΔᵀ/σ²,   C = mean_{K,B} ξΔᵀ/σ²,   Q_ℓ = C (A + λI)⁻¹

    (λ = 0: ``C A⁺``, the minimum-norm minimiser). For small σ, ``Δ ≈ J̄_ℓ ξ`` and with
    ``mean ξξᵀ = σ²I`` this is ``Q_ℓ = J̄ᵀ(J̄J̄ᵀ + λI)⁻¹`` (one example; a batch mean of the
    moments for several): DDTP-linear's targets are then Gauss-Newton targets (SPEC §5).
    ``noise``: None (:func:`coordinate_noise` at each layer) or a list of L−1 tensors
    ``[K, B or 1, n_ℓ]`` / ``[K, S, B or 1, n_ℓ]``. For a layer narrower than the output, A is
    singular up to O(σ²) curvature terms outside the range of J̄ (a nonlinear net); use λ > 0
    there (the paper's DRL always carries a weight decay), or λ = 0 only on linear layers."""
    _check_convention(convention)
    sigma = positive_float("sigma", sigma)
    damping = nonnegative_float("damping", damping)
    L = network.L
    h = _activities(network, x, convention)
    if noise is None:
        noise = [coordinate_noise(n, sigma, h[0].dtype, h[0].device)
                 for n in network.widths[1:-1]]
    if not isinstance(noise, (list, tuple)) or len(noise) != L - 1:
        raise ValueError(f"noise: received {describe(noise)}, expected None or {L - 1} tensors "
                         "[K, B, n_ℓ] (one per hidden layer)")
    f = _layer_map(network, convention)
    out = []
    for k in range(1, L):
        xi = noise[k - 1].to(h[0])
        xi = xi if xi.dim() == 4 else xi[:, None]
        xi = xi.expand(-1, h[k].shape[0], h[k].shape[1], -1)
        y = h[k] + xi
        for l in range(k + 1, L + 1):
            y = f(l, y)
        delta = (y - h[L]).transpose(0, 1).flatten(1, 2)         # [S, K·B, n_L]
        xi = xi.transpose(0, 1).flatten(1, 2)                    # [S, K·B, n_k]
        count = delta.shape[1] * sigma ** 2
        A = delta.transpose(-1, -2) @ delta / count
        C = xi.transpose(-1, -2) @ delta / count
        if damping == 0.0:
            rtol = A.shape[-1] * torch.finfo(A.dtype).eps
            out.append(C @ torch.linalg.pinv(A, rtol=rtol, hermitian=True))
        else:
            eye = damping * torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
            out.append(torch.linalg.solve(A + eye, C.transpose(-1, -2)).transpose(-1, -2))
    return out


# -- measuring the iterated inverse (Bengio 2020 §4) ----------------------------------------------

def normalised_inverse_decoders(network: ForwardNetwork, radius: float, seed=0
                                ) -> list[InverseDecoder]:
    """Decoders ``g_ℓ(h) = φ⁻¹(M_ℓ (h − b_ℓ))`` whose linearised iteration has spectral radius
    exactly ``radius`` at every layer: ``M_ℓ = W_ℓ⁻¹ + radius·E_ℓ/ρ(E_ℓ W_ℓ)``, E_ℓ the seeded
    direction of :func:`inverse_decoders` (perturbation 1). Then ``I − M W = −radius·E W/ρ(EW)``
    (``iterated_output``; ``W M − I``, ``iterated_input``, is similar to ``M W − I``), so a
    perturbation means the same on every seed and an affine layer diverges past ``radius = 1``.
    Square layers and an invertible activation, as :func:`inverse_decoders`."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) \
            or not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius: received {radius!r}, expected a finite number ≥ 0 (the "
                         "spectral radius of the linearised iteration)")
    out = []
    for l, g in enumerate(inverse_decoders(network, perturbation=1.0, seed=seed), start=2):
        W = network.weights[l - 1]
        E = g.M - torch.linalg.inv(W)
        rho = torch.linalg.eigvals(E @ W).abs().amax((-1,), keepdim=True)[..., None]
        out.append(InverseDecoder(torch.linalg.inv(W) + radius * E / rho, g.b,
                                  network.activation(l - 1)))
    return out


def visited_region(iterates: torch.Tensor, limit: torch.Tensor, samples: int, seed: int = 0,
                   per_segment: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Where to measure ``Lip(m)`` of an iteration (:meth:`TargetPropagation.contraction_bounds`)
    from its ``iterates [K, n]`` and ``limit [n]``: the iterates, the limit and ``per_segment``
    points on each segment from an iterate to the limit (a step's ratio ``‖m(u) − m(u*)‖/‖u −
    u*‖`` is bounded by the Jacobian norm along that segment), ``[K + 1 + per_segment·K, n]``;
    and, looser, ``samples`` seeded uniform points of their bounding box widened by 10 % per
    side, ``[samples, n]``."""
    s = torch.linspace(0, 1, per_segment, dtype=iterates.dtype, device=iterates.device)
    segments = (iterates[None] + s[:, None, None] * (limit - iterates)[None]
                ).reshape(-1, limit.shape[-1])
    pts = torch.cat([iterates, limit[None], segments])
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = 0.1 * (hi - lo) + 1e-12
    g = torch.Generator().manual_seed(seed)
    box = lo - pad + (hi - lo + 2 * pad) * torch.rand(samples, limit.shape[-1], generator=g,
                                                      dtype=iterates.dtype).to(iterates.device)
    return pts, box


def contraction_rate(errors: torch.Tensor, roundoff: float = 1e-11
                     ) -> tuple[float, float, int]:
    """An iteration's measured contraction from the distances ``errors [K]`` of its iterates
    to the limit: over the leading run of finite errors above ``roundoff·errors[0]`` (below
    it, rounding sets the ratio), ``(rate, max_ratio, count)`` with ``rate = (e_{k-1}/e_0)^{1/(k-1)}``
    the geometric mean of the per-step ratios ``e_{i+1}/e_i``, ``max_ratio`` the largest of
    them and ``count`` their number; ``(nan, nan, 0)`` with fewer than two usable errors."""
    usable = (errors > roundoff * errors[0]) & torch.isfinite(errors)
    k = int(usable.long().cumprod(0).sum().item())
    if k < 2:
        return float("nan"), float("nan"), 0
    ratios = errors[1:k] / errors[:k - 1]
    return (errors[k - 1] / errors[0]).item() ** (1.0 / (k - 1)), ratios.max().item(), k - 1
