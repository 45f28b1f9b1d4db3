"""Deep feedback control: one PI controller at the output drives every layer (Meulemans et al.
2021; SPEC §2).

    τ_v dv_ℓ/dt   = −v_ℓ + W_ℓ φ(v_{ℓ-1}) + b_ℓ + Q_ℓ u          (ℓ = 1..L, φ(v_0) = x)
    e             = r_L* − r_L,   r_L = φ_L(v_L)
    u             = u_int + k_p e
    τ_u du_int/dt = k_i e − α ρ                                   (ρ = u_int or u: the leak)

Targets: ``weak`` nudges the feed-forward output, ``r_L* = r_L^ff + λ (y − r_L^ff)`` (λ = nudge,
squared error), ``strong`` clamps it to the label, ``r_L* = y``.

Leak convention. Podlaski's DI and this project leak the *integral* state (``leak="integral"``,
the default): the steady state then sees ``α̃ = α / (k_i + α k_p)``. The DFC authors' code leaks
the *total* control (``leak="total"``), which gives ``α̃ = α / k_i`` (α itself for k_i = 1). Both
are implemented and both formulas are tested.

Closed form (linearised about the feed-forward pass, exact as the nudge → 0):
``u* = (J Q + α̃ I)⁻¹ δ_L`` with ``J = [∂r_L/∂v_1 ... ∂r_L/∂v_L]`` (perturbations propagated
through the layers above) and ``δ_L = r_L* − r_L^ff``; the feedback delivered is ``Q_ℓ u*`` and
``Δv_ℓ = Q_ℓ u* + W_ℓ φ'(a_{ℓ-1}) Δv_{ℓ-1}``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .circuit import CreditCircuit, State
from .dynamic_inversion import _transposed
from .network import ForwardNetwork, affine, compact
from .feedback import random_feedback
from .parameters import Population, Role, given_matrices, positive_float

TARGETS = ("weak", "strong")
LEAKS = ("integral", "total")
FEEDBACK = ("jacobian", "random")


class DeepFeedbackControl(CreditCircuit):
    """DFC on one batch of examples.

    Args:
        network: the forward network (copied to S replicas if S = 1).
        x, target: input ``[B, n_0]`` and label ``[B, n_L]``.
        target_mode: ``weak`` (nudge λ = ``nudge``) or ``strong`` (clamp to the label).
        alpha, k_i, k_p, tau_v, tau_u: leak, gains and time constants (number or S numbers).
        leak: ``integral`` (default) or ``total``, see the module docstring.
        feedback: ``jacobian`` (``Q = Jᵀ`` at the feed-forward pass, averaged over the batch),
            ``random`` (seeded by ``feedback_seed``), or a list of ``Q_ℓ`` ``[S, n_ℓ, n_L]``.
        feedback_seed: for ``random``: an int (every replica the same ``Q``), S ints (replica s
            drawn from ``feedback_seed[s]``, as an S = 1 circuit with that int draws it) or None
            (default: replica s from seed s). See :mod:`circuits.feedback`.
        feedback_scale: multiplies Q (a large loop gain is what makes pure I control unstable).

    State: ``v_ℓ`` (forward, ℓ = 1..L) and ``u`` (the integral controller). Observed as well:
    ``fb_ℓ = Q_ℓ u`` (feedback), ``credit_ℓ`` (the same signal: what the layer learns from),
    ``r_ℓ`` and the output error ``e``.
    """

    def __init__(self, network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor, *,
                 target_mode: str = "weak", nudge: float = 0.1, alpha=1e-3, k_i=1.0, k_p=0.0,
                 tau_v=0.2, tau_u=1.0, leak: str = "integral",
                 feedback: str | Sequence[torch.Tensor] = "jacobian", feedback_seed=None,
                 feedback_scale: float = 1.0):
        if target_mode not in TARGETS:
            raise ValueError(f"target_mode: received {target_mode!r}, expected one of "
                             f"{list(TARGETS)}")
        if leak not in LEAKS:
            raise ValueError(f"leak: received {leak!r}, expected one of {list(LEAKS)}")
        self.target_mode, self.leak_on = target_mode, leak
        nudge = positive_float("nudge", nudge)
        feedback_scale = positive_float("feedback_scale", feedback_scale)
        self._bind(network, ("k_i", "tau_v", "tau_u"), alpha=alpha, k_i=k_i, k_p=k_p,
                   tau_v=tau_v, tau_u=tau_u)
        net, S, dt, dev = self.network, self.S, self.network.dtype, self.network.device
        self.nudge = nudge
        self._prepare_drive(x, target)
        shapes = [(n, net.widths[-1]) for n in net.widths[1:]]
        self.feedback_scale = feedback_scale
        self.jacobian_feedback = isinstance(feedback, str) and feedback == "jacobian"
        if isinstance(feedback, str):
            if feedback not in FEEDBACK:
                raise ValueError(f"feedback: received {feedback!r}, expected one of "
                                 f"{list(FEEDBACK)} or a list of tensors")
            if feedback == "random":
                self.feedback = [feedback_scale * q for q in
                                 random_feedback(shapes, S, feedback_seed, dt, dev)]
        else:
            self.feedback = [feedback_scale * q for q in given_matrices(
                "feedback", feedback, shapes, S, dt, dev, str(list(FEEDBACK)))]
        self._derive(True)
        if self.jacobian_feedback:
            self.refresh_feedback()
        self.populations = ([Population(f"v_{l}", Role.FORWARD, n, l)
                             for l, n in enumerate(net.widths[1:], start=1)]
                            + [Population("u", Role.CONTROLLER, net.widths[-1], net.L)])

    def _derive(self, compact_weights: bool) -> None:
        net = self.network
        self.forward = fwd = net.forward(self.x, prepared=True)
        r_ff = fwd.r[-1]
        self.r_star = (r_ff + self.nudge * (self.given - r_ff) if self.target_mode == "weak"
                       else self.given)
        self.delta_L = self.r_star - r_ff
        share = compact if compact_weights else (lambda w: w)
        self._Wt = [_transposed(share(W), compact_weights) for W in net.weights]
        if compact_weights and not self.jacobian_feedback:
            self._Qt = [compact(q).transpose(-1, -2).contiguous() for q in self.feedback]

    @property
    def jacobians(self) -> list[torch.Tensor]:
        """``J_ℓ = ∂r_L/∂v_ℓ = φ_L'(a_L) ⊙ ∂a_L/∂a_ℓ`` at the feed-forward pass, ``[S, B, n_L, n_ℓ]``."""
        fwd = self.forward
        return [fwd.dphi[-1][..., :, None] * J for J in self.network.output_jacobians(fwd)]

    def refresh_feedback(self) -> None:
        """``feedback="jacobian"``: set ``Q = Jᵀ`` (batch mean) at the current weights and
        input. A learning circuit calls this once per presentation (the feedback pathway is
        held while one example is shown; recomputing the Jacobians every step would cost more
        than the step itself); other feedback rules are fixed."""
        if self.jacobian_feedback:
            self.feedback = [self.feedback_scale * J.mean(1).transpose(-1, -2)
                             for J in self.jacobians]
            self._Qt = [q.transpose(-1, -2) for q in self.feedback]

    @property
    def alpha_tilde(self) -> torch.Tensor:
        if self.leak_on == "integral":
            return self.alpha / (self.k_i + self.alpha * self.k_p)
        return self.alpha / self.k_i

    def initial_state(self) -> State:
        """The feed-forward pass with the controller at rest."""
        y = {f"v_{l}": a.clone() for l, a in enumerate(self.forward.a, start=1)}
        y["u"] = torch.zeros_like(self.r_star)
        return y

    def _drives(self, y: State):
        """Per layer ``W_ℓ φ(v_{ℓ-1}) + b_ℓ``, and the output error e."""
        net = self.network
        r = self.x
        drives = []
        for l in range(1, net.L + 1):
            drives.append(affine(r, self._Wt[l - 1],
                                 None if net.biases is None else net.biases[l - 1]))
            r = net.activation(l).phi(y[f"v_{l}"])
        return drives, self.r_star - r

    def vector_field(self, t: float, y: State) -> State:
        drives, e = self._drives(y)
        u = y["u"] + self.k_p * e
        out = {}
        for l, drive in enumerate(drives, start=1):
            out[f"v_{l}"] = affine(u, self._Qt[l - 1], drive - y[f"v_{l}"]) / self.tau_v
        leaked = y["u"] if self.leak_on == "integral" else u
        out["u"] = (self.k_i * e - self.alpha * leaked) / self.tau_u
        return out

    def leak(self, y: State) -> dict[str, torch.Tensor]:
        rates = {f"v_{l}": 1.0 / self.tau_v for l in range(1, self.network.L + 1)}
        if self.leak_on == "integral":
            rates["u"] = self.alpha / self.tau_u
        return rates

    def observe(self, y: State) -> State:
        net = self.network
        obs = dict(y)
        r = self.x
        for l in range(1, net.L + 1):
            r = net.activation(l).phi(y[f"v_{l}"])
            obs[f"r_{l}"] = r
        obs["e"] = self.r_star - r
        u = y["u"] + self.k_p * obs["e"]
        for l in range(1, net.L + 1):
            obs[f"fb_{l}"] = u @ self._Qt[l - 1]
            obs[f"credit_{l}"] = obs[f"fb_{l}"]
        return obs

    def credits(self, y: State) -> list[torch.Tensor]:
        """The feedback each layer receives, ``Q_ℓ u`` with ``u = u_int + k_p e``."""
        r = y[f"v_{self.network.L}"]
        e = self.r_star - self.network.activation(self.network.L).phi(r)
        u = y["u"] + self.k_p * e
        return [u @ Qt for Qt in self._Qt]

    def steady_state(self) -> State:
        """Linearised closed form keyed like the state: ``v_ℓ* = a_ℓ^ff + Δv_ℓ``, ``u*`` the
        integral state. ``u_total`` (= u_int* + k_p e*) is added for reference."""
        net, fwd = self.network, self.forward
        nL = net.widths[-1]
        JQ = sum(J @ q[:, None] for J, q in zip(self.jacobians, self.feedback))
        eye = torch.eye(nL, dtype=JQ.dtype, device=JQ.device)
        u = torch.linalg.solve(JQ + self.alpha_tilde[:, None] * eye,
                               self.delta_L[..., None])[..., 0]
        e = self.alpha_tilde * u          # steady state: e = α̃ u
        star: State = {}
        dv = None
        for l in range(1, net.L + 1):
            fb = u @ self._Qt[l - 1]
            dv = fb if dv is None else fb + (fwd.dphi[l - 2] * dv) @ self._Wt[l - 1]
            star[f"v_{l}"] = fwd.a[l - 1] + dv
        star["u"] = u - self.k_p * e
        star["u_total"] = u
        return star

    def observed_steady_state(self) -> State:
        """:meth:`steady_state` plus what :meth:`observe` shows there, linearised like it: the
        output error ``e* = α̃ u*`` ``[S, B, n_L]`` (exact at the fixed point, where
        ``k_i e = α ρ`` for either leak; evaluating ``r_L* − φ(v_L*)`` at the linearised ``v*`` would add an
        O(nudge²) error to a quantity that is itself O(α̃ · nudge)) and the feedback
        ``fb_ℓ* = credit_ℓ* = Q_ℓ u*`` ``[S, B, n_ℓ]`` (``u*`` = ``u_total``)."""
        star = self.steady_state()
        u = star["u_total"]
        star["e"] = self.alpha_tilde * u
        for l, Q in enumerate(self.feedback, start=1):
            star[f"fb_{l}"] = u @ Q.transpose(-1, -2)
            star[f"credit_{l}"] = star[f"fb_{l}"]
        return star
