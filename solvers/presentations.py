"""Presentations in phases: one example shown through a short sequence of phases, each phase one
:func:`solve` (its own step, method, steady-state stopping and recording). :func:`solvers.train`
uses this for ``phases=``; :func:`present_all`, the older per-presentation loop, is retired in
its favour.

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
    for phase in phases:
        reset = jump(circuit, x, target if phase.teacher else None, y, check)
        if reset:
            y.update(reset)
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
