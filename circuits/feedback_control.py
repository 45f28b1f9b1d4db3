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

Weight rules (``update``; what :meth:`~DeepFeedbackControl.credits` returns, times the rates
:meth:`~DeepFeedbackControl.presynaptic` returns, batch-averaged):

* ``rate_difference`` (default, the published rule and the authors' default
  ``learning_rule="nonlinear_difference"``): ``ΔW_ℓ ∝ (φ_ℓ(v_ℓ) − φ_ℓ(v_ℓ^B)) r_{ℓ-1}ᵀ`` with the
  basal voltage ``v_ℓ^B = W_ℓ r_{ℓ-1} + b_ℓ`` and the *controlled* presynaptic rate
  ``r_{ℓ-1} = φ(v_{ℓ-1})`` (``r_0 = x``). This is what the paper writes ``φ(v_ℓ) − φ(v_ℓ^ff)``: its
  ``v^ff`` is the basal compartment driven by the current (controlled) rates, not the
  feed-forward pass of the network; the authors' code recomputes ``v^B`` from the controlled
  ``r_{ℓ-1}`` and learns with that same ``r_{ℓ-1}`` (``use_initial_activations=False``). At the
  steady state ``v_ℓ − v_ℓ^B = Q_ℓ u`` exactly, so the rule is ``φ(v_ℓ) − φ(v_ℓ − Q_ℓ u)``.
