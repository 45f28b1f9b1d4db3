"""Training is integration: present examples one after another to a circuit whose weights are
state, each presentation a short sequence of phases, each phase one :func:`solve`.

The circuit carries its state from one presentation to the next (nothing is re-initialised:
the new input meets whatever the last one left). A phase says what the drive shows (the input
alone, or input and teacher), how long, with which step and whether it ends at steady state.
Evaluation, logging and checkpoints are done by the caller between presentations
(``on_presentation``), never inside the loop.

The circuit must have ``present(x, target)`` (``target=None`` removes the teacher), as
:class:`circuits.PredictiveCoding` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from tqdm.auto import tqdm

from .solve import Solution, solve
from .state import State


@dataclass(frozen=True)
class Phase:
    """One phase of a presentation.

    name: label in logs.  duration: length (t1 − t0).  dt, method: the integration.
    teacher: whether the target is shown.  steady_state: end early when the circuit settles
    (``atol``/``rtol`` as in :func:`solve`).  save_every: record every n-th step.
    """

    name: str
    duration: float
    dt: float
    teacher: bool
    steady_state: bool = False
    method: str = "euler"
    atol: float | None = None
    rtol: float | None = None
    save_every: int | None = None

    def __post_init__(self):
        for field in ("duration", "dt"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v <= 0:
                raise ValueError(f"Phase {self.name!r}: {field}: received {v!r}, expected a "
                                 "finite number > 0")


def present(circuit: Any, y: Mapping[str, torch.Tensor], x: torch.Tensor,
            target: torch.Tensor | None, phases: list[Phase], t0: float = 0.0,
            observe: Callable[[State], State] | None = None) -> tuple[State, list[Solution]]:
    """Show one example (or batch) through ``phases``; returns the final state and each
    phase's solution. Time runs on from ``t0`` across phases."""
    if not hasattr(circuit, "present"):
        raise TypeError(f"circuit: received {type(circuit).__name__}, expected a circuit with a "
                        "present(x, target) method (e.g. circuits.PredictiveCoding)")
    sols = []
    t = t0
    for phase in phases:
        circuit.present(x, target if phase.teacher else None)
        sol = solve(circuit, y, t, t + phase.duration, dt=phase.dt, method=phase.method,
                    steady_state=phase.steady_state, atol=phase.atol, rtol=phase.rtol,
                    save_every=phase.save_every, observe=observe, progress=False)
        sols.append(sol)
        y = sol.y1
        t = t + phase.duration
    return y, sols


def present_all(circuit: Any, y: Mapping[str, torch.Tensor],
                batches: Iterable[tuple[torch.Tensor, torch.Tensor]], phases: list[Phase], *,
                on_presentation: Callable[[int, State, list[Solution]], None] | None = None,
                observe: Callable[[State], State] | None = None,
                progress: bool | None = None, total: int | None = None) -> State:
    """Present every ``(x, target)`` of ``batches`` in turn; ``on_presentation(k, y, sols)`` is
    called after each (evaluate, log, checkpoint there; ``sols`` record ``observe(y)`` if
    given, e.g. ``circuit.observe`` for gate traces). Returns the final state."""
    if not phases:
        raise ValueError("phases: received an empty list, expected at least one Phase")
    y = dict(y)
    bar = tqdm(batches, total=total, disable=(None if progress is None else not progress),
               unit="example", leave=False, desc="present")
    for k, (x, target) in enumerate(bar):
        y, sols = present(circuit, y, x, target, phases, observe=observe)
        if on_presentation is not None:
            on_presentation(k, y, sols)
    bar.close()
    return y
