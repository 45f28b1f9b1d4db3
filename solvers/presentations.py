"""Presentations in phases: one example shown through a short sequence of phases, each phase one
:func:`solve` (its own step, method, steady-state stopping and recording). :func:`solvers.train`
uses this for ``phases=``; :func:`present_all`, the older per-presentation loop, is retired in
its favour.

The circuit carries its state from one presentation to the next (nothing is re-initialised:
the new input meets whatever the last one left, unless the circuit declares a reset map). A
phase says what the drive shows (the input alone, or input and teacher), how long, with which
step and whether it ends at steady state. The drive jumps where what it shows changes: at the
first phase of a presentation and where a phase's ``teacher`` differs from the one before; two
phases in a row that show the same thing are one stretch of drive.

A phase may integrate part of a learning circuit's state (``populations``): ``"fast"`` settles
its credit populations with the weights held (the circuit's ``bound(y)``, a plain credit circuit,
so every method of :func:`solve` applies, the exact ``affine`` flow included), ``"weights"``
moves the weights with the credit populations held. A settle followed by one Euler step of the
weights over a unit duration is the discrete protocol "settle, then ``W += η ΔW``" of online
learning papers (Podlaski & Machens 2020), written as integration: the plasticity gate opens
for one unit of time once the circuit has settled.

Evaluation, logging and checkpoints are done by the caller between presentations
(``on_presentation``), never inside the loop.

The circuit must have ``present(x, target)`` (``target=None`` removes the teacher), as
:class:`circuits.PredictiveCoding` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch

from .solve import Solution, solve
from .state import State


PARTS = ("all", "fast", "weights")


@dataclass(frozen=True)
class Phase:
    """One phase of a presentation.

    name: label in logs.  duration: length (t1 − t0).  dt, method: the integration; ``dt`` may be
    a function ``(circuit, y) -> float`` of what the phase integrates and its state at the phase
    start (e.g. a fraction of a stability bound that changes as the weights learn).
    teacher: whether the target is shown.  steady_state: end early when the circuit settles
    (``atol``/``rtol`` as in :func:`solve`).  save_every: record every n-th step.
    populations: ``"all"`` (default), ``"fast"`` or ``"weights"`` (see the module docstring).
    max_steps: at most this many steps (the duration is cut to ``max_steps × dt``).
    options: further keyword arguments of :func:`solve` (``dt_growth``, ``jacobian_every``,
    ``check_every`` ...).
    """

    name: str
    duration: float
    dt: float | Callable[[Any, State], float]
    teacher: bool
    steady_state: bool = False
    method: str = "euler"
    atol: float | None = None
    rtol: float | None = None
    save_every: int | None = None
    populations: str = "all"
    max_steps: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("duration",) + (() if callable(self.dt) else ("dt",)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v <= 0:
                raise ValueError(f"Phase {self.name!r}: {name}: received {v!r}, expected a "
                                 "finite number > 0" + (" or a function (circuit, y) -> dt"
                                                        if name == "dt" else ""))
        if self.populations not in PARTS:
            raise ValueError(f"Phase {self.name!r}: populations: received {self.populations!r}, "
                             f"expected one of {list(PARTS)}")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(
                self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"Phase {self.name!r}: max_steps: received {self.max_steps!r}, "
                             "expected None or an integer ≥ 1")
        if not isinstance(self.options, Mapping):
            raise ValueError(f"Phase {self.name!r}: options: received "
                             f"{type(self.options).__name__}, expected a mapping of solve's "
                             "keyword arguments")


class Held:
    """The vector field of ``circuit`` over the populations ``names`` only, every other
    population held at its value in ``y`` (what a ``populations="weights"`` phase integrates)."""

    def __init__(self, circuit: Any, y: Mapping[str, torch.Tensor], names: list[str]):
        self.circuit, self.names = circuit, list(names)
        self.held = {k: v for k, v in y.items() if k not in self.names}

    def vector_field(self, t: float, y: State) -> State:
        full = self.circuit.vector_field(t, {**self.held, **y})
        return {k: full[k] for k in self.names}

    def __call__(self, t: float, y: State) -> State:
        return self.vector_field(t, y)


def part(circuit: Any, y: State, populations: str) -> tuple[Any, State]:
    """What a phase integrates: ``(vector field, its state)`` for ``populations``."""
    if populations == "all":
        return circuit, dict(y)
    if not (hasattr(circuit, "fast") and hasattr(circuit, "bound")):
        raise TypeError(f"populations: received {populations!r} for a "
                        f"{type(circuit).__name__}, expected a learning circuit with credit "
                        "populations `fast` and `bound(y)` (circuits.Plastic), or "
                        "populations='all'")
    fast = list(circuit.fast)
    if populations == "fast":
        return circuit.bound(y), {k: y[k] for k in fast}
    weights = [k for k in y if k not in fast]
    return Held(circuit, y, weights), {k: y[k] for k in weights}


def jump(circuit: Any, x: torch.Tensor, target: torch.Tensor | None, y: State,
         check: bool = True) -> Mapping[str, torch.Tensor] | None:
    """Show ``(x, target)`` to a learning circuit at a jump, with the state there (for what it
    holds per presentation, such as feedback computed at the current weights); ``check=False``
    checks shapes only (no host synchronisation). A circuit may return populations that jump
    too (a reset map, e.g. Z-IL's start at the feed-forward pass)."""
    try:
        return circuit.present(x, target, y, check=check)
    except TypeError as err:          # a learning circuit with the older present(x, target)
        if "unexpected keyword" not in str(err) and "positional argument" not in str(err):
            raise
        return circuit.present(x, target)


def present(circuit: Any, y: Mapping[str, torch.Tensor], x: torch.Tensor,
            target: torch.Tensor | None, phases: list[Phase], t0: float = 0.0,
            observe: Callable[[State], State] | None = None, check: bool = True
            ) -> tuple[State, list[Solution]]:
    """Show one example (or batch) through ``phases``, each one :func:`solve` (with its own
    step, method, steady-state stopping and recording); returns the final state and each
    phase's solution. Time runs on from ``t0`` across phases."""
    if not hasattr(circuit, "present"):
        raise TypeError(f"circuit: received {type(circuit).__name__}, expected a circuit with a "
                        "present(x, target) method (e.g. circuits.PredictiveCoding)")
    sols = []
    t = t0
    y = dict(y)
    for i, phase in enumerate(phases):
        if i == 0 or phase.teacher != phases[i - 1].teacher:
            reset = jump(circuit, x, target if phase.teacher else None, y, check)
            if reset:
                y.update(reset)
        f, y_part = part(circuit, y, phase.populations)
        dt = float(phase.dt(f, y_part)) if callable(phase.dt) else phase.dt
        duration = phase.duration if phase.max_steps is None else \
            min(phase.duration, phase.max_steps * dt)
        sol = solve(f, y_part, t, t + duration, dt=dt, method=phase.method,
                    steady_state=phase.steady_state, atol=phase.atol, rtol=phase.rtol,
                    save_every=phase.save_every, observe=observe, progress=False,
                    **phase.options)
        sols.append(sol)
        y.update(sol.y1)
        t = t + phase.duration
    return y, sols


def present_all(circuit: Any, y: Mapping[str, torch.Tensor],
                batches: Iterable[tuple[torch.Tensor, torch.Tensor]], phases: list[Phase], *,
                on_presentation: Callable[[int, State, list[Solution]], None] | None = None,
                observe: Callable[[State], State] | None = None,
                progress: bool | None = None, total: int | None = None) -> State:
    """Retired: :func:`solvers.train` with ``phases=`` is the one training loop. This wrapper
    runs it on the listed ``batches`` (``on_presentation(k, y, sols)`` after each) and warns."""
    import warnings
    from .training import train
    warnings.warn("solvers.present_all is retired: use solvers.train(circuit, y0, stream, "
                  "phases=[...], presentations=N, on_presentation=...)", DeprecationWarning,
                  stacklevel=2)
    if not phases:
        raise ValueError("phases: received an empty list, expected at least one Phase")
    listed = list(batches)
    if not listed:
        return dict(y)
    return train(circuit, y, lambda k: listed[k], phases=phases, presentations=len(listed),
                 on_presentation=on_presentation, observe=observe, progress=progress).y