* ``voltage_difference`` (this project's rule before issue 15, kept bit for bit): the apical
  voltage ``Q_ℓ u`` with the *feed-forward* rates ``r_{ℓ-1}^ff``. The authors' variant of that
  name uses the soma–basal difference ``v_ℓ − v_ℓ^B`` (= ``Q_ℓ u`` at the steady state) with the
  controlled rates: pass ``presynaptic="controlled"`` for those rates.

``presynaptic``: ``"controlled"`` or ``"feed_forward"`` (the authors' ``use_initial_activations``);
by default controlled for ``rate_difference`` and feed-forward for ``voltage_difference``. Both
rules agree to first order in the nudge up to the factor ``φ'(a_ℓ)`` (tanh: a few degrees apart;
linear: identical at the steady state).

Time-averaged updates (the authors' ``grad_deltav_cont``, "DFC" vs "DFC-SS"):
:meth:`~DeepFeedbackControl.weight_updates` with ``average=True`` averages the update over a saved
trajectory. A :class:`circuits.plasticity.Plastic` circuit with ``gate="always"`` integrates the
same instantaneous update continuously, ``∫ ΔW dt = T · average``.

Discrete step orders (:meth:`~DeepFeedbackControl.step_authors`): the authors' code steps the
controller and the layers in a fixed order with two switches, ``inst_transmission`` (layer ℓ's
basal drive uses layer ℓ−1's rate *after* this step's update) and ``proactive_controller`` (the
apical voltages use the controller output updated with this step's error). These are properties of
a discrete scheme, not of the vector field, so they live in one stepping method; with both off and
``k_p = 0`` it is Euler on :meth:`~DeepFeedbackControl.vector_field` (with ``k_p > 0`` their
proportional term lags by one step, see the method).
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
UPDATES = ("rate_difference", "voltage_difference")
PRESYNAPTIC = ("controlled", "feed_forward")


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
        update: the weight rule, ``rate_difference`` (default, published) or
            ``voltage_difference``, see the module docstring.
        presynaptic: the presynaptic rates the weights learn with, ``controlled`` or
            ``feed_forward``; None (default): controlled for ``rate_difference``, feed-forward
            for ``voltage_difference``.

    State: ``v_ℓ`` (forward, ℓ = 1..L) and ``u`` (the integral controller). Observed as well:
    ``fb_ℓ = Q_ℓ u`` (feedback), ``credit_ℓ`` (what the layer learns from: the rate change the
    control causes, or ``fb_ℓ`` for ``voltage_difference``), ``r_ℓ`` and the output error ``e``.
    """

    def __init__(self, network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor, *,
                 target_mode: str = "weak", nudge: float = 0.1, alpha=1e-3, k_i=1.0, k_p=0.0,
                 tau_v=0.2, tau_u=1.0, leak: str = "integral",
                 feedback: str | Sequence[torch.Tensor] = "jacobian", feedback_seed=None,
                 feedback_scale: float = 1.0, update: str = "rate_difference",
                 presynaptic: str | None = None):
        if update not in UPDATES:
            raise ValueError(f"update: received {update!r}, expected one of {list(UPDATES)}")
        if presynaptic is None:
            presynaptic = "controlled" if update == "rate_difference" else "feed_forward"
        if presynaptic not in PRESYNAPTIC:
            raise ValueError(f"presynaptic: received {presynaptic!r}, expected one of "
                             f"{list(PRESYNAPTIC)} or None")
        self.update_rule, self.presynaptic_rates = update, presynaptic
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

    def _basal(self, l: int, r: torch.Tensor) -> torch.Tensor:
        """Layer ℓ's basal voltage ``v_ℓ^B = W_ℓ r + b_ℓ`` for presynaptic rates ``r``
        ``[S, B, n_{ℓ-1}]`` (or with leading axes, e.g. a trajectory ``[T, S, B, n_{ℓ-1}]``)."""
        net = self.network
        bias = None if net.biases is None else net.biases[l - 1]
        if r.dim() == 3:
            return affine(r, self._Wt[l - 1], bias)
        out = r @ self._Wt[l - 1]
        return out if bias is None else out + bias

    def _drives(self, y: State):
        """Per layer ``v_ℓ^B = W_ℓ φ(v_{ℓ-1}) + b_ℓ``, and the output error e."""
        net = self.network
        r = self.x
        drives = []
        for l in range(1, net.L + 1):
            drives.append(self._basal(l, r))
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
        rate = self.update_rule == "rate_difference"
        for l, c in enumerate(self.credits(y) if rate else
                              [obs[f"fb_{l}"] for l in range(1, net.L + 1)], start=1):
            obs[f"credit_{l}"] = c
        return obs

    def _rates(self, y: State) -> list[torch.Tensor]:
        """``[r_0 = x, φ(v_1), ..., φ(v_L)]`` at state ``y`` (x broadcast to y's leading axes)."""
        net = self.network
        rates = [self.x]
        for l in range(1, net.L + 1):
            rates.append(net.activation(l).phi(y[f"v_{l}"]))
        lead = rates[-1].shape[:-3]
        if lead:
            rates[0] = self.x.expand(*lead, *self.x.shape)
        return rates

    def credits(self, y: State) -> list[torch.Tensor]:
        """What each layer learns from, ``[S, B, n_ℓ]`` per layer (any leading axes of ``y``,
        e.g. a trajectory ``[T, S, B, n_ℓ]``, are kept):

        * ``rate_difference``: ``φ_ℓ(v_ℓ) − φ_ℓ(v_ℓ^B)``, ``v_ℓ^B = W_ℓ φ(v_{ℓ-1}) + b_ℓ`` (the rate
          change the control causes, seen against the basal drive of the current rates);
        * ``voltage_difference``: the feedback ``Q_ℓ u`` with ``u = u_int + k_p e``."""
        net = self.network
        if self.update_rule == "rate_difference":
            rates = self._rates(y)
            return [rates[l] - net.activation(l).phi(self._basal(l, rates[l - 1]))
                    for l in range(1, net.L + 1)]
        r = y[f"v_{net.L}"]
        e = self.r_star - net.activation(net.L).phi(r)
        u = y["u"] + self.k_p * e
        return [u @ Qt for Qt in self._Qt]

    def presynaptic(self, y: State) -> list[torch.Tensor]:
        """The presynaptic rates ``r_{ℓ-1}`` (ℓ = 1..L) the weights learn with at state ``y``:
        the controlled ``[x, φ(v_1), ..., φ(v_{L-1})]`` or the feed-forward pass
        ``forward.r[:-1]`` (``presynaptic``), each ``[S, B, n_{ℓ-1}]`` (with y's leading axes)."""
        if self.presynaptic_rates == "controlled":
            return self._rates(y)[:-1]
        lead = y["u"].shape[:-3]
        return [r.expand(*lead, *r.shape) for r in self.forward.r[:-1]]

    def weight_updates(self, y: State, average: bool = False
                       ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``[(ΔW_ℓ, Δb_ℓ)]`` (ℓ = 1..L, an ascent direction, no learning rate):
        ``ΔW_ℓ = mean_B credit_ℓ r_{ℓ-1}ᵀ`` ``[S, n_ℓ, n_{ℓ-1}]``, ``Δb_ℓ = mean_B credit_ℓ``
        ``[S, 1, n_ℓ]`` (None without biases), with :meth:`credits` and :meth:`presynaptic`.

        ``y``: a state ``[S, B, n]`` (e.g. the steady state), or with ``average=True`` a
        trajectory ``[T, S, B, n]`` (``solve(..., save_every=1).ys`` on a fixed step): the update
        is then the mean over the T saved points, ``(1/T) Σ_t mean_B credit_ℓ(t) r_{ℓ-1}(t)ᵀ``
        (the authors' time-averaged update ``grad_deltav_cont``; pass points on a uniform grid
        for a time average)."""
        lead = y["u"].dim() - 3
        if lead != (1 if average else 0):
            raise ValueError(f"y: received populations with {y['u'].dim()} axes, expected "
                             f"{'4 ([T, S, B, n], a trajectory)' if average else '3 ([S, B, n])'}"
                             f" with average={average}")
        credits, rates = self.credits(y), self.presynaptic(y)
        B = credits[0].shape[-2]
        out = []
        for c, r in zip(credits, rates):
            dW = c.transpose(-1, -2) @ r / B
            db = c.mean(-2, keepdim=True) if self.network.biases is not None else None
            if average:
                dW = dW.mean(0)
                db = None if db is None else db.mean(0)
            out.append((dW, db))
        return out

    def authors_initial_state(self) -> State:
        """:meth:`initial_state` plus ``u_total`` ``[S, B, n_L]`` = 0, the total control the
        authors' scheme carries between steps (their ``u[0] = 0``), for :meth:`step_authors`."""
        y = self.initial_state()
        y["u_total"] = torch.zeros_like(y["u"])
        return y

    def step_authors(self, y: State, dt: float, inst_transmission: bool = False,
                     proactive_controller: bool = False) -> State:
        """One step of the authors' discrete scheme (their ``controller`` with instantaneous
        apical compartment, ``apical_time_constant = dt``), in this circuit's units
        (``dt`` in time, τ_u and τ_v explicit; theirs is ``dt/τ_u`` with ``τ_v/τ_u =
        time_constant_ratio``). ``y``: :meth:`authors_initial_state` or a previous result.

            e[k]          = r_L* − φ_L(v_L[k])
            u_int[k+1]    = u_int[k] + dt/τ_u (k_i e[k] − α ρ[k])      ρ = u_total[k] (leak total)
                                                                        or u_int[k] (integral)
            u_total[k+1]  = u_int[k+1] + k_p e[k]
            v_ℓ[k+1]      = v_ℓ[k] + dt/τ_v (−v_ℓ[k] + W_ℓ r_{ℓ-1} + b_ℓ + Q_ℓ ū)

        with ``r_{ℓ-1} = φ(v_{ℓ-1}[k+1])`` if ``inst_transmission`` (layers updated bottom-up),
        else ``φ(v_{ℓ-1}[k])``, and ``ū = u_total[k+1]`` if ``proactive_controller`` else
        ``u_total[k]``. With both off and ``k_p = 0`` this is Euler on :meth:`vector_field`;
        with ``k_p > 0`` the proportional term the layers see lags one step (``u_total[k]``
        carries ``e[k−1]``), as in their code. The published MNIST configs use both switches on.
        Returns the next state (same keys)."""
        dt = positive_float("dt", dt)
        net = self.network
        e = self.r_star - net.activation(net.L).phi(y[f"v_{net.L}"])
        leaked = y["u_total"] if self.leak_on == "total" else y["u"]
        u_int = y["u"] + dt * (self.k_i * e - self.alpha * leaked) / self.tau_u
        u_total = u_int + self.k_p * e
        u_bar = u_total if proactive_controller else y["u_total"]
        out: State = {"u": u_int, "u_total": u_total}
        r = self.x
        for l in range(1, net.L + 1):
            v = y[f"v_{l}"]
            drive = self._basal(l, r) + u_bar @ self._Qt[l - 1]
            out[f"v_{l}"] = v + dt * (drive - v) / self.tau_v
            source = out if inst_transmission else y
            r = net.activation(l).phi(source[f"v_{l}"])
        return out

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
        ``fb_ℓ* = Q_ℓ u*`` ``[S, B, n_ℓ]`` (``u*`` = ``u_total``); ``credit_ℓ* = fb_ℓ*`` for
        ``voltage_difference`` and, linearised like the rest, ``φ_ℓ'(a_ℓ^ff) ⊙ fb_ℓ*`` for
        ``rate_difference`` (exact on a linear network)."""
        star = self.steady_state()
        u = star["u_total"]
        star["e"] = self.alpha_tilde * u
        rate = self.update_rule == "rate_difference"
        for l, Q in enumerate(self.feedback, start=1):
            star[f"fb_{l}"] = u @ Q.transpose(-1, -2)
            star[f"credit_{l}"] = (self.forward.dphi[l - 1] * star[f"fb_{l}"] if rate
                                   else star[f"fb_{l}"])
        return star
