"""Training is integration: example k is shown during ``[k·T, (k+1)·T)`` and the weights are
state.

:func:`train` is the one training loop. It steps the learning circuit's vector field with a
fixed-step method and makes the drive explicit: at each declared jump time (``k·T``, and
``k·T + teacher_from`` when a free phase comes first) it calls ``circuit.present(x, target, y)``
between steps, and recomputes what a stepping method takes from the circuit (leak rates, the
linearisation of ``exp_partitioned``) there, so nothing goes stale and nothing mutates inside a
step. Evaluation, logging and checkpoints are done by the caller's ``on_chunk`` *between*
chunks of presentations; divergence is checked once per chunk (the only host synchronisation).
The chunk grid is fixed (multiples of ``chunk`` from 0) and the stream is a pure function of k,
so a run resumed from a checkpoint written at a chunk boundary takes exactly the steps an
uninterrupted run takes (bit-for-bit, in float64 and float32 alike).

:class:`Drive` is the older form of the same idea for :func:`solve`: a vector field that works
out k from t and presents ``stream(k)`` when it changes (a mutation from inside the vector field;
kept for scripts that integrate a drive with ``solve`` directly).

A replica that diverges in a chunk is held at its state at the start of that chunk and flagged
(``TrainingResult.diverged``) for the rest of the run, so one unstable replica of a sweep never
turns the others' results into NaN.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from .methods import METHODS, get_method, rk_step
from .partitioned import TRAINING_METHODS, PartitionedExponential
from .presentations import Phase, jump, present
from .solve import Solution, Status, solve
from .state import Layout, State

Stream = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def _check_drive(circuit: Any, stream: Any) -> None:
    if not hasattr(circuit, "present"):
        raise TypeError(f"circuit: received {type(circuit).__name__}, expected a learning "
                        "circuit with present(x, target) (circuits.Plastic, "
                        "PredictiveCoding, LocalDecoders)")
    if not callable(stream):
        raise TypeError(f"stream: received {type(stream).__name__}, expected a function "
                        "k -> (x_k, target_k)")


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
        _check_drive(circuit, stream)
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

    def to_xarray(self, history: Mapping[int, Mapping[str, Any]] | None = None,
                  dims: Mapping[str, Sequence[str]] | None = None,
                  epoch_size: int | None = None) -> Any:
        """An ``xarray.Dataset`` of the final state and divergence flags per replica, plus
        ``history`` (``{presentations done: {name: value}}``, e.g. losses logged in
        ``on_chunk``) along a ``presentation`` coordinate
        (:func:`solvers.labelled.training_to_xarray`; needs xarray)."""
        from .labelled import training_to_xarray
        return training_to_xarray(self, history, dims, epoch_size)


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: received {value!r}, expected an integer ≥ {minimum}")
    return value


def train(circuit: Any, y0: Mapping[str, torch.Tensor], stream: Stream, *,
          period: float | None = None, presentations: int, dt: float | None = None,
          method: str = "euler", chunk: int = 1, start: int = 0,
          teacher_from: float = 0.0, teacher_dt: float | None = None,
          diverged: torch.Tensor | None = None,
          on_chunk: Callable[[int, State, Solution], None] | None = None,
          divergence_bound: float = 1e6, progress: bool | None = None,
          relinearise_every: int = 1, phases: Sequence[Phase] | None = None,
          on_presentation: Callable[[int, State, list[Solution]], None] | None = None,
          observe: Callable[[State], State] | None = None) -> TrainingResult:
    """Integrate the learning circuit ``circuit`` driven by ``stream`` from presentation
    ``start`` (state ``y0`` at ``t = start·period``) to ``presentations``, checking divergence
    after every chunk of ``chunk`` presentations (chunk ends at multiples of ``chunk``;
    ``start`` must be one, or 0).

    The drive is explicit: example k is shown at the declared jump time ``k·period`` (and its
    teacher at ``k·period + teacher_from``) by ``circuit.present(x, target, y)`` *between* steps,
    never from inside the vector field, and everything a stepping method takes from the circuit
    (``exp_euler``'s leak rates, ``exp_partitioned``'s Jacobian) is recomputed at each jump, so it
    follows the drive. ``present`` may return populations that jump with the drive (a reset
    map declared by the circuit, e.g. ``PredictiveCoding(reset="feed_forward")``). The data of
    the first presentation are checked (finite, shapes); later presentations are checked for
    shape only, so a chunk of steps issues no host synchronisation (a non-finite example shows
    up as a diverged replica).

    ``method``: a fixed-step tableau of :mod:`solvers.methods` (``euler``, ``exp_euler``, ``rk4``
    ...), ``exp_partitioned`` (settling circuits: see :class:`PartitionedExponential`; its
    Jacobian is recomputed at the jump of every ``relinearise_every``-th presentation, counted
    from 0 so that a resumed run relinearises where the uninterrupted one did), or any
    other :func:`solve` method, integrated by one ``solve`` per phase. Each phase (free, teacher)
    is stepped with ``dt`` (``teacher_dt`` while the teacher is shown, if given), the last step
    of a phase shortened to end on its jump.

    ``phases``: instead of ``period``/``dt``/``teacher_from``, each presentation is shown
    through these :class:`solvers.Phase` s (the period is their total duration), each one
    :func:`solve` with its own step, method, steady-state stopping (a free phase that ends when
    the circuit has settled) and recording (``save_every``, ``observe``);
    ``on_presentation(k, y, solutions)`` then runs after presentation k (0-based) with the
    phases' solutions. This is the slower, observable form of the same loop (used to watch
    gates open); the fixed-step form above issues no host synchronisation inside a chunk.

    ``on_chunk(k, y, solution)`` runs after each chunk with the number of presentations done
    and the state there: evaluate, log and checkpoint in it (a checkpoint holds ``k``, ``y`` and
    ``diverged``, the run's cumulative flags so far, given as ``solution.stats["diverged"]``;
    ``solution.stats["steps"]``/``["seconds"]`` are the run's totals so far; resume with
    ``start=k, y0=y, diverged=diverged``: bit-for-bit, since the chunk grid, the steps and the
    stream are pure functions of k). A replica whose state is non-finite or above
    ``divergence_bound`` at the end of a chunk is flagged and held at its state at the start
    of that chunk for the rest of the run.
    """
    _count("presentations", presentations, 1)
    _count("chunk", chunk, 1)
    _count("start", start, 0)
    _count("relinearise_every", relinearise_every, 1)
    if start > presentations:
        raise ValueError(f"start: received {start}, expected at most presentations = "
                         f"{presentations}")
    if start % chunk and start != presentations:
        raise ValueError(f"start: received {start}, expected a multiple of chunk = {chunk} (a "
                         "checkpoint is written at a chunk boundary; resuming elsewhere would "
                         "take different steps than the uninterrupted run)")
    _check_drive(circuit, stream)
    if phases is not None:
        if not isinstance(phases, (list, tuple)) or not phases \
                or not all(isinstance(p, Phase) for p in phases):
            raise ValueError(f"phases: received {phases!r}, expected a non-empty list of "
                             "solvers.Phase")
        if dt is not None or period is not None or teacher_from or teacher_dt is not None:
            raise ValueError("phases: received together with period/dt/teacher_from/"
                             "teacher_dt, expected either phases or those (each phase has "
                             "its own duration and dt)")
        period = float(sum(p.duration for p in phases))
        dt = phases[0].dt if not callable(phases[0].dt) else 1.0  # a bound-derived dt: per phase
    elif on_presentation is not None or observe is not None:
        raise ValueError("on_presentation, observe: received without phases, expected them "
                         "only with phases= (the fixed-step loop records nothing per step; "
                         "use on_chunk)")
    if period is None or dt is None:
        raise ValueError(f"period, dt: received {period!r}, {dt!r}, expected both (numbers > 0) "
                         "unless phases= is given")
    for name, value in (("period", period), ("dt", dt)) + (
            (("teacher_dt", teacher_dt),) if teacher_dt is not None else ()):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}: received {value!r}, expected a finite number > 0")
    if isinstance(teacher_from, bool) or not isinstance(teacher_from, (int, float)) \
            or not 0 <= teacher_from < period:
        raise ValueError(f"teacher_from: received {teacher_from!r}, expected a number in "
                         f"[0, period = {period}) (when in each period the teacher appears)")
    T, teacher_from = float(period), float(teacher_from)
    given_phases = phases
    segments = ([(0.0, teacher_from, float(dt), False)] if teacher_from > 0 else []) + [
        (teacher_from, T, float(teacher_dt if teacher_dt is not None and teacher_from > 0
                                else dt), True)]
    for a, b, h, _ in ([] if given_phases is not None else segments):
        if h > b - a + 1e-9 * T:
            raise ValueError(f"dt: received {h!r}, expected at most the phase it steps "
                             f"({b - a!r} of period {T!r}): a longer step would skip examples")
    y = {k: v for k, v in y0.items()}
    layout = Layout(y)
    S = layout.replicas
    if diverged is not None:
        if not isinstance(diverged, torch.Tensor) or diverged.shape != (S,):
            raise ValueError(f"diverged: received {getattr(diverged, 'shape', diverged)!r}, "
                             f"expected a bool tensor of S = {S} flags (from a checkpoint)")
    flags = (torch.zeros(S, dtype=torch.bool) if diverged is None
             else diverged.detach().to("cpu", torch.bool).clone())

    if method in TRAINING_METHODS and start % relinearise_every and start != presentations:
        raise ValueError(f"start: received {start}, expected a multiple of relinearise_every = "
                         f"{relinearise_every} for method {method!r} (the Jacobian in use was "
                         "computed at such a jump; resuming elsewhere would step differently)")
    # the step: a partitioned stepper, a tableau, or neither (implicit / adaptive: solve)
    stepper = PartitionedExponential(circuit, layout) if method in TRAINING_METHODS else None
    tableau = METHODS.get(method)
    if stepper is None and tableau is None:
        get_method(method)                            # a clear error for unknown names
    flat_field = (lambda t, v: layout.pack(circuit.vector_field(t, layout.unpack(v))))

    def run_phase(yf: torch.Tensor, t0: float, t1: float, h: float, relinearise: bool
                  ) -> tuple[torch.Tensor, int]:
        n = max(1, math.ceil((t1 - t0) / h - 1e-9))
        if stepper is None and tableau is None:       # implicit / adaptive: solve the phase
            sol = solve(circuit, layout.unpack(yf), t0, t1, dt=h, method=method,
                        steady_state=False, divergence_bound=math.inf, progress=False)
            return layout.pack(sol.y1), int(sol.stats.get("steps", 0))
        leak = None
        if tableau is not None and tableau.exponential and hasattr(circuit, "leak"):
            rates = circuit.leak(layout.unpack(yf))
            leak = layout.pack({k: torch.as_tensor(rates.get(k, 0.0), dtype=layout.dtype,
                                                   device=layout.device).expand(S, *sh)
                                for k, sh in zip(layout.names, layout.shapes)})
        if stepper is not None and (relinearise or stepper.J is None):
            stepper.jump(t0, yf)
        for i in range(n):
            t = t0 + i * h
            hi = h if i < n - 1 else t1 - t
            if stepper is not None:
                yf = stepper(t, yf, hi)
            else:
                yf, _ = rk_step(tableau, flat_field, t, yf, hi, leak)
        return yf, n

    steps, seconds = 0, 0.0
    bar = tqdm(total=presentations, initial=start, unit="example", leave=False,
               desc="train", disable=(None if progress is None else not progress))
    yf = layout.pack(y)
    k = start
    checked = False
    while k < presentations:
        k1 = min((k // chunk + 1) * chunk, presentations)
        clock = time.perf_counter()
        y_start = yf
        for j in range(k, k1):
            x, target = stream(j)
            if given_phases is not None:
                state, sols = present(circuit, layout.unpack(yf), x, target, given_phases,
                                      t0=j * T, observe=observe, check=not checked)
                checked = True
                yf = layout.pack(state)
                steps += sum(int(sol.stats.get("steps", 0)) for sol in sols)
                if on_presentation is not None:
                    on_presentation(j, {n: v.clone() for n, v in state.items()}, sols)
                continue
            for a, b, h, teaching in segments:
                reset = jump(circuit, x, target if teaching else None, layout.unpack(yf),
                             not checked)
                if reset:
                    yf = layout.pack({**layout.unpack(yf), **reset})
                checked = True
                yf, n = run_phase(yf, j * T + a, j * T + b, h, j % relinearise_every == 0)
                steps += n
        bad = ~(layout.replica_absmax(yf) <= divergence_bound)           # NaN compares False
        new = bad.cpu() & ~flags                                          # one host sync
        flags |= new
        if bool(flags.any()):
            yf = torch.where(layout.spread(flags.to(layout.device)), y_start, yf)
        seconds += time.perf_counter() - clock
        bar.update(k1 - k)
        k = k1
        y = {n: v.clone() for n, v in layout.unpack(yf).items()}
        if on_chunk is not None:
            status = torch.where(flags, int(Status.DIVERGED), int(Status.REACHED_T1)).long()
            sol = Solution(ts=torch.tensor([k * T], dtype=layout.dtype), ys={}, y1=y,
                           status=status, t_stop=torch.full((S,), k * T, dtype=layout.dtype),
                           stats={"steps": steps, "seconds": seconds, "diverged": flags.clone(),
                                  "method": method, "dt": dt})
            on_chunk(k, y, sol)
    bar.close()
    y = {n: v.clone() for n, v in layout.unpack(yf).items()}
    return TrainingResult(y, k, flags, {"steps": steps, "seconds": seconds})


__all__ = ["Drive", "Stream", "TrainingResult", "train"]
