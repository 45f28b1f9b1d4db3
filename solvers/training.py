"""Training is integration: one :func:`solve` over a time span in which a drive presents example
k during ``[k·T, (k+1)·T)``.

:class:`Drive` turns a learning circuit (weights in its state, a ``present(x, target)`` method)
and an example stream ``k ↦ (x_k, target_k)`` into a vector field that is piecewise constant in
its input: on every evaluation it works out k from t and presents ``stream(k)`` when k changes.
:func:`train` integrates that vector field from presentation ``start`` to ``presentations``
in chunks of ``chunk`` presentations; evaluation, logging and checkpoints are done by the
caller's ``on_chunk`` *between* chunks. The chunk grid is fixed (multiples of ``chunk`` from 0),
each chunk is one :func:`solve` from ``k·T`` with the same dt, and the stream is a pure function
of k, so a run resumed from a checkpoint written at a chunk boundary takes exactly the steps an
uninterrupted run takes (bit-for-bit, in float64 and float32 alike).

A replica that diverges in a chunk is frozen at its last finite state by :func:`solve`; here it is
also remembered (``TrainingResult.diverged``) and stays frozen for the rest of the run, so one
unstable replica of a sweep never turns the others' results into NaN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from tqdm.auto import tqdm

from .solve import Solution, Status, solve
from .state import State

Stream = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


class Drive:
    """``f(t, y)`` of ``circuit`` with example ``k = ⌊t / period⌋`` of ``stream`` presented.

    ``teacher_from``: the teacher appears ``teacher_from`` into each period (before it the
    circuit sees the input alone, ``present(x, None)``: a free phase, e.g. predictive coding's
    prediction before the teacher clamps the output); 0 shows it throughout.

    Multi-stage methods evaluate at ``t + c·h``; a stage that lands on the next period sees the
    next example (the drive is what it is: piecewise constant). With ``dt`` dividing ``period``
    Euler and exponential Euler never straddle a switch.
    """

    def __init__(self, circuit: Any, stream: Stream, period: float, *,
                 teacher_from: float = 0.0):
        if not hasattr(circuit, "present"):
            raise TypeError(f"circuit: received {type(circuit).__name__}, expected a learning "
                            "circuit with present(x, target) (circuits.Plastic, "
                            "PredictiveCoding, LocalDecoders)")
        if not callable(stream):
            raise TypeError(f"stream: received {type(stream).__name__}, expected a function "
                            "k -> (x_k, target_k)")
        if isinstance(period, bool) or not isinstance(period, (int, float)) \
                or not math.isfinite(period) or period <= 0:
            raise ValueError(f"period: received {period!r}, expected a finite number > 0 (the "
                             "time each example is shown)")
        if isinstance(teacher_from, bool) or not isinstance(teacher_from, (int, float)) \
                or not 0 <= teacher_from < period:
            raise ValueError(f"teacher_from: received {teacher_from!r}, expected a number in "
                             f"[0, period = {period}) (when in each period the teacher appears)")
        self.circuit, self.stream, self.period = circuit, stream, float(period)
        self.teacher_from = float(teacher_from)
        self.shown: tuple[int, bool] | None = None

    def index(self, t: float) -> int:
        """The example shown at time t (robust to the rounding of ``t0 + i·dt``)."""
        return int(math.floor(t / self.period + 1e-9))

    def show(self, t: float) -> None:
        """Present what the drive shows at time t (only when that changes)."""
        k = self.index(t)
        teaching = t - k * self.period >= self.teacher_from - 1e-9 * self.period
        if (k, teaching) != self.shown:
            x, target = self.stream(k)
            self.circuit.present(x, target if teaching else None)
            self.shown = (k, teaching)

    def vector_field(self, t: float, y: State) -> State:
        self.show(t)
        return self.circuit.vector_field(t, y)

    def leak(self, y: State) -> dict[str, torch.Tensor]:
        return self.circuit.leak(y) if hasattr(self.circuit, "leak") else {}

    def __call__(self, t: float, y: State) -> State:
        return self.vector_field(t, y)


@dataclass
class TrainingResult:
    """What :func:`train` returns: the final state, the presentation it reached, per-replica
    divergence flags ``[S]`` (bool) and statistics (steps, seconds)."""

    y: State
    presentations: int
    diverged: torch.Tensor
    stats: dict[str, Any] = field(default_factory=dict)


def _mask(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return flags.to(like.device).view(-1, *([1] * (like.dim() - 1)))


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: received {value!r}, expected an integer ≥ {minimum}")
    return value


def train(circuit: Any, y0: Mapping[str, torch.Tensor], stream: Stream, *, period: float,
          presentations: int, dt: float, method: str = "euler", chunk: int = 1, start: int = 0,
          teacher_from: float = 0.0, teacher_dt: float | None = None,
          diverged: torch.Tensor | None = None,
          on_chunk: Callable[[int, State, Solution], None] | None = None,
          divergence_bound: float = 1e6, progress: bool | None = None) -> TrainingResult:
    """Integrate ``circuit`` driven by ``stream`` from presentation ``start`` (state ``y0`` at
    ``t = start·period``) to ``presentations``, one :func:`solve` per chunk of ``chunk``
    presentations (chunk ends at multiples of ``chunk``; ``start`` must be one, or 0).

    ``on_chunk(k, y, solution)`` runs after each chunk with the number of presentations done
    and the state there: evaluate, log and checkpoint in it (a checkpoint holds ``k``, ``y`` and
    ``diverged``, the run's cumulative flags so far, given as ``solution.stats["diverged"]``;
    ``solution.stats["steps"]``/``["seconds"]`` are the run's totals so far; resume with
    ``start=k, y0=y, diverged=diverged``). Steady-state stopping is off
    (a learning circuit is never at rest); divergence is checked per replica as in ``solve``.

    ``teacher_dt``: a different step while the teacher is shown (``teacher_from`` > 0). The
    trajectory is still one integration, with a piecewise-constant step: each presentation's
    free and teacher phases are then two solves. (Z-IL's exactness needs Euler at ``dt = τ_x``
    once the teacher appears, while the free relaxation before it needs a smaller step.)
    """
    _count("presentations", presentations, 1)
    _count("chunk", chunk, 1)
    _count("start", start, 0)
    if start > presentations:
        raise ValueError(f"start: received {start}, expected at most presentations = "
                         f"{presentations}")
    if start % chunk and start != presentations:
        raise ValueError(f"start: received {start}, expected a multiple of chunk = {chunk} (a "
                         "checkpoint is written at a chunk boundary; resuming elsewhere would "
                         "take different steps than the uninterrupted run)")
    drive = Drive(circuit, stream, period, teacher_from=teacher_from)
    T = drive.period
    if teacher_dt is not None and teacher_from > 0:
        segments = lambda a, b: [s for j in range(a, b) for s in (  # noqa: E731
            (j * T, j * T + teacher_from, dt), (j * T + teacher_from, (j + 1) * T, teacher_dt))]
    else:
        segments = lambda a, b: [(a * T, b * T, dt)]  # noqa: E731
    y = {k: v for k, v in y0.items()}
    S = next(iter(y.values())).shape[0]
    flags = (torch.zeros(S, dtype=torch.bool) if diverged is None
             else diverged.detach().to("cpu", torch.bool).clone())
    held = dict(y)                         # where each diverged replica stays frozen
    steps, seconds = 0, 0.0
    bar = tqdm(total=presentations, initial=start, unit="example", leave=False,
               desc="train", disable=(None if progress is None else not progress))
    k = start
    while k < presentations:
        k1 = min((k // chunk + 1) * chunk, presentations)
        for t0, t1, h in segments(k, k1):
            sol = solve(drive, y, t0, t1, dt=h, method=method, steady_state=False,
                        divergence_bound=divergence_bound, progress=False)
            new = (sol.status == Status.DIVERGED).cpu() & ~flags
            y = sol.y1
            if bool(new.any()):
                held = {n: torch.where(_mask(new, v), v, held[n]) for n, v in y.items()}
            flags |= new
            if bool(flags.any()):
                y = {n: torch.where(_mask(flags, v), held[n], v) for n, v in y.items()}
            steps += sol.stats.get("steps", 0)
            seconds += sol.stats.get("seconds", 0.0)
        bar.update(k1 - k)
        k = k1
        sol.stats.update(steps=steps, seconds=seconds, diverged=flags.clone())
        if on_chunk is not None:
            on_chunk(k, y, sol)
    bar.close()
    return TrainingResult(y, k, flags, {"steps": steps, "seconds": seconds})


__all__ = ["Drive", "Stream", "TrainingResult", "train"]
