"""Plasticity gates: when a circuit's synapses may change.

A gate multiplies each error neuron's weight update, ``dW_ℓ/dt ∝ (g_ℓ ⊙ ε_ℓ) f(x_{ℓ-1})ᵀ``. It
is computed from the circuit's own populations (and, for the clocked schedule, from t) as a
multiplicative factor: no Python ``if`` on a tensor value, so a step stays capturable. A gate
may own state populations (detectors, timers); the circuit adds them to its state.

One protocol for every gate (:class:`Plasticity`): ``gates(t, y, signals)`` returns one factor
per layer and the time derivatives of the gate's own populations. Every learning circuit
asks its gate this way — predictive coding, :class:`circuits.Plastic` (any credit circuit with
weights as state) and :class:`circuits.LocalDecoders` — and any gate whose signals a circuit
provides works with it:

* :class:`Continuous` — always on (plain online plasticity).
* :class:`Settled` — the settle gate: ``g = exp(−(ρ/θ)²)`` with ρ the relative rate of change of
  the circuit's credit populations; shut while they move after a new input, open once settled.
* :class:`Schedule` — an external clock: ``W_ℓ`` learns during inference step ``steps[ℓ-1]``
  (Z-IL's condition C2 is ``steps = [L-1, ..., 1, 0]``, :meth:`Schedule.z_il`).
* :class:`LayerSchedule` — layer ℓ learns during a time window (local decoders' sequential and
  parallel schedules).
* :class:`ArrivalGate` — no clock: each neuron's gate opens once, by itself (Fa-Z-IL).

The arrival gate, per neuron of layer ℓ (θ a small threshold, H the step function):

    quiet        q: τ dq/dt = (1 − q)·τ/t_quiet  while |signal| ≤ θ, else −q
    armed        A = H(q − ½)                     (quiet for ≳ t_quiet·ln 2)
    arrival      s = H(|signal| − hθ)             (h = hysteresis > 1)
    pending      τ dp/dt = A·s − p                (hidden layers)
    gate         g = p  (hidden),   g_L = A_L · m  (output; m = 1 while the teacher clamps it)

On the lattice dt = τ (Z-IL's C3) these are exact one-step machines: ``q`` resets to 0 the step
after activity and ``p`` is 1 exactly on the step after the signal arrived while armed, which is
the step at which the error neuron holds backprop's δ. ``signal`` is the feedback input
``W_{ℓ+1}ᵀ ε_{ℓ+1}`` (Fa-Z-IL), the derivative-weighted drive ``f'(x_ℓ) ⊙ W_{ℓ+1}ᵀ ε_{ℓ+1}``, or
the error ``ε_ℓ`` itself (Song et al.'s φ: fires on the step ε leaves 0, no delay). The last two
are the naive gates: a dead ReLU unit receives no drive and keeps ε = 0 when the wave passes,
so they fire later, when the bottom-up prediction moves it.

The two thresholds make the detector a Schmitt trigger. With one threshold, signals fading
out at the end of a settle cross θ back and forth (error and feedback of a neuron do not fall
below θ at the same time), re-arm the timer and fire on a signal of size θ; a teacher's wave is
many orders of magnitude above hθ.

``ordered`` (default for the feedback signal) also requires the neuron's own error to be quiet
at the moment feedback arrives. This is how the circuit tells a teacher's wave from a new input
without a clock: from the prediction fixed point, a top-down wave reaches a neuron's feedback
input one step *before* its error moves; after a new input, the bottom-up change reaches its
error one step before the feedback from above. So the gate stays shut during the
prediction-mode settle (Song et al.'s reviewers asked whether it fires there; unordered gates
do, see ``demos.reproduce_song2020``).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch

from .parameters import Population, Role, positive_float

State = dict[str, torch.Tensor]


@dataclass
class Signals:
    """What a gate may look at. Per layer ℓ = 1..L: ``errors`` (the error or credit populations;
    ``feedback``/``dphi`` for ℓ = 1..L-1), ``teacher`` (1 while a target clamps the output) and
    ``tau_x`` (predictive coding's time constant); ``settling``: the credit populations and
    their time derivatives (two mappings, for the settle gate); ``like``: a tensor giving the
    dtype and device of constant factors. A circuit fills in what it has."""

    errors: list[torch.Tensor] | None = None
    feedback: list[torch.Tensor] | None = None
    dphi: list[torch.Tensor] | None = None
    teacher: torch.Tensor | None = None
    tau_x: torch.Tensor | None = None
    settling: tuple[State, State] | None = None
    like: torch.Tensor | None = None
    layers: int | None = None

    def reference(self) -> torch.Tensor:
        """A tensor with the dtype and device factors should have."""
        for v in (self.like, self.tau_x, self.teacher):
            if v is not None:
                return v
        return self.errors[0]

    def count(self) -> int:
        """L, the number of layers gated."""
        return self.layers if self.layers is not None else len(self.errors)


class Plasticity(ABC):
    """A gate: ``gates(t, y, signals)`` returns one factor per layer (broadcastable to
    ``[S, B, n_ℓ]``) and the time derivatives of the gate's own state."""

    def populations(self, widths: Sequence[int]) -> list[Population]:
        return []

    def initial_state(self, like: Sequence[torch.Tensor]) -> State:
        """``like[ℓ-1]`` is shaped as layer ℓ's errors ``[S, B, n_ℓ]``."""
        return {}

    def quiet_state(self, like: Sequence[torch.Tensor]) -> State:
        """The gate's own state once the circuit has been quiet (every error zero) for a long
        time: where a jump to the free phase's equilibrium puts it. Default: its initial state."""
        return self.initial_state(like)

    @abstractmethod
    def gates(self, t: float | None, y: State, signals: Signals
              ) -> tuple[list[torch.Tensor] | None, State]:
        """``t`` is None when observing a recorded state (a clocked gate then returns None)."""


class Continuous(Plasticity):
    """Plasticity always on."""

    def gates(self, t, y, signals):
        ref = signals.reference()
        one = torch.ones((), dtype=ref.dtype, device=ref.device)
        return [one] * signals.count(), {}


class Settled(Plasticity):
    """The settle gate: one factor ``g = exp(−(ρ/θ)²)`` ``[S, 1, 1]`` for every layer, with
    ``ρ = ‖ẏ_c‖ / (‖y_c‖ + ε)`` the relative rate of change of the credit populations
    ``y_c`` (per replica, over the whole batch; ``signals.settling = (y_c, ẏ_c)``). A new input
    disturbs them and shuts the gate; it reopens by itself once they have settled, without a
    clock. ``theta`` (1/time) is the rate below which the circuit counts as settled. Where a
    circuit has no credit populations (closed forms) the gate is always open."""

    def __init__(self, theta: float = 0.05):
        self.theta = positive_float("theta", theta)

    def gates(self, t, y, signals):
        if not signals.settling or not signals.settling[0]:
            return Continuous().gates(t, y, signals)
        y_c, dy_c = signals.settling
        first = next(iter(y_c.values()))
        S = first.shape[0]
        sq = lambda d: sum(v.reshape(S, -1).pow(2).sum(-1) for v in d.values())  # noqa: E731
        tiny = torch.finfo(first.dtype).tiny ** 0.5
        rho = sq(dy_c).sqrt() / (sq(y_c).sqrt() + tiny)
        g = torch.exp(-(rho / self.theta) ** 2).view(S, 1, 1)
        return [g] * signals.count(), {}

    def __repr__(self) -> str:
        return f"Settled(theta={self.theta})"


class Schedule(Plasticity):
    """An external clock: ``W_ℓ`` learns during inference step ``steps[ℓ-1]``, where step k is
    ``start + k·period ≤ t < start + (k+1)·period``. The clock's period defaults to τ_x, so
    with dt = τ_x step k is exactly the k-th Euler step; give ``period = dt`` to keep one update
    per step when dt ≠ τ_x (the γ ≠ 1 ablation of Z-IL). ``cycle``: the clock restarts every
    ``cycle`` time units (one example per cycle when training in one integration: t is then
    taken modulo the presentation period)."""

    def __init__(self, steps: Sequence[int], start: float = 0.0, period: float | None = None,
                 cycle: float | None = None):
        if not isinstance(steps, (list, tuple)) or not steps or any(
                isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in steps):
            raise ValueError(f"steps: received {steps!r}, expected one integer ≥ 0 per layer")
        if isinstance(start, bool) or not isinstance(start, (int, float)) \
                or not math.isfinite(start):
            raise ValueError(f"start: received {start!r}, expected a finite number (the clamp "
                             "time)")
        self.steps, self.start = list(steps), float(start)
        self.period = None if period is None else positive_float("period", period)
        self.cycle = None if cycle is None else positive_float("cycle", cycle)

    @classmethod
    def z_il(cls, layers: int, start: float = 0.0, period: float | None = None,
             cycle: float | None = None) -> "Schedule":
        """C2: layer ℓ learns at step L − ℓ, its distance from the output."""
        return cls([layers - l for l in range(1, layers + 1)], start, period, cycle)

    @classmethod
    def together(cls, layers: int, step: int | None = None, start: float = 0.0,
                 period: float | None = None) -> "Schedule":
        """The C2 ablation: every layer learns at the same step (default L − 1, when the
        wave reaches the first layer)."""
        return cls([layers - 1 if step is None else step] * layers, start, period)

    def gates(self, t, y, signals):
        if len(self.steps) != signals.count():
            raise ValueError(f"steps: received {len(self.steps)} steps, expected one per layer "
                             f"(L = {signals.count()})")
        if t is None:
            return None, {}
        if self.period is None and signals.tau_x is None:
            raise ValueError("period: received None for a circuit without τ_x, expected the "
                             "clock's period (e.g. the step dt)")
        period = signals.tau_x if self.period is None else self.period
        since = t - self.start
        if self.cycle is not None:        # a clock that restarts with every example
            since = since - self.cycle * math.floor(since / self.cycle + 1e-9)
        k = torch.floor(torch.as_tensor(since / period + 1e-9))
        return [(k == s).to(signals.reference().dtype) for s in self.steps], {}


class ArrivalGate(Plasticity):
    """Fa-Z-IL's autonomous gate (see the module docstring).

    Args:
        signal: ``feedback`` (default), ``drive`` or ``error``.
        ordered: require the neuron's own error to be quiet when the signal arrives (default:
            True for ``feedback``, False for ``drive``; not allowed for ``error``).
        threshold: θ, below which a signal counts as quiet; default 256 machine epsilons of the
            state's dtype (5.7e-14 in float64, 3.1e-5 in float32): a few hundred times the
            rounding noise of a settled error, so that the arrival threshold hθ stays far below
            any teacher's wave. A settle reaches it on its own: the steady-state stop waits for
            the quiet timers, which charge only once the errors are below θ.
        hysteresis: h; a signal arrives when it exceeds hθ.
        t_quiet: time constant of the quiet timer (the paper's t_d), in the units of t.
    """

    SIGNALS = ("feedback", "drive", "error")

    def __init__(self, signal: str = "feedback", ordered: bool | None = None,
                 threshold: float | None = None, hysteresis: float = 10.0,
                 t_quiet: float = 2.0):
        if signal not in self.SIGNALS:
            raise ValueError(f"signal: received {signal!r}, expected one of {list(self.SIGNALS)}")
        if ordered is None:
            ordered = signal == "feedback"
        if not isinstance(ordered, bool):
            raise ValueError(f"ordered: received {ordered!r}, expected True, False or None")
        if ordered and signal == "error":
            raise ValueError("ordered: received True with signal='error', expected False (the "
                             "error cannot be quiet and arriving at once)")
        self.signal, self.ordered = signal, ordered
        self.threshold = None if threshold is None else positive_float("threshold", threshold)
        self.t_quiet = positive_float("t_quiet", t_quiet)
        self.hysteresis = positive_float("hysteresis", hysteresis)
        if self.hysteresis < 1:
            raise ValueError(f"hysteresis: received {hysteresis!r}, expected a number ≥ 1 (the "
                             "arrival threshold is hysteresis × threshold)")
        self.delayed = signal != "error"

    def populations(self, widths):
        L = len(widths) - 1
        pops = [Population(f"quiet_{l}", Role.GATE, widths[l], l) for l in range(1, L + 1)]
        if self.delayed:
            pops += [Population(f"pending_{l}", Role.GATE, widths[l], l) for l in range(1, L)]
        return pops

    def initial_state(self, like):
        """Disarmed: the circuit must be quiet for a while before its gates can open."""
        state = {f"quiet_{l}": torch.zeros_like(e) for l, e in enumerate(like, start=1)}
        if self.delayed:
            state.update({f"pending_{l}": torch.zeros_like(e)
                          for l, e in enumerate(like[:-1], start=1)})
        return state

    def quiet_state(self, like):
        """Armed, nothing pending: the quiet timers charged to 1 (their fixed point while every
        signal is quiet)."""
        state = self.initial_state(like)
        state.update({f"quiet_{l}": torch.ones_like(e) for l, e in enumerate(like, start=1)})
        return state

    def thresholds(self, dtype: torch.dtype) -> tuple[float, float]:
        """``(θ, hθ)``: quiet below the first, arrived above the second."""
        theta = self.threshold if self.threshold is not None else 256 * torch.finfo(dtype).eps
        return theta, self.hysteresis * theta

    def gates(self, t, y, signals):
        errors, tau = signals.errors, signals.tau_x
        dtype = errors[0].dtype
        theta, high = self.thresholds(dtype)
        L = len(errors)
        gates, d = [], {}
        for l in range(1, L + 1):
            eps, q = errors[l - 1], y[f"quiet_{l}"]
            eps_quiet = eps.abs() <= theta
            armed = q > 0.5
            if l == L:
                arrived = (eps.abs() > high) if self.signal == "error" \
                    else (signals.teacher > 0).expand_as(eps)
                quiet = eps_quiet
            else:
                source = {"feedback": lambda: signals.feedback[l - 1],
                          "drive": lambda: signals.dphi[l - 1] * signals.feedback[l - 1],
                          "error": lambda: eps}[self.signal]()
                arrived = source.abs() > high
                quiet = source.abs() <= theta
                if self.ordered:
                    quiet, armed = quiet & eps_quiet, armed & eps_quiet
            fire = (armed & arrived).to(dtype)
            if self.delayed and l < L:
                p = y[f"pending_{l}"]
                gates.append(p)
                d[f"pending_{l}"] = (fire - p) / tau
            else:
                gates.append(fire)
            d[f"quiet_{l}"] = torch.where(quiet, (1 - q) / self.t_quiet, -q / tau)
        return gates, d


class LayerSchedule(Plasticity):
    """When each layer learns: layer ℓ's gate is 1 for ``windows[ℓ-1][0] ≤ t < windows[ℓ-1][1]``
    and 0 otherwise (a multiplicative factor computed from t alone, no branch on tensors).

    Use :meth:`sequential` or :meth:`parallel`; ``t1`` is the end of the last finite window (the
    natural horizon of a sequential schedule), or None when every window is open-ended."""

    def __init__(self, windows: Sequence[tuple[float, float]]):
        if not isinstance(windows, (list, tuple)) or not windows:
            raise ValueError(f"windows: received {windows!r}, expected one (start, end) pair "
                             "per layer")
        checked = []
        for l, w in enumerate(windows, start=1):
            ok = isinstance(w, (list, tuple)) and len(w) == 2 and all(
                not isinstance(v, bool) and isinstance(v, (int, float)) and not math.isnan(v)
                for v in w)
            if not ok or not math.isfinite(w[0]) or not w[1] > w[0]:
                raise ValueError(f"windows[{l - 1}] (layer {l}): received {w!r}, expected a "
                                 "pair (start, end) of numbers with a finite start < end")
            checked.append((float(w[0]), float(w[1])))
        self.windows = checked
        ends = [e for _, e in checked if math.isfinite(e)]
        self.t1 = max(ends) if ends else None

    @classmethod
    def sequential(cls, layers: int, period: float) -> "LayerSchedule":
        """Layer ℓ learns during [(ℓ−1)·period, ℓ·period), then freezes; t1 = L·period."""
        _check_layers(layers)
        if isinstance(period, bool) or not isinstance(period, (int, float)) \
                or not math.isfinite(period) or period <= 0:
            raise ValueError(f"period: received {period!r}, expected a finite number > 0 (the "
                             "time each layer learns for)")
        return cls([((l - 1) * period, l * period) for l in range(1, layers + 1)])

    @classmethod
    def parallel(cls, layers: int) -> "LayerSchedule":
        """Every layer learns for the whole integration."""
        _check_layers(layers)
        return cls([(0.0, math.inf)] * layers)

    @property
    def layers(self) -> int:
        return len(self.windows)

    def gates(self, t, y, signals):
        """One 0-d factor per layer at time t (dtype/device of ``signals.reference()``). A step
        that starts on a window's boundary belongs to the window that opens there (tolerance
        1e-9·max(1, |t|)). ``t`` None (observing a recorded state): None."""
        if signals.count() != self.layers:
            raise ValueError(f"windows: received {self.layers} windows, expected one per layer "
                             f"(L = {signals.count()})")
        if t is None:
            return None, {}
        like = signals.reference()
        tt = torch.as_tensor(float(t) + 1e-9 * max(1.0, abs(float(t))), dtype=like.dtype,
                             device=like.device)
        return [((tt >= s) & (tt < e)).to(like.dtype) for s, e in self.windows], {}

    def __repr__(self) -> str:
        return f"LayerSchedule({self.windows})"


def _check_layers(layers):
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers: received {layers!r}, expected an integer ≥ 1 (L)")


# -- measuring gates along a recorded trajectory ----------------------------------------------
# Analysis, not dynamics: functions of a circuit's recorded observations ``{gate_ℓ, eps_ℓ}``
# (each ``[T, S, B, n_ℓ]``, e.g. ``PredictiveCoding.observe`` along a solution), to check that an
# arrival gate stays shut while the circuit settles on an input and that each unit's gate opens
# once when a teacher's wave passes (Fa-Z-IL, ``demos.train_pc``).

def per_layer(obs: State, name: str, layers: int, reduce) -> torch.Tensor:
    """``[T, L]``: ``reduce`` (``[T, N] → [T]``) over the units and examples (and replicas) of
    each layer's ``{name}_ℓ [T, S, B, n_ℓ]``, ℓ = 1..L."""
    return torch.stack([reduce(obs[f"{name}_{l}"].flatten(1)) for l in range(1, layers + 1)], 1)


def _largest(obs: State, name: str, layers: int) -> torch.Tensor:
    return per_layer(obs, name, layers, lambda v: v.abs().amax(1))


def settle_statistics(obs: State, layers: int, settle_time: float, status: str) -> dict:
    """A settle without a teacher (gates should stay shut): the largest gate value over every
    layer, unit, example and recorded point (``max_gate``), the settle's ``settle_time`` and
    ``status`` as given, and the largest hidden error ``|ε_ℓ|``, ℓ < L, at the last recorded
    point (``hidden_error_left``: how far below the quiet threshold the settle ended)."""
    left = float(_largest(obs, "eps", layers)[-1, :-1].max()) if layers > 1 else 0.0
    return {"max_gate": float(_largest(obs, "gate", layers).max()), "settle_time": settle_time,
            "status": status, "hidden_error_left": left}


def opening_statistics(obs: State, layers: int, steps: int | None = None) -> dict:
    """Per layer ℓ (lists indexed ℓ − 1), over the first ``steps`` recorded points (all by
    default; recorded every step, point i holds the gate step i used): on how many points each
    unit's gate was open (> 0), its min / mean / max over the layer's units and examples
    (``open_steps_*``), at which points any of the layer's gates was open (``open_at``); and the
    largest gate value of any layer (``max_gate``)."""
    out: dict = {"open_steps_min": [], "open_steps_mean": [], "open_steps_max": [],
                 "open_at": [], "max_gate": 0.0}
    for l in range(1, layers + 1):
        g = obs[f"gate_{l}"][:steps]                           # [T, S, B, n]
        open_steps = (g > 0).sum(0).to(torch.float64)          # per unit and example
        out["open_steps_min"].append(float(open_steps.min()))
        out["open_steps_mean"].append(float(open_steps.mean()))
        out["open_steps_max"].append(float(open_steps.max()))
        out["open_at"].append((g.flatten(1) > 0).any(1).nonzero().flatten().tolist())
        out["max_gate"] = max(out["max_gate"], float(g.abs().max()))
    return out


def gate_trace(obs: State, layers: int) -> dict:
    """Per recorded point and layer (``[T][L]`` lists): the fraction of units × examples whose
    gate is open (``open_fraction``) and the largest ``|ε_ℓ|`` (``max_error``)."""
    return {"open_fraction": per_layer(obs, "gate", layers,
                                       lambda v: (v > 0).to(v.dtype).mean(1)).tolist(),
            "max_error": _largest(obs, "eps", layers).tolist()}


def arrival_gate_activity(settles: Sequence[dict], lessons: Sequence[dict], layers: int
                          ) -> dict:
    """Gate activity over a run of presentations, each a settle on the input alone
    (:func:`settle_statistics`) then a lesson with the teacher (:func:`opening_statistics`):
    the largest gate value in each, whether every unit's gate opened on exactly one step of
    every lesson, per layer the fewest/most steps open and the steps on which any gate was
    open, the settle times, whether every settle converged and the largest hidden error a
    settle left. Empty before the first presentation."""
    if not settles:
        return {}
    lessons_per_layer = {
        str(l): {"open_steps_min": min(e["open_steps_min"][l - 1] for e in lessons),
                 "open_steps_max": max(e["open_steps_max"][l - 1] for e in lessons),
                 "open_at_steps": sorted({s for e in lessons for s in e["open_at"][l - 1]})}
        for l in range(1, layers + 1)}
    return {
        "max_gate_during_prediction": max(e["max_gate"] for e in settles),
        "max_gate_during_learning": max(e["max_gate"] for e in lessons),
        "every_gate_opened_on_exactly_one_step": all(
            v["open_steps_min"] == 1 and v["open_steps_max"] == 1
            for v in lessons_per_layer.values()),
        "learn_gates_per_layer": lessons_per_layer,
        "prediction_settle_time": {"min": min(e["settle_time"] for e in settles),
                                   "max": max(e["settle_time"] for e in settles)},
        "prediction_all_converged": all(e["status"] == "converged" for e in settles),
        "max_hidden_error_after_prediction": max(e["hidden_error_left"] for e in settles),
    }


def clock_openings(schedule: Schedule, step_times: Sequence[float]) -> list[int]:
    """On how many of the Euler steps whose vector field is evaluated at ``step_times`` each
    layer's clocked gate is open (lists indexed ℓ − 1; τ_x = 1 unless the schedule has a
    ``period``). Z-IL's C2 asks for exactly one per layer: with γ = dt/τ_x = 0.99999 the steps
    fall just before k·τ_x, so ``Schedule.z_il(4)`` gives ``[0, 1, 1, 2]`` (layer L learns
    twice, layer 1 never) and ``Schedule.z_il(4, start=-0.5)`` ``[1, 1, 1, 1]``."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule: received {type(schedule).__name__}, expected a "
                        "circuits.gates.Schedule (a clocked gate)")
    one = torch.ones((), dtype=torch.float64)
    L = len(schedule.steps)
    signals = Signals(errors=[one] * L, teacher=one, tau_x=one)
    counts = [0] * L
    for t in step_times:
        gates, _ = schedule.gates(t, {}, signals)
        counts = [n + int(g) for n, g in zip(counts, gates)]
    return counts


def gate_extremes(obs: State, layers: int) -> State:
    """One observation ``{gate_ℓ, eps_ℓ, fb_ℓ}`` (each ``[S, B, n_ℓ]``, e.g.
    ``PredictiveCoding.observe``) reduced to a few numbers per replica, so that every step of a
    long settle can be recorded (``solve(..., observe=...)``) without the whole state:

    * ``gate`` ``[S, L]``: the largest ``|g_ℓ|`` of each layer;
    * ``signal`` ``[S, L]``: the largest ``max(|ε_ℓ|, |fb_ℓ|)`` (``|ε_L|`` at the output) of the
      units whose gate is open, 0 where none is (a teacher's wave is O(δ); the tail of a settle
      is at the gate's threshold θ);
    * ``error`` ``[S, 1]``: the largest ``|ε_ℓ|`` of the circuit."""
    _check_layers(layers)
    needed = [f"{k}_{l}" for l in range(1, layers + 1) for k in ("gate", "eps", "fb")
              if k != "fb" or l < layers]
    missing = [k for k in needed if k not in obs]
    if missing:
        raise ValueError(f"obs: received keys {sorted(obs)}, expected gate_ℓ, eps_ℓ (ℓ = 1..L) "
                         f"and fb_ℓ (ℓ < L) for L = {layers} (missing {missing}; observe a "
                         "circuit whose gate is state-driven, such as an ArrivalGate)")
    gate, signal, error = [], [], []
    for l in range(1, layers + 1):
        g, e = obs[f"gate_{l}"].abs(), obs[f"eps_{l}"].abs()
        size = e if l == layers else torch.maximum(e, obs[f"fb_{l}"].abs())
        gate.append(g.flatten(-2).amax(-1))
        signal.append(torch.where(g > 0, size, 0.0).flatten(-2).amax(-1))
        error.append(e.flatten(-2).amax(-1))
    return {"gate": torch.stack(gate, -1), "signal": torch.stack(signal, -1),
            "error": torch.stack(error, -1).amax(-1, keepdim=True)}


def first_opening(ts: torch.Tensor, gate: torch.Tensor, signal: torch.Tensor) -> dict:
    """When a gate first opened, from :func:`gate_extremes` recorded for one replica at times
    ``ts`` ``[T]`` (``gate`` and ``signal`` ``[T, L]``): the largest gate (``max_gate``), the
    first recorded time any gate was open (``first_opening_time``, None if none ever was) and
    the largest signal of an open unit then (``signal_at_first_opening``, 0 if none)."""
    if gate.shape[:1] != ts.shape or signal.shape != gate.shape:
        raise ValueError(f"gate, signal: received shapes {tuple(gate.shape)} and "
                         f"{tuple(signal.shape)} for ts {tuple(ts.shape)}, expected both "
                         "[T, L] with T = len(ts) (one replica of gate_extremes' record)")
    opened = (gate > 0).flatten(1).any(1).nonzero()
    first = int(opened[0]) if len(opened) else None
    return {"max_gate": float(gate.max()),
            "first_opening_time": None if first is None else float(ts[first]),
            "signal_at_first_opening": 0.0 if first is None else float(signal[first].max())}
