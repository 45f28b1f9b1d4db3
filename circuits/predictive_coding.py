"""Predictive coding (Whittington & Bogacz 2017; Song et al. 2020; SPEC §3).

Value populations ``x_ℓ`` (ℓ = 1..L; ``x_0`` is the input, clamped), predictions
``μ_ℓ = W_ℓ f(x_{ℓ-1}) + b_ℓ`` (``f(x_0) = x_0``), errors ``ε_ℓ = (x_ℓ − μ_ℓ)/σ²_ℓ`` and energy
``F = Σ_ℓ ‖x_ℓ − μ_ℓ‖² / (2σ²_ℓ)``:

    τ_x dx_ℓ/dt = −ε_ℓ + f'(x_ℓ) ⊙ W_{ℓ+1}ᵀ ε_{ℓ+1}     hidden layers (= −∂F/∂x_ℓ)
    τ_x dx_L/dt = −ε_L   (output free)    or    y − x_L   (teacher present, output clamped)
    τ_x dW_ℓ/dt = η · mean_B (g_ℓ ⊙ ε_ℓ) f(x_{ℓ-1})ᵀ,     τ_x db_ℓ/dt = η · mean_B g_ℓ ⊙ ε_ℓ
    τ_ε dε_ℓ/dt = x_ℓ − μ_ℓ − σ²_ℓ ε_ℓ                   (``errors="leaky"``; same fixed point)

``g_ℓ`` is a plasticity gate (:mod:`circuits.gates`). While the teacher is present the output
error uses the target itself (the clamp acts at once). The weight rate is per τ_x, so one Euler
step with dt = τ_x applies exactly ``η ε fᵀ``.

Correspondence with :class:`ForwardNetwork`: ``x_ℓ`` is the pre-activation ``a_ℓ``, f is the
hidden activation, the output is linear (``μ_L = a_L``), and with σ² = 1 the clamped output error
``ε_L = y − a_L`` is backprop's δ_L for the loss ``½‖y − a_L‖²`` (averaged over the batch).

Z-IL (exactly backprop): (C1) start at the feed-forward pass (:meth:`initial_state`), (C2)
``plasticity=Schedule.z_il(L)``, (C3) Euler with ``dt = τ_x``; then the error wave moves one
layer per step and ``ΔW_ℓ = η δ_ℓ r_{ℓ-1}ᵀ`` (:func:`backprop_updates`, the closed form).
Fa-Z-IL replaces the schedule by :class:`ArrivalGate` and C1 by a prediction-mode settle.
Fixed-prediction PC (``predictions="fixed"``, Millidge et al. 2020) freezes μ and f' at the
feed-forward pass: its errors settle on δ exactly, with the transient of
:func:`fixed_prediction_transient` (closed forms: :meth:`PredictiveCoding.steady_state`,
:meth:`~PredictiveCoding.equilibrium_errors`, :meth:`~PredictiveCoding.transient_errors`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from . import credit
from .circuit import Circuit, State
from .feedback import per_seed, replica_seeds
from .gates import Plasticity, Schedule, Signals
from .losses import LOSSES, equivalent_target
from .network import ForwardNetwork
from .parameters import Population, Role, as_replica_parameter, replica_count

ERRORS = ("explicit", "leaky")
PREDICTIONS = ("live", "fixed")
RESETS = ("none", "feed_forward")


class PredictiveCoding(Circuit):
    """A predictive-coding network on one batch of examples.

    Args:
        network: the forward network (its output activation must be linear); S replicas.
        x: input ``[B, n_0]`` or ``[S, B, n_0]``.
        target: the teacher ``[B, n_L]``; ``None`` leaves the output free (prediction mode).
            :meth:`present` changes input and teacher between solves.
        variances: σ²_ℓ, one number for every layer or a list of L (each a number or S numbers).
        tau_x: time constant of the value neurons (number or S numbers).
        eta: learning rate η (number or S numbers); used only with ``plasticity``.
        loss: ``None`` (the target is clamped as given: squared error) or one of
            :data:`circuits.losses.LOSSES`: the target given is then the labels, and the output
            is clamped to ``r_L − ∂ℒ/∂r_L`` at the feed-forward output of the weights when the
            teacher is presented (:func:`circuits.losses.equivalent_target`).
        reset: ``"feed_forward"`` makes every :meth:`present` with a state jump the values to the
            feed-forward pass (Z-IL's C1 per example, for training in one integration with
            ``Schedule.z_il(L, cycle=period)``); ``"none"`` (default) lets them run on.
        plasticity: a :class:`~circuits.gates.Plasticity` gate; weights and biases are then
            state (``W_ℓ``, ``b_ℓ``), else fixed at the network's.
        errors: ``explicit`` (ε a function of x) or ``leaky`` (ε a population with ``tau_eps``).
        predictions: ``live`` or ``fixed`` (μ and f' frozen at the feed-forward pass).

    State: ``x_ℓ`` (ℓ = 1..L), ``eps_ℓ`` (leaky errors), ``W_ℓ``/``b_ℓ`` (plastic), the gate's
    populations. :meth:`observe` adds ``eps_ℓ``, ``mu_ℓ``, ``fb_ℓ`` (feedback input
    ``W_{ℓ+1}ᵀ ε_{ℓ+1}``), ``gate_ℓ`` (state-driven gates) and the energy ``F`` ``[S, B, 1]``.
    """

    def __init__(self, network: ForwardNetwork, x: torch.Tensor,
                 target: torch.Tensor | None = None, *, variances=1.0, tau_x=1.0, eta=0.0,
                 plasticity: Plasticity | None = None, errors: str = "explicit",
                 tau_eps=0.1, predictions: str = "live", reset: str = "none",
                 loss: str | None = None):
        if not isinstance(network, ForwardNetwork):
            raise TypeError(f"network: received {type(network).__name__}, expected a "
                            "circuits.ForwardNetwork")
        if network.output_activation.name != "linear":
            raise ValueError(f"network.output_activation: received "
                             f"{network.output_activation.name!r}, expected 'linear' (the "
                             "predictive-coding energy predicts the output value itself)")
        if errors not in ERRORS:
            raise ValueError(f"errors: received {errors!r}, expected one of {list(ERRORS)}")
        if reset not in RESETS:
            raise ValueError(f"reset: received {reset!r}, expected one of {list(RESETS)}")
        if reset == "feed_forward" and plasticity is None:
            raise ValueError("reset: received 'feed_forward' without plasticity, expected a "
                             "plasticity gate (the reset reads the weights from the state)")
        if loss is not None and loss not in LOSSES:
            raise ValueError(f"loss: received {loss!r}, expected None or one of {list(LOSSES)}")
        self.reset, self.loss = reset, loss
        if predictions not in PREDICTIONS:
            raise ValueError(f"predictions: received {predictions!r}, expected one of "
                             f"{list(PREDICTIONS)}")
        if plasticity is not None and not isinstance(plasticity, Plasticity):
            raise TypeError(f"plasticity: received {type(plasticity).__name__}, expected None "
                            "or a circuits.gates.Plasticity (Continuous, Schedule, ArrivalGate)")
        if plasticity is not None and predictions == "fixed":
            raise ValueError("plasticity: received a gate with predictions='fixed', expected "
                             "None (fixed-prediction PC freezes the forward pass it learns on)")
        L = network.L
        if isinstance(variances, (list, tuple)):
            if len(variances) != L:
                raise ValueError(f"variances: received {len(variances)} values, expected one "
                                 f"per layer (L = {L}) or a single number")
            var_list = list(variances)
        else:
            var_list = [variances] * L
        for l, v in enumerate(var_list):     # validate under the user's name before binding
            as_replica_parameter(f"variances[{l}]", v, replica_count("variances", v),
                                 network.dtype, network.device, allow_minimum=False)
        self._bind(network, ("tau_x", "tau_eps"), tau_x=tau_x, eta=eta, tau_eps=tau_eps,
                   **{f"sigma2_{l}": v for l, v in enumerate(var_list, start=1)})
        net = self.network
        self.variances = [getattr(self, f"sigma2_{l}") for l in range(1, L + 1)]
        self.L, self.plasticity = L, plasticity
        self.leaky, self.fixed = errors == "leaky", predictions == "fixed"
        self.f = net.hidden_activation
        self.x = net.input(x)
        self.batch = self.x.shape[1]
        self.present(self.x, target)
        widths = net.widths
        self.populations = [Population(f"x_{l}", Role.FORWARD, widths[l], l)
                            for l in range(1, L + 1)]
        if self.leaky:
            self.populations += [Population(f"eps_{l}", Role.ERROR, widths[l], l)
                                 for l in range(1, L + 1)]
        if plasticity is not None:
            self.populations += [Population(f"W_{l}", Role.WEIGHT, widths[l], l)
                                 for l in range(1, L + 1)]
            if net.biases is not None:
                self.populations += [Population(f"b_{l}", Role.WEIGHT, widths[l], l)
                                     for l in range(1, L + 1)]
            self.populations += plasticity.populations(widths)

    # -- the drive ---------------------------------------------------------------------------

    def present(self, x: torch.Tensor | None = None, target: torch.Tensor | None = None,
                y: State | None = None, *, check: bool = True) -> State | None:
        """Change what the circuit sees between solves: a new input ``x`` (None keeps the
        current one) and the teacher (``target``; None removes it and frees the output).
        ``check=False`` checks shapes only (no host synchronisation: for a drive inside a
        chunk of steps).

        With ``reset="feed_forward"`` and the state at the jump ``y``, a new example (another
        input, or an input after a teacher was shown; the teacher's arrival for the input
        already shown is no new example) also jumps the circuit to the free phase's
        equilibrium: the values to the
        feed-forward pass at the weights of ``y`` (Z-IL's condition C1 at every example,
        instead of settling to it) and the gate's own populations to their quiet state
        (:meth:`Plasticity.quiet_state`: Fa-Z-IL's timers armed); returns those populations
        (``x_ℓ``, zero ``eps_ℓ``, the gate's) for the drive to put into the state."""
        net = self.network
        # a new example: another input, or any input after a teacher (a new presentation);
        # only the teacher's arrival for the input already shown is no new example
        shown, taught = getattr(self, "_shown", None), getattr(self, "_taught", True)
        new_input = x is not None and (x is not shown or taught)
        self._shown, self._taught = (x if x is not None else shown), target is not None
        if x is not None:
            x = net.input(x, check_finite=check)
            if x.shape[1] != self.batch:
                raise ValueError(f"x: received {x.shape[1]} examples, expected B = "
                                 f"{self.batch} (the batch size is part of the state's shape)")
            self.x = x
            if self.fixed:
                fwd = net.forward(x)
                self._mu_ff, self._dphi_ff = fwd.a, fwd.dphi[:-1]
        if target is None:
            self.target = torch.zeros(net.replicas, self.batch, net.widths[-1], dtype=net.dtype,
                                      device=net.device)
            self.teacher = torch.zeros((), dtype=net.dtype, device=net.device)
        else:
            self.target = net.output_like(target, check_finite=check)
            if self.target.shape[1] != self.batch:
                raise ValueError(f"target: received {self.target.shape[1]} examples, expected "
                                 f"B = {self.batch} like x")
            if self.loss is not None and self.loss != "squared_error":
                W, b = (net.weights, net.biases) if y is None or self.plasticity is None \
                    else self.parameters(y)
                output = net.with_parameters(W, b).forward(self.x, prepared=True).r[-1]
                self.target = equivalent_target(self.loss, output, self.target)
            self.teacher = torch.ones((), dtype=net.dtype, device=net.device)
        if self.reset == "feed_forward" and y is not None and new_input:
            W, b = self.parameters(y)
            fwd = net.with_parameters(W, b).forward(self.x, prepared=True)
            jump = {f"x_{l}": a for l, a in enumerate(fwd.a, start=1)}
            if self.leaky:
                jump.update({f"eps_{l}": torch.zeros_like(a) for l, a in enumerate(fwd.a, 1)})
            if self.plasticity is not None:         # the gate at the free phase's equilibrium
                jump.update(self.plasticity.quiet_state(fwd.a))
            return jump
        return None

    # -- state -------------------------------------------------------------------------------

    def initial_state(self, perturbation: float = 0.0, seed: int = 0) -> State:
        """The feed-forward pass (C1: every hidden error zero), optionally with N(0, p²) noise
        on the hidden values (the "perturbed start" ablation). Gates start disarmed.

        ``seed``: the noise's, an int (every replica the same noise) or S ints (replica s's
        from ``seed[s]``, as an S = 1 circuit with that int draws it: the seed rule of
        :mod:`circuits.feedback`)."""
        if isinstance(perturbation, bool) or not isinstance(perturbation, (int, float)) \
                or not perturbation >= 0 or not math.isfinite(perturbation):
            raise ValueError(f"perturbation: received {perturbation!r}, expected a number ≥ 0")
        net = self.network
        fwd = net.forward(self.x)
        S = fwd.a[0].shape[0]
        seeds = replica_seeds("seed", seed, S)
        noises = None
        if perturbation:        # replica s's noise from its own seed, layer after layer
            noises = per_seed(seeds, lambda g: [
                torch.randn(a.shape[1:], generator=g, dtype=torch.float64)
                for a in fwd.a[:self.L - 1]])
        y: State = {}
        for l, a in enumerate(fwd.a, start=1):
            noise = 0.0
            if noises is not None and l < self.L:
                noise = perturbation * noises[l - 1].to(a)
            y[f"x_{l}"] = a + noise
        if self.leaky:
            y.update({f"eps_{l}": torch.zeros_like(a) for l, a in enumerate(fwd.a, start=1)})
        if self.plasticity is not None:
            y.update({f"W_{l}": W.clone() for l, W in enumerate(net.weights, start=1)})
            if net.biases is not None:
                y.update({f"b_{l}": b.clone() for l, b in enumerate(net.biases, start=1)})
            y.update(self.plasticity.initial_state(fwd.a))
        return y

    def parameters(self, y: State) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Weights and biases: from the state when plastic, else the network's."""
        net = self.network
        if self.plasticity is None:
            return net.weights, net.biases
        W = [y[f"W_{l}"] for l in range(1, self.L + 1)]
        b = None if net.biases is None else [y[f"b_{l}"] for l in range(1, self.L + 1)]
        return W, b

    @property
    def fast(self) -> list[str]:
        """The populations that settle (values, errors, gate states): everything but the
        weights (for stepping methods that treat them apart, ``solvers.train``'s
        ``exp_partitioned``)."""
        return [p.name for p in self.populations if p.role != Role.WEIGHT]

    def outputs(self, y: State, x: torch.Tensor) -> torch.Tensor:
        """The network's feed-forward output ``[S, M, n_L]`` on inputs ``x [M, n_0]`` with the
        weights of ``y`` (for evaluation; every learning circuit has this)."""
        W, b = self.parameters(y)
        return self.network.with_parameters(W, b).forward(x).r[-1]

    # -- the dynamics ------------------------------------------------------------------------

    def _signals(self, y: State):
        """Rates, predictions, errors, feedback inputs and f' from the state (any leading
        axes before ``[S, ...]``)."""
        L, f = self.L, self.f
        W, b = self.parameters(y)
        x = [y[f"x_{l}"] for l in range(1, L + 1)]
        x[-1] = self.teacher * self.target + (1 - self.teacher) * x[-1]
        rates = [self.x] + [f.phi(v) for v in x[:-1]]
        if self.fixed:
            mu, dphi = self._mu_ff, self._dphi_ff
        else:
            mu = [r @ Wl.transpose(-1, -2) + (0 if b is None else b[l])
                  for l, (r, Wl) in enumerate(zip(rates, W))]
            dphi = [f.dphi(v) for v in x[:-1]]
        if self.leaky:
            eps = [y[f"eps_{l}"] for l in range(1, L + 1)]
        else:
            eps = [(v - m) / s2 for v, m, s2 in zip(x, mu, self.variances)]
        fb = [eps[l] @ W[l] for l in range(1, L)]          # W_{ℓ+1}ᵀ ε_{ℓ+1}, ℓ = 1..L-1
        return x, rates, mu, eps, fb, dphi

    def vector_field(self, t: float, y: State) -> State:
        L, tau = self.L, self.tau_x
        x, rates, mu, eps, fb, dphi = self._signals(y)
        out: State = {}
        for l in range(1, L):
            out[f"x_{l}"] = (dphi[l - 1] * fb[l - 1] - eps[l - 1]) / tau
        m = self.teacher
        out[f"x_{L}"] = (m * (self.target - y[f"x_{L}"]) - (1 - m) * eps[-1]) / tau
        if self.leaky:
            for l in range(1, L + 1):
                out[f"eps_{l}"] = (x[l - 1] - mu[l - 1] - self.variances[l - 1] * eps[l - 1]
                                   ) / self.tau_eps
        if self.plasticity is not None:
            gates, d_gate = self.plasticity.gates(t, y, Signals(eps, fb, dphi, m, tau))
            rate = self.eta / tau
            for l in range(1, L + 1):
                ge = gates[l - 1] * eps[l - 1]
                out[f"W_{l}"] = rate * (ge.transpose(-1, -2) @ rates[l - 1]) / self.batch
                if self.network.biases is not None:
                    out[f"b_{l}"] = rate * ge.mean(-2, keepdim=True)
            out.update(d_gate)
        return out

    def leak(self, y: State) -> dict[str, torch.Tensor]:
        """Linear decay rates: values through −ε (1/(σ²τ_x); the clamped output at 1/τ_x),
        or, with leaky errors, the errors at σ²/τ_ε."""
        if self.leaky:
            return {f"eps_{l}": self.variances[l - 1] / self.tau_eps
                    for l in range(1, self.L + 1)}
        rates = {f"x_{l}": 1.0 / (self.variances[l - 1] * self.tau_x) for l in range(1, self.L)}
        m = self.teacher
        rates[f"x_{self.L}"] = (m + (1 - m) / self.variances[-1]) / self.tau_x
        return rates

    def observe(self, y: State) -> State:
        obs = dict(y)
        x, rates, mu, eps, fb, dphi = self._signals(y)
        energy = 0
        for l in range(1, self.L + 1):
            obs[f"eps_{l}"], obs[f"mu_{l}"] = eps[l - 1], mu[l - 1]
            energy = energy + (self.variances[l - 1] * eps[l - 1] ** 2).sum(-1, keepdim=True) / 2
        for l in range(1, self.L):
            obs[f"fb_{l}"] = fb[l - 1]
        obs["F"] = energy
        if self.plasticity is not None:
            gates, _ = self.plasticity.gates(None, y, Signals(eps, fb, dphi, self.teacher,
                                                              self.tau_x))
            if gates is not None:
                for l, g in enumerate(gates, start=1):
                    obs[f"gate_{l}"] = g.expand_as(eps[l - 1])
        return obs

    def errors(self, y: State) -> list[torch.Tensor]:
        """ε_ℓ for ℓ = 1..L."""
        return self._signals(y)[3]

    def il_updates(self, y: State) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Inference learning's update at a relaxed state: ``σ²_L η ε_ℓ f(x_{ℓ-1})ᵀ`` (the
        output variance is the teacher's strength, so the update is rescaled by it)."""
        x, rates, mu, eps, fb, dphi = self._signals(y)
        scale = self.eta * self.variances[-1]
        out = []
        for l in range(1, self.L + 1):
            e = eps[l - 1]
            dW = scale * (e.transpose(-1, -2) @ rates[l - 1]) / self.batch
            db = None if self.network.biases is None else scale * e.mean(-2, keepdim=True)
            out.append((dW, db))
        return out

    def weight_changes(self, y0: State, y1: State
                       ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(W_ℓ(1) − W_ℓ(0), b_ℓ(1) − b_ℓ(0))`` between two states of a plastic circuit."""
        if self.plasticity is None:
            raise ValueError("plasticity: received None, expected a gate (the weights of this "
                             "circuit are not state, so they never change)")
        has_b = self.network.biases is not None
        return [(y1[f"W_{l}"] - y0[f"W_{l}"],
                 y1[f"b_{l}"] - y0[f"b_{l}"] if has_b else None) for l in range(1, self.L + 1)]

    # -- closed forms (fixed predictions) ----------------------------------------------------

    def _equilibrium(self, what: str):
        """The feed-forward pass and ε*_ℓ (see :meth:`equilibrium_errors`)."""
        if not self.fixed:
            raise ValueError(f"{what} needs the constructor argument 'predictions': received "
                             "'live', expected 'fixed' (backprop's δ is the equilibrium only "
                             "when predictions are frozen at the feed-forward pass; live "
                             "predictions have no closed form)")
        net = self.network
        fwd = net.forward(self.x)
        top = self.teacher * (self.target - fwd.a[-1]) / self.variances[-1]
        return fwd, credit.backprop(net, fwd, top)

    def equilibrium_errors(self) -> list[torch.Tensor]:
        """Fixed-prediction PC's equilibrium errors ``ε*_ℓ`` ``[S, B, n_ℓ]``, ℓ = 1..L::

            ε*_L = (y − a_L) / σ²_L          (teacher present: the output clamped to y)
            ε*_ℓ = f'(a_ℓ) ⊙ W_{ℓ+1}ᵀ ε*_{ℓ+1}

        with ``a_ℓ`` the feed-forward pre-activations (where μ and f' are frozen): backprop's
        cascade, so with σ²_L = 1 these are backprop's δ_ℓ for ``½‖y − a_L‖²``. Hidden variances
        do not enter (they scale ``x* − a``, not ε*). Without a teacher every ε* is 0.
        Raises ValueError for ``predictions="live"`` (no closed form)."""
        return self._equilibrium("equilibrium_errors()")[1]

    def steady_state(self) -> State:
        """The fixed-prediction fixed point keyed like the state: values
        ``x*_ℓ = a_ℓ + σ²_ℓ ε*_ℓ`` ``[S, B, n_ℓ]`` (so ``x*_L = y`` with the teacher) and, with
        ``errors="leaky"``, ``eps_ℓ* = ε*_ℓ`` (:meth:`equilibrium_errors`). It is the same for
        explicit and leaky errors, any σ² and τ_x. Needs ``predictions="fixed"``."""
        fwd, eps = self._equilibrium("steady_state()")
        star: State = {f"x_{l}": a + s2 * e for l, (a, s2, e)
                       in enumerate(zip(fwd.a, self.variances, eps), start=1)}
        if self.leaky:
            star.update({f"eps_{l}": e for l, e in enumerate(eps, start=1)})
        return star

    def observed_steady_state(self) -> State:
        """:meth:`steady_state` plus what :meth:`observe` shows there, each ``[S, B, n_ℓ]``:
        errors ``eps_ℓ = ε*_ℓ``, predictions ``mu_ℓ = a_ℓ``, feedback inputs
        ``fb_ℓ = W_{ℓ+1}ᵀ ε*_{ℓ+1}`` (ℓ < L) and the energy ``F = Σ_ℓ σ²_ℓ‖ε*_ℓ‖²/2``
        ``[S, B, 1]``. Needs ``predictions="fixed"``."""
        fwd, eps = self._equilibrium("observed_steady_state()")
        star = self.steady_state()
        energy = 0
        for l, (a, e, s2) in enumerate(zip(fwd.a, eps, self.variances), start=1):
            star[f"eps_{l}"], star[f"mu_{l}"] = e, a
            energy = energy + (s2 * e ** 2).sum(-1, keepdim=True) / 2
        for l, W in enumerate(self.network.weights[1:], start=1):
            star[f"fb_{l}"] = eps[l] @ W
        star["F"] = energy
        return star

    def transient_errors(self, t, dt: float | None = None) -> list[torch.Tensor]:
        """The errors ``ε_ℓ(t)`` of fixed-prediction PC started at the feed-forward pass
        (:meth:`initial_state`), ``t`` time since the start: a number (gives ``[S, B, n_ℓ]``)
        or a 1-D tensor ``[T]`` (gives ``[T, S, B, n_ℓ]``), ℓ = 1..L::

            ε_ℓ(t) = ε*_ℓ · P_{L−ℓ}(t)

        ``P_k`` is :func:`fixed_prediction_transient` for the layer k below the output: the
        Erlang(k, 1/τ_x) CDF in continuous time (``dt=None``); with Euler steps ``dt``
        (γ = dt/τ_x ≤ 1) ``P[Bin(n, γ) ≥ k]`` after n steps and, between steps, the straight
        line joining them (Euler's polygon, which is what :func:`solvers.solve` records at
        ``save_at`` times between steps). Holds for explicit errors, unit variances and one
        τ_x for every replica; anything else raises ValueError."""
        if self.leaky:
            raise ValueError("transient_errors() needs the constructor argument 'errors': "
                             "received 'leaky', expected 'explicit' (the law is for errors "
                             "that follow the values at once)")
        if any(bool((v != 1).any()) for v in self.variances):
            raise ValueError("transient_errors() needs the constructor argument 'variances': "
                             f"received {[v.reshape(-1).tolist() for v in self.variances]}, "
                             "expected 1 for every layer (the law is for unit variances)")
        taus = torch.unique(self.tau_x.reshape(-1))
        if taus.numel() != 1:
            raise ValueError(f"transient_errors() needs the constructor argument 'tau_x': "
                             f"received {taus.tolist()}, expected one value for every replica")
        tau = float(taus)
        if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float))
                               or not 0 < dt <= tau):
            raise ValueError(f"dt: received {dt!r}, expected None (continuous time) or an "
                             f"Euler step 0 < dt ≤ τ_x = {tau:g} (γ = dt/τ_x ≤ 1)")
        star = self._equilibrium("transient_errors()")[1]
        scalar = not isinstance(t, torch.Tensor)
        times = torch.as_tensor(t, dtype=torch.float64, device="cpu").reshape(-1)
        if not bool((torch.isfinite(times) & (times >= 0)).all()):
            raise ValueError(f"t: received {t!r}, expected finite times ≥ 0 (since the start at "
                             "the feed-forward pass)")
        out = []
        for l, e in enumerate(star, start=1):
            k = self.L - l
            if dt is None:
                frac = torch.tensor([fixed_prediction_transient(k, s, tau)
                                     for s in times.tolist()], dtype=torch.float64)
            else:
                steps = times / dt
                below = steps.floor()
                m = below.long().tolist()
                law = {n: fixed_prediction_transient(k, n * dt, tau, dt / tau)
                       for n in sorted(set(m) | {n + 1 for n in m})}
                lo = torch.tensor([law[n] for n in m], dtype=torch.float64)
                hi = torch.tensor([law[n + 1] for n in m], dtype=torch.float64)
                frac = torch.lerp(lo, hi, steps - below)
            frac = frac.to(device=e.device, dtype=e.dtype)[:, None, None, None]
            out.append((frac * e)[0] if scalar else frac * e)
        return out


# -- closed forms -----------------------------------------------------------------------------

def backprop_updates(network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor,
                     eta=1.0) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """What Z-IL must reproduce: ``ΔW_ℓ = η mean_B δ_ℓ r_{ℓ-1}ᵀ``, ``Δb_ℓ = η mean_B δ_ℓ`` for
    the loss ``½‖y − a_L‖²`` (δ on pre-activations; ``η`` a number or ``[S, 1, 1]``)."""
    fwd = network.forward(x)
    delta = network.output_like(target) - fwd.a[-1]
    deltas = [delta]
    for l in range(network.L, 1, -1):
        deltas.append(fwd.dphi[l - 2] * (deltas[-1] @ network.weights[l - 1]))
    deltas = deltas[::-1]
    B = delta.shape[1]
    out = []
    for l, d in enumerate(deltas, start=1):
        dW = eta * (d.transpose(-1, -2) @ fwd.r[l - 1]) / B
        db = None if network.biases is None else eta * d.mean(-2, keepdim=True)
        out.append((dW, db))
    return out


def update_divergence(a: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
                      b: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
                      biases: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ|a − b|, Σ|b|)`` per replica ``[S]``: the L1 distance between two sets of updates
    over all weights (and biases if asked), and the L1 size of the reference ``b``."""
    dist = size = 0
    for (wa, ba), (wb, bb) in zip(a, b):
        pairs = [(wa, wb)] + ([(ba, bb)] if biases and ba is not None else [])
        for p, q in pairs:
            dist = dist + (p - q).abs().flatten(1).sum(1)
            size = size + q.abs().flatten(1).sum(1)
    return dist, size


def fixed_prediction_transient(k: int, t: float, tau_x: float = 1.0,
                               gamma: float | None = None) -> float:
    """Fraction of its equilibrium δ that the error k layers below the clamped output holds at
    time t, starting from the feed-forward pass with μ and f' frozen (SPEC §3).

    Each layer relaxes towards the one above with rate 1/τ_x, so in continuous time the
    fraction is the Erlang(k, 1/τ_x) CDF ``1 − e^{−s} Σ_{j<k} s^j/j!`` (s = t/τ_x); with Euler
    steps of ``γ = dt/τ_x`` (``gamma``), after n = t/dt steps it is ``P[Bin(n, γ) ≥ k]``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k: received {k!r}, expected an integer ≥ 0 (layers below the output)")
    if gamma is None:
        s = t / tau_x
        return 1.0 - math.exp(-s) * sum(s ** j / math.factorial(j) for j in range(k))
    n = round(t / (gamma * tau_x))
    if k > n:
        return 0.0
    if gamma >= 1.0:
        return 1.0
    # 1 − P[Bin(n, γ) < k], the pmf in log space (math.comb overflows a float past ~1000 steps)
    lg, lq = math.log(gamma), math.log1p(-gamma)
    below = sum(math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
                         + j * lg + (n - j) * lq) for j in range(k))
    return max(0.0, 1.0 - below)


# -- measurements (Song et al. 2020) ----------------------------------------------------------

def error_wave(obs: State, network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor
               ) -> torch.Tensor:
    """``[T, S, L]``: the fraction of backprop's credit each layer's error holds along a recorded
    trajectory, ``‖ε_ℓ(t)‖ / ‖δ_ℓ‖`` (norms over the examples and units of each replica).

    ``obs[f"eps_{ℓ}"]`` is ``[T, S, B, n_ℓ]`` (e.g. :meth:`PredictiveCoding.observe` recorded
    along a solve) and δ_ℓ is backprop's credit for ``½‖y − a_L‖²`` on ``(x, target)``. Under
    Z-IL the wave moves down one layer per inference step: layer ℓ's ratio is 0 before step
    L − ℓ and 1 at it (where the clock lets ``W_ℓ`` learn)."""
    L = network.L
    missing = [f"eps_{l}" for l in range(1, L + 1) if f"eps_{l}" not in obs]
    if missing:
        raise ValueError(f"obs: received keys {sorted(obs)}, expected eps_1 ... eps_{L} (missing "
                         f"{missing}; record PredictiveCoding.observe along the solve)")
    fwd = network.forward(x)
    deltas = credit.backprop(network, fwd, network.output_like(target) - fwd.a[-1])
    return torch.stack([obs[f"eps_{l}"].flatten(2).norm(dim=2) / d.flatten(1).norm(dim=1)
                        for l, d in enumerate(deltas, start=1)], -1)


def dead_units(network: ForwardNetwork, x: torch.Tensor) -> tuple[float, int]:
    """Where backprop's feedback stops on the inputs ``x``: the fraction of hidden units ×
    examples × replicas with ``f'(a_ℓ) = 0`` (dead ReLUs), and the number of examples (counted
    over all replicas) for which some hidden layer has f' = 0 on every unit. Feedback to the
    layers below such a layer is exactly zero, so a feedback-arrival gate (Fa-Z-IL) there never
    sees the teacher's wave and fires late, when the bottom-up prediction moves its error."""
    dphi = network.forward(x).dphi[:-1]
    if not dphi:
        return 0.0, 0
    fraction = float(sum((d == 0).sum() for d in dphi) / sum(d.numel() for d in dphi))
    dead = torch.stack([(d == 0).all(-1) for d in dphi]).any(0)
    return fraction, int(dead.sum())


def z_il_circuit(network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor, eta: float, *,
                 gamma: float = 1.0, schedule=Schedule.z_il, start: float = -0.5
                 ) -> PredictiveCoding:
    """Z-IL's circuit (Song et al. 2020), to be stepped L times by Euler with ``dt = γ``
    (τ_x = 1) from its :meth:`~PredictiveCoding.initial_state` (C1, the feed-forward pass): the
    target clamped, plasticity under the clock ``schedule(L, start=start)`` (C2; default
    :meth:`Schedule.z_il`, :meth:`Schedule.together` breaks it) and learning rate η/γ. With
    γ = 1 (C3) the weight change is backprop's update (:func:`backprop_updates`).

    η/γ: the weight rate is per τ_x, so a step of γτ_x applies γη εfᵀ; the rescale keeps each
    update at η and leaves only the incomplete inference step, so γ < 1 breaks C3 alone. For
    the same reason the clock's windows are centred on the nominal step times k·τ_x (``start =
    −τ_x/2``): with γ = 1 this gates exactly the Euler steps that start = 0 does, but with
    γ = 0.99999 the k-th step falls at 0.99999·k, just before k, and windows starting at k would
    give it to layer L − k + 1 (layer L would learn twice, layer 1 never:
    :func:`circuits.gates.clock_openings`); centred, each layer learns once, at its own step."""
    for name, value in (("eta", eta), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}: received {value!r}, expected a finite number > 0")
    return PredictiveCoding(network, x, target, eta=eta / gamma,
                            plasticity=schedule(network.L, start=start))
