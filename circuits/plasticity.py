"""Weights as state: any credit circuit becomes a learning circuit (SPEC §1–§5, DESIGN "training is
integration").

:class:`Plastic` adds the forward network's weights and biases to a credit circuit's state and
lets them flow by the weight change the circuit's state implies,

    dW_ℓ/dt = η g · ΔW_ℓ(y),      db_ℓ/dt = η g · Δb_ℓ(y),

where ``ΔW_ℓ`` is batch-averaged (e.g. ``mean_B credit_ℓ r_{ℓ-1}ᵀ``) and ``g ∈ [0, 1]`` is a
plasticity gate computed from the circuit's own populations. The credit circuit is built and
validated once; every evaluation *rebinds* it (:meth:`CreditCircuit.rebind`) to the current
weights and the presented input: its forward pass, clamped output error and weight-dependent
feedback (``B = −Wᵀ``) follow the weights as they learn, so nothing is stale, and nothing else is
recomputed (feedback held per example, such as DFC's ``Q = Jᵀ`` or TP's decoders, is refreshed
when an example is presented). A :class:`Family` says how a circuit is built and rebound and
which weight change its state implies:

* :class:`ClosedForm` — backprop, feedback alignment, pseudo-backprop and NDI (DI's closed-form
  steady state): no populations of their own, the credit is instantaneous, the gate always open;
* :class:`Settling` — a circuit whose credit populations settle (:class:`DynamicInversion`,
  :class:`SingleLoopDynamicInversion`, :class:`DeepFeedbackControl`): the weights learn from
  ``credit_ℓ`` read off the settling state;
* :class:`Targets` — target propagation: the weights learn from ``τ_ℓ − h_ℓ``
  (:meth:`TargetPropagation.weight_updates`), the feedback (decoders or Q) at its learning rule's
  fixed point for the current weights (given as a function).

**The gate** is any gate of the one protocol :class:`circuits.gates.Plasticity` whose signals a
Plastic circuit has. The default, the settle gate (:class:`circuits.gates.Settled`), is
``g = exp(−(ρ/θ)²)`` with ``ρ = ‖ẏ_c‖ / (‖y_c‖ + ε)`` the relative rate of change of the credit
populations (per replica, over the whole batch): a new input disturbs them and closes the gate,
and the gate reopens by itself once they have settled, without a clock. ``θ`` (1/time) is the
rate below which the circuit counts as settled. ``gate="always"`` keeps plasticity on
throughout (the credit is then used while it is still settling).

Circuits that own their plasticity (:class:`PredictiveCoding` with a gate,
:class:`LocalDecoders`) need no wrapper: they have weights in their state already.
Every learning circuit has ``present(x, target, y)``, which :func:`solvers.train` calls at each
declared jump of its drive, and ``outputs(y, x)``; :mod:`circuits.registry` builds them by name.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import torch

from . import credit as credits_
from .circuit import Circuit, State
from .dynamic_inversion import DynamicInversion
from .network import ForwardNetwork
from .feedback import random_feedback
from .gates import Continuous, LayerSchedule, Schedule, Settled, Signals
from .losses import LOSSES, equivalent_target
from .parameters import Population, Role, check_finite_tensor, positive_float
from .weight_flow import GradientFlow, weight_flow

Update = list[tuple[torch.Tensor, torch.Tensor | None]]
GATES = ("settled", "always")
RESETS = ("none", "rest")


def outer_updates(credits: Sequence[torch.Tensor], rates: Sequence[torch.Tensor],
                  biases: bool) -> Update:
    """``(mean_B c_ℓ r_{ℓ-1}ᵀ, mean_B c_ℓ)`` per layer for credits ``c_ℓ [S, B, n_ℓ]`` and
    presynaptic rates ``r_{ℓ-1} [S, B, n_{ℓ-1}]``."""
    B = credits[0].shape[-2]
    return [((c.transpose(-1, -2) @ r) / B, c.mean(-2, keepdim=True) if biases else None)
            for c, r in zip(credits, rates)]


class Family(ABC):
    """How a credit circuit is built on ``(network, x, target)`` — once, validated — how it is
    rebound to the weights of the current state and the presented example on every evaluation
    (:meth:`bind`: no validation, no host synchronisation), and the weight change
    ``[(ΔW_ℓ, Δb_ℓ)]`` (ℓ = 1..L, batch-averaged, an ascent direction) its state implies."""

    #: whether the circuit has populations of its own that settle (else the gate stays open)
    settles: bool = True

    @abstractmethod
    def build(self, network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor) -> Any:
        ...

    def bind(self, circuit: Any, network: ForwardNetwork, x: torch.Tensor,
             target: torch.Tensor) -> Any:
        """``circuit`` (built by :meth:`build`) on the weights of ``network`` and the prepared
        drive ``x [S, B, n_0]``, ``target [S, B, n_L]``."""
        return circuit.rebind(network, x, target)

    def present(self, circuit: Any) -> None:
        """A new example is shown to ``circuit`` (already bound to the weights at the jump):
        refresh what is held for one presentation (feedback pathways)."""
        refresh = getattr(circuit, "refresh_feedback", None)
        if refresh is not None:
            refresh()

    @abstractmethod
    def updates(self, circuit: Any, y: State) -> Update:
        ...


class _Instant:
    """A credit with no populations: the forward pass and the clamped output credit."""

    populations: list[Population] = []

    def __init__(self, network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor):
        self.network = network
        self.forward = network.forward(x, prepared=True)
        self.delta_L = self.forward.dphi[-1] * (target - self.forward.r[-1])

    def rebind(self, network, x, target) -> "_Instant":
        return _Instant(network, x, target)

    def initial_state(self) -> State:
        return {}

    def vector_field(self, t: float, y: State) -> State:
        return {}


class ClosedForm(Family):
    """Instantaneous credit: ``backprop``, ``feedback_alignment`` (fixed random ``B_ℓ``
    ``[S, n_{ℓ-1}, n_ℓ]`` drawn N(0, scale²/n_ℓ) from ``seed`` on first use, or given),
    ``pseudo_backprop`` (``W⁺``) or ``ndi`` (layer-wise DI's closed-form steady state; ``dynamics``
    are :class:`DynamicInversion`'s keyword arguments, e.g. ``alpha``).

    ``seed`` (feedback alignment): an int (every replica the same ``B``), S ints (replica s
    drawn from ``seed[s]``, as an S = 1 network with that int draws it) or None (default:
    replica s from seed s, so the seeds of a training run each get their own feedback). See
    :mod:`circuits.feedback`. ``clip``: cap each example's hidden ``‖δ_ℓ‖``
    (:func:`circuits.credit.clip_hidden`; default None, no cap)."""

    settles = False
    CREDITS = ("backprop", "feedback_alignment", "pseudo_backprop", "ndi")

    def __init__(self, credit: str, *, feedback: Sequence[torch.Tensor] | None = None,
                 seed=None, scale: float = 1.0, clip: float | None = None, **dynamics):
        if credit not in self.CREDITS:
            raise ValueError(f"credit: received {credit!r}, expected one of {list(self.CREDITS)}")
        if dynamics and credit != "ndi":
            raise ValueError(f"{sorted(dynamics)}: received keyword arguments for credit "
                             f"{credit!r}, expected them only with credit='ndi'")
        if feedback is not None:
            if credit != "feedback_alignment":
                raise ValueError(f"feedback: received matrices for credit {credit!r}, expected "
                                 "None (only credit='feedback_alignment' uses feedback)")
            if not isinstance(feedback, (list, tuple)) or not feedback:
                raise ValueError(f"feedback: received {type(feedback).__name__}, expected None "
                                 "or a list of B_ℓ tensors [S, n_{ℓ-1}, n_ℓ] (ℓ = 2..L)")
            for i, B in enumerate(feedback):
                check_finite_tensor(f"feedback[{i}]", B, dims=(3,))
        self._given_feedback = feedback is not None
        self.credit, self.feedback, self.seed = credit, feedback, seed
        self.scale = positive_float("scale", scale)
        self.clip = None if clip is None else positive_float("clip", clip)
        self.dynamics = dynamics

    def _fa_feedback(self, net: ForwardNetwork) -> list[torch.Tensor]:
        if self.feedback is None:
            self.feedback = random_feedback(
                [(net.widths[l - 1], net.widths[l]) for l in range(2, net.L + 1)],
                net.replicas, self.seed, net.dtype, net.device, scale=self.scale, name="seed")
        return self.feedback

    def build(self, network, x, target):
        if self.credit == "ndi":
            return DynamicInversion(network, x, target, **self.dynamics)
        if self.credit == "feedback_alignment":
            if getattr(self, "_given_feedback", False):
                self._check_given_feedback(network)
            self._fa_feedback(network)
        return _Instant(network, network.input(x), network.output_like(target))

    def _check_given_feedback(self, net: ForwardNetwork) -> None:
        """Given B_ℓ: one per layer ℓ = 2..L, shaped ``[S, n_{ℓ-1}, n_ℓ]`` for the network's S."""
        want = [(net.widths[l - 1], net.widths[l]) for l in range(2, net.L + 1)]
        got = [tuple(B.shape) for B in self.feedback]
        if [g[1:] for g in got] != want or any(g[0] not in (1, net.replicas) for g in got):
            raise ValueError(f"feedback: received shapes {got}, expected "
                             f"{[('S', *w) for w in want]} with S = 1 or {net.replicas} (B_ℓ "
                             "[S, n_{ℓ-1}, n_ℓ] for ℓ = 2..L)")
        self.feedback = [B.to(dtype=net.dtype, device=net.device) for B in self.feedback]

    def updates(self, circuit, y):
        net = circuit.network
        fwd = circuit.forward
        if self.credit == "ndi":
            deltas = circuit.credits(circuit.steady_state())
        elif self.credit == "backprop":
            deltas = credits_.backprop(net, fwd, circuit.delta_L)
        elif self.credit == "pseudo_backprop":
            deltas = credits_.pseudo_backprop(net, fwd, circuit.delta_L)
        else:
            deltas = credits_.feedback_alignment(net, fwd, circuit.delta_L, self._fa_feedback(net))
        return outer_updates(credits_.clip_hidden(deltas, self.clip), fwd.r[:-1],
                             net.biases is not None)

    def __repr__(self) -> str:
        return f"ClosedForm({self.credit!r})"


class Settling(Family):
    """A circuit class whose ``credits(y)`` settle (DI, SDI, DFC), built as
    ``circuit(network, x, target, **kwargs)``; the weights learn ``mean_B credit_ℓ r_{ℓ-1}ᵀ``
    with the rates the circuit's ``presynaptic(y)`` returns where it has that method (DFC: the
    controlled rates by default), else the feed-forward rates ``r_{ℓ-1}``. Weight-dependent
    feedback (``B = −Wᵀ``) follows the weights at every evaluation; DFC's ``Q = Jᵀ`` is
    recomputed at each new example. ``clip``: cap each example's hidden ``‖credit_ℓ‖``
    (:func:`circuits.credit.clip_hidden`)."""

    def __init__(self, circuit: type, *, clip: float | None = None, **kwargs):
        if not (isinstance(circuit, type) and hasattr(circuit, "credits")):
            raise TypeError(f"circuit: received {circuit!r}, expected a circuit class with a "
                            "credits(y) method (DynamicInversion, SingleLoopDynamicInversion, "
                            "DeepFeedbackControl)")
        self.circuit, self.kwargs = circuit, kwargs
        self.clip = None if clip is None else positive_float("clip", clip)

    def build(self, network, x, target):
        return self.circuit(network, x, target, **self.kwargs)

    def updates(self, circuit, y):
        net = circuit.network
        presynaptic = getattr(circuit, "presynaptic", None)
        rates = circuit.forward.r[:-1] if presynaptic is None else presynaptic(y)
        return outer_updates(credits_.clip_hidden(circuit.credits(y), self.clip), rates,
                             net.biases is not None)

    def __repr__(self) -> str:
        return f"Settling({self.circuit.__name__})"


class Targets(Family):
    """Target propagation (:class:`TargetPropagation` with ``rule`` and ``kwargs``, e.g.
    ``beta``, ``anchor``); the weights learn ``weight_updates(y, form)``. ``feedback(network, x)``
    returns the decoders (decoder rules) or the ``Q_ℓ`` list (``ddtp_linear``/``dfa``) for the
    current weights and input, e.g. their learning rule's fixed point; ``None`` keeps the
    circuit's default (for ``ddtp_linear`` the damped Gauss-Newton Q at the feed-forward pass).

    The feedback is computed when an example is presented and held while it is shown (feedback
    pathways learn between examples, not within one; recomputing a batched pseudo-inverse on
    every step would also cost ~10× the step itself)."""

    def __init__(self, rule: str, *, form: str = "dtp1",
                 feedback: Callable[[ForwardNetwork, torch.Tensor], Any] | None = None, **kwargs):
        from .target_propagation import RULES, UPDATE_FORMS
        if rule not in RULES:
            raise ValueError(f"rule: received {rule!r}, expected one of {list(RULES)}")
        if form not in UPDATE_FORMS:
            raise ValueError(f"form: received {form!r}, expected one of {list(UPDATE_FORMS)}")
        if "online_gamma" in kwargs:
            raise ValueError("online_gamma: received a value, expected none (Plastic makes the "
                             "weights state itself)")
        self.rule, self.form, self.feedback, self.kwargs = rule, form, feedback, kwargs
        self.key = "feedback" if rule in ("ddtp_linear", "dfa") else "decoders"

    def build(self, network, x, target):
        from .target_propagation import TargetPropagation
        kwargs = dict(self.kwargs)
        if self.feedback is not None:
            kwargs[self.key] = self.feedback(network, x)
        return TargetPropagation(network, x, target, rule=self.rule, **kwargs)

    def present(self, circuit):
        if self.feedback is not None:
            setattr(circuit, self.key, self.feedback(circuit.network, circuit.x))
        else:
            circuit.refresh_feedback()

    def updates(self, circuit, y):
        return circuit.weight_updates(y, self.form)

    def __repr__(self) -> str:
        return f"Targets({self.rule!r})"


class Plastic(Circuit):
    """A :class:`Family`'s circuit with the forward network's weights and biases as state.

    Args:
        family: what computes the credit.
        network: the initial weights (S replicas; copied to the family's S if that is larger,
            e.g. a sweep over ``alpha``).
        x, target: the first example (batch) ``[B, n_0]``, ``[B, n_L]``; :meth:`present` changes
            them (B must stay the same: it is part of the state's shape).
        eta: learning rate η per unit time (a number or S numbers).
        gate: ``"settled"`` (:class:`~circuits.gates.Settled` with rate threshold ``theta``),
            ``"always"`` (:class:`~circuits.gates.Continuous`), or a gate of the one protocol
            :class:`~circuits.gates.Plasticity` whose signals this circuit has (``Settled``,
            ``Continuous``, ``Schedule`` with a ``period``, ``LayerSchedule``): one factor per
            layer multiplies that layer's weight change.
        reset: ``"none"`` (default: a new example meets the credit populations where the last
            one left them) or ``"rest"`` (a declared jump: :meth:`present` with a state returns
            the credit circuit's initial state, so every example settles from rest).
        loss: ``None`` (default: the target is used as given, i.e. the squared error) or one of
            :data:`circuits.losses.LOSSES`: the target given is then the *labels*, and the
            family is shown ``r_L − ∂ℒ/∂r_L`` at the weights of the state when the example is
            presented (:func:`circuits.losses.equivalent_target`), so its own nudge convention
            (DI's δ_L, DFC's λ, TP's β) applies to the loss's gradient.
        flow: how the weights move under the gated update (:mod:`circuits.weight_flow`):
            None (default: gradient flow, ``dW/dt = η g ΔW``), ``"adam"``, ``{"adam": {...}}``
            or an :class:`~circuits.weight_flow.AdamFlow` (Adam as an ODE on plastic time:
            moment populations per weight, role ``moment``).

    The family's circuit is built (and validated) once, here. An evaluation rebinds it to the
    weights of the state and the presented example (:meth:`Family.bind`: the forward pass and
    weight-dependent feedback, nothing else), steps its populations and applies the gated
    weight change; :meth:`present` prepares the example once and refreshes what is held per
    presentation. Nothing in an evaluation or a presentation synchronises with the host.

    State: the family circuit's populations, ``W_ℓ`` ``[S, n_ℓ, n_{ℓ-1}]`` and ``b_ℓ``
    ``[S, 1, n_ℓ]``, and the flow's moment populations. :meth:`observe` adds ``gate``
    ``[S, 1, 1]``.
    """

    def __init__(self, family: Family, network: ForwardNetwork, x: torch.Tensor,
                 target: torch.Tensor, *, eta=0.1, gate: str = "settled", theta: float = 0.05,
                 reset: str = "none", loss: str | None = None, flow: Any = None):
        if not isinstance(family, Family):
            raise TypeError(f"family: received {type(family).__name__}, expected a "
                            "circuits.plasticity.Family (ClosedForm, Settling, Targets)")
        self.theta = positive_float("theta", theta)
        if isinstance(gate, str):
            if gate not in GATES:
                raise ValueError(f"gate: received {gate!r}, expected one of {list(GATES)} or a "
                                 "circuits.gates.Plasticity gate (Settled, Continuous, Schedule, "
                                 "LayerSchedule)")
            self.gate = Settled(self.theta) if gate == "settled" else Continuous()
        elif isinstance(gate, (Settled, Continuous, Schedule, LayerSchedule)):
            self.gate = gate
        else:
            raise ValueError(f"gate: received {type(gate).__name__}, expected one of "
                             f"{list(GATES)} or a gate whose signals a Plastic circuit has "
                             "(Settled, Continuous, Schedule with a period, LayerSchedule)")
        if reset not in RESETS:
            raise ValueError(f"reset: received {reset!r}, expected one of {list(RESETS)}")
        if loss is not None and loss not in LOSSES:
            raise ValueError(f"loss: received {loss!r}, expected None or one of {list(LOSSES)}")
        self.family, self.reset, self.loss = family, reset, loss
        self.flow = weight_flow(flow)
        self.gate_kind = gate if isinstance(gate, str) else type(gate).__name__
        probe = family.build(network, x, target)
        self._bind(probe.network, eta=eta)
        self.template = self.network            # widths, activations, dtype of every rebind
        if self.S != probe.network.replicas:    # eta has more replicas than the family
            probe = family.build(self.network, x, target)
        self.circuit = probe                    # built and validated once
        self.fast = [p.name for p in probe.populations] if family.settles else []
        net = self.network
        self.biased = net.biases is not None
        self.populations = [p for p in probe.populations if p.name in self.fast] + [
            Population(f"W_{l}", Role.WEIGHT, n, l) for l, n in enumerate(net.widths[1:], 1)]
        if self.biased:
            self.populations += [Population(f"b_{l}", Role.WEIGHT, n, l)
                                 for l, n in enumerate(net.widths[1:], 1)]
        self.populations += self.flow.populations(
            [p for p in self.populations if p.role == Role.WEIGHT])
        self.x = self.template.input(x)
        self.target = self._target(self.network, self.template.output_like(target))
        self._check_batch()
        self._held = self.circuit

    def _target(self, network: ForwardNetwork, labels: torch.Tensor) -> torch.Tensor:
        """What the family is shown for ``labels``: the labels, or with a ``loss`` the target
        whose squared error has that loss's gradient at ``network``'s output."""
        if self.loss is None or self.loss == "squared_error":
            return labels
        return equivalent_target(self.loss, network.forward(self.x, prepared=True).r[-1], labels)

    def _check_batch(self) -> None:
        if self.target.shape[1] != self.x.shape[1]:
            raise ValueError(f"target: received {self.target.shape[1]} examples, expected "
                             f"B = {self.x.shape[1]} like x")

    def present(self, x: torch.Tensor, target: torch.Tensor, y: State | None = None, *,
                check: bool = True) -> State | None:
        """Show a new example (batch): what the next evaluations are driven by.
        ``check=False`` checks shapes only (no host synchronisation: a drive checks its data
        once). ``y``: the state at the jump, whose weights the held feedback is computed for
        (default: the weights the circuit was built with). Returns the credit populations'
        rest state with ``reset="rest"`` and a state given (the jump), else None."""
        if target is None:
            raise ValueError("target: received None, expected a target [B, n_L] (a Plastic "
                             "circuit learns from its credit circuit's output error)")
        self.x = self.template.input(x, check_finite=check)
        net = self.network if y is None else self.network_of(y)
        self.target = self._target(net, self.template.output_like(target, check_finite=check))
        self._check_batch()
        held = self.family.bind(self.circuit, net, self.x, self.target)
        self.family.present(held)
        self._held = held
        if self.reset == "rest" and y is not None and self.fast:
            return {k: v for k, v in held.initial_state().items() if k in self.fast}
        return None

    def with_gradient_flow(self) -> tuple["Plastic", Callable[[State], State]]:
        """This circuit with plain gradient flow (``dW/dt = η g ΔW``) and a function that drops
        the moment populations from a state of this one: what the family's own update does,
        without the optimiser's preconditioning (for measuring it, as
        :mod:`demos.credit_alignment` does). A shallow copy: this circuit is not changed."""
        plain = copy.copy(self)
        plain.flow = GradientFlow()
        plain.populations = [p for p in self.populations if p.role != Role.MOMENT]
        keep = {p.name for p in plain.populations}
        return plain, lambda y: {k: v for k, v in y.items() if k in keep}

    def network_of(self, y: State) -> ForwardNetwork:
        """The forward network with the weights of state ``y`` (a final state ``[S, ...]``)."""
        return self.template.with_parameters(
            [y[f"W_{l}"] for l in range(1, self.template.L + 1)],
            [y[f"b_{l}"] for l in range(1, self.template.L + 1)] if self.biased else None)

    def outputs(self, y: State, x: torch.Tensor) -> torch.Tensor:
        """The network's output ``r_L [S, M, n_L]`` on inputs ``x [M, n_0]`` with the weights of
        ``y`` (for evaluation; every learning circuit has this)."""
        return self.network_of(y).forward(x).r[-1]

    def initial_state(self) -> State:
        """The family circuit's initial state on the first example, and the initial weights."""
        y = {k: v for k, v in self.circuit.initial_state().items() if k in self.fast}
        net = self.network
        weights = {f"W_{l}": W.clone() for l, W in enumerate(net.weights, 1)}
        if self.biased:
            weights.update({f"b_{l}": b.clone() for l, b in enumerate(net.biases, 1)})
        y.update(weights)
        y.update(self.flow.initial_state(weights))
        return y

    def _gates(self, t: float | None, y_fast: State, dy_fast: State
               ) -> list[torch.Tensor] | None:
        """The gate's factor per layer (``[S, 1, 1]`` or 0-d), or None where it is always open
        (no factor to multiply by)."""
        if isinstance(self.gate, Continuous):
            return None
        signals = Signals(settling=(y_fast, dy_fast) if self.family.settles else None,
                          like=self.eta, layers=self.template.L)
        gates, _ = self.gate.gates(t, {}, signals)
        return gates

    def bound(self, y: State) -> Any:
        """The family's circuit on the weights of ``y`` and the presented example."""
        return self.family.bind(self._held, self.network_of(y), self.x, self.target)

    def vector_field(self, t: float, y: State) -> State:
        circuit = self.bound(y)
        fast = {k: y[k] for k in self.fast}
        out = dict(circuit.vector_field(t, fast)) if fast else {}
        gates = self._gates(t, fast, out)
        rates: dict[int, torch.Tensor] = {}          # η·g once per distinct gate factor
        flow = self.flow.field
        for l, (dW, db) in enumerate(self.family.updates(circuit, fast), 1):
            if gates is None:
                g, rate = None, self.eta
            else:
                g = gates[l - 1]
                rate = rates.get(id(g))
                if rate is None:
                    rate = rates[id(g)] = self.eta * g
            out.update(flow(f"W_{l}", dW, rate, g, y))
            if self.biased:
                out.update(flow(f"b_{l}", db, rate, g, y))
        return out

    def fast_field(self, t: float, y: State) -> State:
        """The credit populations' time derivatives at the weights of ``y`` (the weights held
        still): what a stepping method linearises."""
        return self.bound(y).vector_field(t, {k: y[k] for k in self.fast})

    def fast_jacobian(self, y: State) -> torch.Tensor | None:
        """``mean_B ∂(credit populations)'/∂(credit populations)`` ``[S, D, D]`` at the weights of
        ``y``, in closed form where the family's circuit has one (``mean_jacobian``), else None."""
        circuit = self.bound(y)
        jacobian = getattr(circuit, "mean_jacobian", None)
        return None if jacobian is None else jacobian({k: y[k] for k in self.fast})

    def leak(self, y: State) -> dict[str, torch.Tensor]:
        if not self.fast or not hasattr(self.circuit, "leak"):
            return {}
        return {k: v for k, v in self.circuit.leak({}).items() if k in self.fast}

    def observe(self, y: State) -> State:
        obs = dict(y)
        fast = {k: y[k] for k in self.fast}
        if fast and self.family.settles and isinstance(self.gate, Settled):
            lead = next(iter(fast.values())).shape[:-3]
            if lead:                                        # a trajectory: gate per time
                return obs
            obs["gate"] = self._gates(None, fast, self.bound(y).vector_field(0.0, fast))[0]
        return obs


__all__ = ["Family", "ClosedForm", "Settling", "Targets", "Plastic", "outer_updates", "GATES"]
