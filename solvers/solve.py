"""The one loop: integrate a vector field over ``[t0, t1]`` with per-replica stopping.

``solve`` knows no circuit. It takes ``f(t, y) -> dy/dt`` on a mapping of named tensors that
lead with the replica axis S (or any object with a ``vector_field`` method and optionally a
``leak`` method, such as every circuit in :mod:`circuits`), a starting state and a time span.

Per replica, every ``check_every`` steps (one host sync per check, none inside a step; a
second only in the check where a replica first diverges):

* **diverged**: a non-finite entry, or ``max |y| > divergence_bound``. The replica is rolled back
  to its state at the previous check, frozen there, and the recorded points since that check are
  replaced by that state, so neither its saved trajectory nor any other replica sees a NaN.
* **converged**: ``‖dy/dt‖₂ ≤ atol + rtol ‖y‖₂`` (norms over the replica's whole state). It is
  frozen; its settle time is the time of the check that saw it. The distance still left to the
  fixed point is about ``‖dy/dt‖ ×`` the slowest time constant: tighten the tolerances for slow
  circuits when comparing against a closed form.
* **reached_t1**: still running at ``t1``.

Frozen replicas are carried through the batched arithmetic (that is what makes the batch one
kernel) until at most ``compact`` (default half) of the batch still runs; then the running
replicas are gathered into a smaller batch — their state, and through ``circuit.take`` their
per-replica parameters, drives and weights — and everything is scattered back at the end. A
sweep then costs about the sum of its replicas' own settle steps, with results equal bit for bit
to those without compaction (the rows of a batched step do not depend on the other rows; the
exact affine flow agrees to rounding, ~1e-14, because a batched matmul of another size may round
differently). Plain callables (no ``take``) are never compacted.

``method="affine"`` steps a circuit that declares an affine field with its exact flow
(:mod:`solvers.affine`); ``method="auto"`` picks it (on a doubling grid) where it applies, else
exponential Euler or Euler.
"""
from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from .affine import AFFINE, AffineFlow, is_affine
from .implicit import IMPLICIT, MAX_SIZE, ImplicitEulerStep
from .methods import ADAPTIVE, METHODS, get_method, phi1, rk_step
from .state import Layout, State


class Status(IntEnum):
    REACHED_T1 = 0
    CONVERGED = 1
    DIVERGED = 2


@dataclass
class Solution:
    """What ``solve`` returns.

    ts:      ``[T]`` saved times.
    ys:      ``{name: [T, S, ...]}`` saved state (or saved observations, see ``observe``).
    y1:      ``{name: [S, ...]}`` final state (the frozen state for stopped replicas).
    status:  ``[S]`` int codes of :class:`Status`.
    t_stop:  ``[S]`` time each replica stopped (``t1`` if it never did).
    stats:   steps, evaluations, wall-clock seconds, method, dt.
    """

    ts: torch.Tensor
    ys: State
    y1: State
    status: torch.Tensor
    t_stop: torch.Tensor
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def converged(self) -> torch.Tensor:
        return self.status == Status.CONVERGED

    @property
    def diverged(self) -> torch.Tensor:
        return self.status == Status.DIVERGED

    def status_names(self) -> list[str]:
        return [Status(int(s)).name.lower() for s in self.status.tolist()]

    def counts(self) -> dict[str, int]:
        return {s.name.lower(): int((self.status == s).sum()) for s in Status}

    def to_xarray(self, dims: Mapping[str, Sequence[str]] | None = None,
                  final: bool = True) -> Any:
        """An ``xarray.Dataset``: trajectories over ``time`` × ``replica`` × unit dims, final
        state, status and ``t_stop`` per replica (:func:`solvers.labelled.solution_to_xarray`;
        needs xarray)."""
        from .labelled import solution_to_xarray
        return solution_to_xarray(self, dims, final)


def _positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        kind = "integer" if integer else "number"
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: received {value!r}, expected a finite {kind} {bound}")


def _vector_field(f: Any) -> tuple[Callable, Callable | None]:
    if hasattr(f, "vector_field"):
        return f.vector_field, getattr(f, "leak", None)
    if callable(f):
        return f, None
    raise TypeError(f"f: received {type(f).__name__}, expected a callable f(t, y) -> dy/dt "
                    "or an object with a vector_field method (a circuit)")


class _Grid:
    """Step times ``t_i = t0 + i dt``, or with ``growth`` g > 1 the geometric grid
    ``t_i = t0 + dt (gⁱ − 1)/(g − 1)`` (step i is ``dt gⁱ``)."""

    def __init__(self, t0: float, dt: float, growth: float):
        self.t0, self.dt, self.g = t0, dt, growth

    def time(self, i: int) -> float:
        if self.g == 1.0:
            return self.t0 + i * self.dt
        return self.t0 + self.dt * (self.g ** i - 1) / (self.g - 1)

    def position(self, t: float) -> float:
        """Fractional step index of time t (the inverse of :meth:`time`)."""
        if self.g == 1.0:
            return (t - self.t0) / self.dt
        return math.log1p((t - self.t0) * (self.g - 1) / self.dt) / math.log(self.g)


#: Roles of populations shaped ``[S, B, n]`` (n the declared size); weights, learned feedback
#: matrices and gate states have shapes of their own.
_PER_EXAMPLE_ROLES = ("forward", "error", "controller", "target")


def _check_y0(f: Any, y0: Mapping[str, torch.Tensor], layout: Layout) -> None:
    """``y0`` against what the circuit declares (its populations' names and sizes, its replica
    count, dtype and device), before any work. Plain callables declare nothing."""
    if layout.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"y0: received dtype {layout.dtype}, expected torch.float32 or "
                        "torch.float64 (convert with .double() or .float())")
    empty = [n for n, size in zip(layout.names, layout.sizes) if size == 0]
    if layout.replicas == 0 or empty:
        raise ValueError(f"y0: received {'S = 0 replicas' if not layout.replicas else f'empty populations {empty}'}"
                         ", expected at least one replica and one number per population")
    owner = getattr(f, "__self__", f)
    populations = getattr(owner, "populations", None)
    if populations is None:
        return
    expected = [p.name for p in populations]
    if set(expected) != set(layout.names):
        missing = [n for n in expected if n not in layout.names]
        extra = [n for n in layout.names if n not in expected]
        raise ValueError(f"y0: received populations {list(layout.names)}, expected "
                         f"{expected} ({type(owner).__name__}'s populations; missing {missing}, "
                         f"unexpected {extra}); start from circuit.initial_state()")
    S = getattr(owner, "S", None)
    if isinstance(S, int) and layout.replicas != S:
        raise ValueError(f"y0: received S = {layout.replicas} replicas, expected S = {S} like "
                         f"the {type(owner).__name__} it is integrated with")
    for p in populations:
        v = y0[p.name]
        if getattr(p, "role", None) in _PER_EXAMPLE_ROLES and (v.dim() != 3
                                                                or v.shape[-1] != p.size):
            raise ValueError(f"y0[{p.name!r}]: received shape {tuple(v.shape)}, expected "
                             f"[S, B, {p.size}] (population {p.name} has {p.size} units)")
    network = getattr(owner, "network", None)
    for attr in ("dtype", "device"):
        want = getattr(network, attr, None)
        if want is not None and getattr(layout, attr) != want:
            raise ValueError(f"y0: received {attr} {getattr(layout, attr)}, expected {want} like "
                             f"the circuit (build the circuit and its state with the same "
                             f"{attr}, or start from circuit.initial_state())")


def _checked_first_output(vector_field: Callable, layout: Layout) -> Callable:
    """``vector_field`` whose first output is checked against the state it was given (the
    same names, shapes and dtype); later calls are passed straight through."""
    checked = False

    def field(t: float, y: State) -> State:
        nonlocal checked
        out = vector_field(t, y)
        if not checked:
            if not isinstance(out, Mapping) or set(out) != set(y):
                raise ValueError(f"f: returned {sorted(out) if isinstance(out, Mapping) else type(out).__name__}"
                                 f", expected a mapping with the state's populations {sorted(y)}")
            for name, v in y.items():
                got = out[name]
                if not isinstance(got, torch.Tensor) or got.shape != v.shape \
                        or got.dtype != v.dtype:
                    raise ValueError(
                        f"f: returned {name!r} with "
                        f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}"
                        f"{'' if not isinstance(got, torch.Tensor) else ' ' + str(got.dtype)}, "
                        f"expected shape {tuple(v.shape)} and dtype {v.dtype} like the state")
            checked = True
        return out
    return field


def auto_method(f: Any, y0: Mapping[str, torch.Tensor]) -> tuple[str, float]:
    """What ``method="auto"`` integrates ``f`` from ``y0`` with: the exact flow on a doubling
    grid for a circuit that declares an affine field (and is small enough for a per-replica
    Jacobian), else exponential Euler where the circuit declares a leak, else Euler (both need
    ``dt``). Returns ``(method, dt_growth)``."""
    if is_affine(f) and Layout(y0).size <= MAX_SIZE:
        return AFFINE, 2.0
    return ("exp_euler" if _vector_field(f)[1] is not None else "euler"), 1.0


def _compiled_chunk(step: Callable, steps: int, device: torch.device) -> Callable:
    """``steps`` steps of ``step`` as one compiled function ``(y, t, h, mask) -> (y, k1,
    y_prev)`` (frozen entries, ``mask`` False, kept): :func:`torch.compile` fuses the chunk's
    elementwise work into a few loops on a CPU; on CUDA ``mode="reduce-overhead"`` also captures
    it as a CUDA graph (one launch per chunk)."""
    def chunk(y: torch.Tensor, t: float, h: float, mask: torch.Tensor):
        k1 = y_prev = y
        for j in range(steps):
            y_new, k1 = step(t + j * h, y, h)
            y_prev, y = y, torch.where(mask, y_new, y)
        return y, k1, y_prev
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(chunk, mode=mode)


def _save_plan(t0: float, t1: float, dt: float, n_steps: int, save_every: int | None,
               save_at: Sequence[float] | torch.Tensor | None, grid: _Grid | None = None
               ) -> tuple[list[float], dict[int, list[tuple[int, float]]]]:
    """Map each saved time to (step index i, weight w): saved = lerp(y_i, y_{i+1}, w)."""
    grid = _Grid(t0, dt, 1.0) if grid is None else grid
    if save_every is not None and save_at is not None:
        raise ValueError("save_every and save_at: received both, expected at most one")
    if save_at is None:
        every = n_steps if save_every is None else save_every
        _positive("save_every", every, integer=True)
        idx = list(range(0, n_steps + 1, every))
        if idx[-1] != n_steps:
            idx.append(n_steps)
        times = [min(grid.time(i), t1) for i in idx]
    else:
        try:
            times = [float(s) for s in (save_at.tolist() if isinstance(save_at, torch.Tensor)
                                        else save_at)]
        except (TypeError, ValueError):
            raise ValueError(f"save_at: received {save_at!r}, expected a non-empty increasing "
                             f"sequence of finite times in [t0, t1] = [{t0}, {t1}]") from None
        if not times or any(not math.isfinite(s) for s in times) \
                or any(b < a for a, b in zip(times, times[1:])) \
                or times[0] < t0 - 1e-12 or times[-1] > t1 + 1e-12:
            raise ValueError(f"save_at: received {times[:5]}{'...' if len(times) > 5 else ''}, "
                             f"expected a non-empty increasing sequence of finite times in "
                             f"[t0, t1] = [{t0}, {t1}]")
    plan: dict[int, list[tuple[int, float]]] = {}
    for slot, s in enumerate(times):
        pos = grid.position(s)
        i = min(int(math.floor(pos + 1e-9)), n_steps)
        if i < n_steps:                  # linear in time within the step (the last ends at t1)
            start, end = grid.time(i), min(grid.time(i + 1), t1)
            # a last step shorter than the rounding of t (at a large t0) has no interior
            pos = i + ((s - start) / (end - start) if end > start else 1.0)
            if pos > i + 1 - 1e-9:
                i, pos = i + 1, i + 1.0
        w = 0.0 if i == n_steps else min(max(pos - i, 0.0), 1.0)
        if w < 1e-9:
            w = 0.0
        plan.setdefault(i, []).append((slot, w))
    return times, plan


def solve(f: Any, y0: Mapping[str, torch.Tensor], t0: float, t1: float, *,
          dt: float | None = None, method: str = "euler",
          save_every: int | None = None, save_at: Sequence[float] | torch.Tensor | None = None,
          steady_state: bool = True, atol: float | None = None, rtol: float | None = None,
          divergence_bound: float = 1e6, check_every: int = 10,
          observe: Callable[[State], State] | None = None,
          progress: bool | None = None, adaptive_rtol: float = 1e-7,
          adaptive_atol: float = 1e-9, dt_growth: float = 1.0,
          jacobian_every: int | None = 1, compact: float | None = 0.5,
          compile: bool = False, max_steps: int = 10_000_000) -> Solution:
    """Integrate ``dy/dt = f(t, y)`` from ``y(t0) = y0`` to ``t1``.

    Args:
        f: ``f(t, y) -> dict`` with the same keys and shapes as ``y``, or an object with a
            ``vector_field`` method (and optionally ``leak(y) -> {name: rate}``, the linear decay
            rate that ``exp_euler`` integrates exactly).
        y0: ``{name: tensor [S, ...]}``; all entries share S, dtype and device.
        t0, t1: time span, ``t1 > t0``.
        dt: step for fixed-step methods (required for them); initial step hint otherwise.
        method: ``euler``, ``heun``, ``midpoint``, ``rk4``, ``exp_euler``, the stiff
            ``implicit_euler`` (linearly implicit Euler, A- and L-stable; builds a ``D × D``
            Jacobian per replica, so ``D ≤ 4096``, see :mod:`solvers.implicit`), the
            exponential Rosenbrock–Euler ``exp_rosenbrock`` (exact for affine fields), or one of
            torchdiffeq's adaptive methods (``dopri5`` ...), see :mod:`solvers.adapter`;
            ``affine``: the exact flow of a circuit that declares an affine field
            (``affine = True``: DI, SDI with the linear carry), see :mod:`solvers.affine` (``dt``
            may be omitted: the fastest time scale is used); ``auto``: ``affine`` on the doubling
            grid (``dt_growth = 2``, checked every step) where the circuit declares it, else
            ``exp_euler`` where it declares a leak, else ``euler`` (those need ``dt``). The
            fastest settle to a tolerance without knowing the method names.
        save_every: record every n-th step (t0 and t1 are always recorded). Default: only t0, t1.
        save_at: record at these times instead (linear interpolation between steps).
        steady_state: stop a replica when ``‖dy/dt‖ ≤ atol + rtol‖y‖``. Defaults depend on the
            dtype: ``atol = max(1e-8, 100 ε)``, ``rtol = max(1e-6, 1000 ε)`` with ε the machine
            epsilon (1e-8 / 1e-6 in float64; 1.2e-5 / 1.2e-4 in float32, where rounding alone
            keeps ‖dy/dt‖ above the float64 thresholds).
        divergence_bound: a replica with ``max |y|`` above this is diverged.
        check_every: steps between stopping checks (one host sync each).
        observe: record ``observe(y)`` instead of ``y`` (e.g. a few populations or norms), so
            memory grows with what is saved, not with the state.
        progress: tqdm bar; ``None`` shows it on a terminal only.
        dt_growth: implicit methods and ``affine`` only: step i is ``dt · dt_growthⁱ`` (a geometric grid, so
            a stiff circuit is resolved early and reaches a slow steady state in a number of
            steps logarithmic in the settle time, which is then known to within the last step).
        jacobian_every: implicit methods only: recompute the Jacobian every n steps; ``None``
            builds it once (exact for fields affine in y, the cheapest by far).
        compact: once at most this fraction of the batch still runs (at a check), continue with
            the running replicas only (see above); ``None`` never shrinks the batch. Needs a
            circuit with ``take`` (every :class:`circuits.Circuit`).
        max_steps: the step budget: a span that needs more steps is an error before any work
            (no unbounded loop).
        compile: run each chunk of ``check_every`` steps of a fixed-step tableau as one
            :func:`torch.compile` d function (a CUDA graph on a GPU). Compiling costs ~10 s on a
            CPU and saves ~40 % of a small circuit's step there, so it repays only runs of
            ~10⁵ steps and more (``benchmarks/compile_chunk.py`` measures the break-even); off
            by default. Turns compaction off (a new batch size would compile again).
    """
    vector_field, leak_fn = _vector_field(f)
    layout = Layout(y0)
    _check_y0(f, y0, layout)
    vector_field = _checked_first_output(vector_field, layout)
    y = layout.pack(y0)
    if not bool(torch.isfinite(y).all()):                       # one host sync for all of y0
        name = next(n for n, v in y0.items() if not bool(torch.isfinite(v).all()))
        raise ValueError(f"y0[{name!r}]: received non-finite values, expected finite numbers")
    for name, v in (("t0", t0), ("t1", t1)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name}: received {v!r}, expected a finite number")
    if not t1 > t0:
        raise ValueError(f"t1: received {t1!r}, expected t1 > t0 = {t0!r}")
    eps = torch.finfo(layout.dtype).eps
    atol = max(1e-8, 100 * eps) if atol is None else atol
    rtol = max(1e-6, 1000 * eps) if rtol is None else rtol
    for name, v in (("atol", atol), ("rtol", rtol), ("adaptive_atol", adaptive_atol)):
        _positive(name, v, allow_zero=True)
    _positive("adaptive_rtol", adaptive_rtol)
    _positive("divergence_bound", divergence_bound)
    _positive("check_every", check_every, integer=True)
    t0, t1 = float(t0), float(t1)

    if method in ADAPTIVE:
        from .adapter import solve_adaptive
        return solve_adaptive(vector_field, layout, y0, t0, t1, method=method, dt=dt,
                              save_every=save_every, save_at=save_at, rtol=adaptive_rtol,
                              atol=adaptive_atol, steady_atol=atol, steady_rtol=rtol,
                              steady_state=steady_state, divergence_bound=divergence_bound,
                              observe=observe, owner=getattr(f, "__self__", f))
    owner = getattr(f, "__self__", f)             # the circuit, when given its vector field
    compactable = hasattr(owner, "take") and hasattr(owner, "vector_field")
    if compact is not None:
        if isinstance(compact, bool) or not isinstance(compact, (int, float)) \
                or not 0 < compact < 1:
            raise ValueError(f"compact: received {compact!r}, expected a fraction in (0, 1) "
                             "(shrink the batch once at most this share of it still runs) or "
                             "None (never)")
    S = layout.replicas
    if method == "auto":
        method, auto_growth = auto_method(f, y0)
        if dt_growth == 1.0:
            dt_growth = auto_growth
        if method == AFFINE and check_every == 10:
            check_every = 1                           # few, long steps: check each one
    affine = method == AFFINE
    tableau = None if affine else get_method(method)
    if dt is None and not affine:
        raise ValueError(f"dt: received None, expected a step size > 0 for method {method!r}")
    if dt is not None:
        _positive("dt", dt)
    implicit = affine or getattr(tableau, "implicit", False)
    if isinstance(dt_growth, bool) or not isinstance(dt_growth, (int, float)) \
            or not math.isfinite(dt_growth) or dt_growth < 1 \
            or (dt_growth != 1 and not implicit):
        raise ValueError(f"dt_growth: received {dt_growth!r} with method {method!r}, expected a "
                         "finite number ≥ 1, and 1 unless method is one of "
                         f"{sorted(IMPLICIT) + [AFFINE]} (a growing step breaks explicit methods)")
    if jacobian_every != 1 and not (implicit and not affine) \
            and not (affine and jacobian_every is None):       # the exact flow: one Jacobian
        raise ValueError(f"jacobian_every: received {jacobian_every!r} with method {method!r}, "
                         f"expected 1 (the default) unless method is one of {sorted(IMPLICIT)}")

    stepper: Any = None
    if affine:
        if not is_affine(f):
            raise ValueError(f"method: received {AFFINE!r} for {type(owner).__name__}, which does "
                             "not declare an affine field (affine = True); expected a circuit "
                             "whose dynamics are affine in its state at a fixed input "
                             "(DynamicInversion, SingleLoopDynamicInversion with carry='linear', "
                             "...), or use 'exp_rosenbrock' / an explicit method")
        stepper = AffineFlow(layout, vector_field, t0, y)
        if dt is None:      # the fastest time scale: the settle time is then known to a step
            dt = float(1.0 / stepper.A.abs().sum(-1).amax().clamp_min(1e-300))
    dt = float(dt)
    grid = _Grid(t0, dt, float(dt_growth))
    _positive("max_steps", max_steps, integer=True)
    position = grid.position(t1)
    if position > max_steps:
        raise ValueError(f"t1, dt: received t1 = {t1!r}, dt = {dt!r} (dt_growth {dt_growth!r}), "
                         f"which is {position:.3g} steps, expected at most max_steps = "
                         f"{max_steps} (raise dt, lower t1, use dt_growth with an implicit or "
                         "affine method, or raise max_steps)")
    n_steps = max(1, math.ceil(position - 1e-9))
    times, plan = _save_plan(t0, t1, dt, n_steps, save_every, save_at, grid)
    slot_steps = sorted((j, s) for j, ss in plan.items() for s, _ in ss)
    slot_steps = [j for j, _ in slot_steps]

    def leak_of(lay: Layout, yf: torch.Tensor, leak_fn: Callable | None) -> torch.Tensor | None:
        if tableau is None or not tableau.exponential or leak_fn is None:
            return None
        rates = leak_fn(lay.unpack(yf))
        return lay.pack({n: torch.as_tensor(rates.get(n, 0.0), dtype=lay.dtype,
                                            device=lay.device).expand(lay.replicas, *sh)
                         for n, sh in zip(lay.names, lay.shapes)})

    def make_step(lay: Layout, field: Callable, leak: torch.Tensor | None):
        if stepper is not None:
            return lambda t, y, h: stepper(t, y, h)                   # noqa: E731
        flat_field = (lambda t, v: lay.pack(field(t, lay.unpack(v))))  # noqa: E731
        if tableau.exponential and leak is not None:
            factors: dict[float, torch.Tensor] = {}    # h φ₁(−hλ) per step size, computed once

            def exponential_euler(t: float, y: torch.Tensor, h: float):
                factor = factors.get(h)
                if factor is None:
                    if len(factors) > 3:                 # a shortened last step, a phase
                        factors.clear()
                    factor = factors[h] = h * phi1(-h * leak)
                k1 = flat_field(t, y)
                return torch.addcmul(y, factor, k1), k1
            return exponential_euler
        return lambda t, y, h: rk_step(tableau, flat_field, t, y, h, leak)   # noqa: E731

    if implicit and not affine:
        stepper = ImplicitEulerStep(layout, vector_field, method, jacobian_every)
    step = make_step(layout, vector_field, leak_of(layout, y, leak_fn))

    full_layout = layout
    record: Callable[[torch.Tensor], torch.Tensor]
    if observe is None:
        rec_layout, record = layout, (lambda y: y)
    else:
        rec_layout = Layout(observe(dict(y0)))

        def record(y: torch.Tensor) -> torch.Tensor:
            return rec_layout.pack(observe(full_layout.unpack(y)))

    # The running batch: ``index`` maps it to the caller's replicas once it has been compacted
    # (None before); ``y_full`` then holds the final states of the replicas that left it.
    index: torch.Tensor | None = None
    y_full = status_full = t_stop_full = None

    def to_full(yc: torch.Tensor) -> torch.Tensor:
        if index is None:
            return yc
        return full_layout.scatter(y_full, index, layout.unpack(yc))

    def at(i: int, w: float, y_i: torch.Tensor, y_next: torch.Tensor) -> torch.Tensor:
        if w == 0.0:
            return y_i
        if affine:                      # exact between grid times
            return stepper.advance(y_i, w * (min(grid.time(i + 1), t1) - grid.time(i)))
        return torch.lerp(y_i, y_next, w)

    buffer = torch.empty(len(times), rec_layout.numel, dtype=layout.dtype, device=layout.device)
    y_good = y                       # the state at the last check (steps make new tensors)
    active = torch.ones(S, dtype=torch.bool, device=layout.device)
    active_entries = None            # None while every replica runs: no per-step masking
    status = torch.full((S,), int(Status.REACHED_T1), dtype=torch.int8, device=layout.device)
    t_stop = torch.full((S,), t1, dtype=layout.dtype, device=layout.device)
    first_unchecked_slot = 0
    evaluations = replica_steps = compactions = 0
    start = time.perf_counter()
    bar = (tqdm(total=n_steps, disable=(None if progress is None else not progress),
                unit="step", leave=False, desc=f"solve[{method}]")
           if progress is not False else None)
    i = 0
    k1 = y_prev = y
    compiled = None
    all_running = torch.ones_like(y, dtype=torch.bool) if compile else None
    if compile:
        if tableau is None or getattr(tableau, "implicit", False) or grid.g != 1.0:
            raise ValueError(f"compile: received True with method {method!r}, expected a "
                             f"fixed-step tableau ({sorted(METHODS)}) on a uniform grid")
        compact = None                  # a new batch size would compile the chunk again
        compiled = _compiled_chunk(step, check_every, layout.device)
    saved_steps = set(plan)
    while i < n_steps:
        chunk_end = min(i + check_every, n_steps)
        if compiled is not None and chunk_end - i == check_every \
                and (chunk_end < n_steps or t1 - grid.time(n_steps - 1) > dt * (1 - 1e-9)) \
                and not saved_steps.intersection(range(i, chunk_end)):
            mask = active_entries if active_entries is not None else all_running
            y, k1, y_prev = compiled(y, t0 + i * dt, dt, mask)
            evaluations += tableau.stages * check_every
            replica_steps += layout.replicas * check_every
            i = chunk_end
        while i < chunk_end:
            if grid.g == 1.0:
                t = t0 + i * dt
                h = dt if i < n_steps - 1 or t1 - t > dt * (1 - 1e-9) else t1 - t
            else:
                t, h = grid.time(i), grid.time(i + 1) - grid.time(i)
                h = h if i < n_steps - 1 or t1 - t > h * (1 - 1e-9) else t1 - t
            y_new, k1 = step(t, y, h)
            evaluations += tableau.stages if tableau is not None else 1
            replica_steps += layout.replicas
            if active_entries is not None:
                y_new = torch.where(active_entries, y_new, y)
            saves = plan.get(i)
            if saves:
                for slot, w in saves:
                    buffer[slot] = record(to_full(at(i, w, y, y_new)))
            y_prev, y = y, y_new
            i += 1
        # -- per-replica stopping, once per chunk ------------------------------------------
        t = min(grid.time(i), t1)
        # max |y| > bound (or non-finite): screened by the 2-norm, which bounds max |y| and is
        # ~5× cheaper per replica; the exact max only where a norm passes the bound
        norm_y = layout.replica_norm(y)
        bad = ~(norm_y <= divergence_bound)                         # NaN compares False
        if steady_state:
            rate = layout.replica_norm(k1)
            # the rate k1 is f at the step's start (y_prev), for the exact flow at its end (y)
            size = norm_y if affine else layout.replica_norm(y_prev)
            settled = rate <= atol + rtol * size
        for exact in (False, True):
            newly_diverged = active & bad
            stopped = newly_diverged
            status_c, t_stop_c = status, t_stop
            if steady_state:
                newly_converged = active & ~bad & settled
                status_c = torch.where(newly_converged, int(Status.CONVERGED),
                                       status_c).to(torch.int8)
                stopped = stopped | newly_converged
            status_c = torch.where(newly_diverged, int(Status.DIVERGED), status_c).to(torch.int8)
            t_stop_c = torch.where(stopped, torch.as_tensor(t, dtype=layout.dtype), t_stop_c)
            n_active, any_stopped, any_diverged = torch.stack(
                [(active & ~stopped).sum(), stopped.any(), newly_diverged.any()]).tolist()
            if exact or not any_diverged:
                break
            bad = ~(layout.replica_absmax(y) <= divergence_bound)  # a norm passed: exactly
        status, t_stop = status_c, t_stop_c
        active = active & ~stopped
        last_slot = bisect.bisect_left(slot_steps, i) - 1   # slots recorded so far
        if any_diverged:
            # Roll diverged replicas back to their last checked state, in y and in the record.
            back = layout.spread(newly_diverged)
            y = torch.where(back, y_good, y)
            if last_slot >= first_unchecked_slot:
                rows = slice(first_unchecked_slot, last_slot + 1)
                gone = newly_diverged if index is None else torch.zeros(
                    S, dtype=torch.bool, device=layout.device).index_fill(
                    0, index[newly_diverged], True)
                rec_back = (full_layout if observe is None else rec_layout).spread(gone)
                buffer[rows] = torch.where(rec_back, record(to_full(y_good)), buffer[rows])
        if any_stopped:
            active_entries = layout.spread(active)
        first_unchecked_slot = last_slot + 1
        y_good = y
        if bar is not None:
            bar.update(chunk_end - bar.n)
        if not n_active:
            break
        if compact is not None and compactable and n_active <= compact * layout.replicas \
                and i < n_steps:
            # -- shrink the batch to the running replicas (their parameters, drives and
            #    weights with them: circuit.take), scattering the stopped ones out ------------
            keep = torch.nonzero(active).flatten()
            if index is None:
                index = torch.arange(S, device=layout.device)
                y_full, status_full, t_stop_full = y, status.clone(), t_stop.clone()
            y_full = full_layout.scatter(y_full, index, layout.unpack(y))
            status_full[index] = status
            t_stop_full[index] = t_stop
            index = index[keep]
            owner = owner.take(keep)
            vector_field, leak_fn = _vector_field(owner)
            new_layout = layout.subset(keep.numel())
            y = new_layout.pack({n: v[keep] for n, v in layout.unpack(y).items()})
            y_good = y
            if affine:
                stepper = stepper.take(keep, new_layout, vector_field)
            elif stepper is not None:
                old = stepper
                stepper = ImplicitEulerStep(new_layout, vector_field, method, jacobian_every)
                stepper.J = None if old.J is None else old.J[keep]
                stepper.steps, stepper.jacobians = old.steps, old.jacobians
            layout = new_layout
            step = make_step(layout, vector_field, leak_of(layout, y, leak_fn))
            status, t_stop = status[keep], t_stop[keep]
            active = torch.ones(keep.numel(), dtype=torch.bool, device=layout.device)
            active_entries = None
            compactions += 1
    if bar is not None:
        bar.close()
    if index is not None:                                 # scatter the last batch back
        y = full_layout.scatter(y_full, index, layout.unpack(y))
        status_full[index] = status
        t_stop_full[index] = t_stop
        status, t_stop, layout = status_full, t_stop_full, full_layout
    # Slots after an early exit hold the frozen state; the slot at n_steps holds y(t1).
    if first_unchecked_slot < len(times):
        buffer[first_unchecked_slot:] = record(y)
    seconds = time.perf_counter() - start
    return Solution(
        ts=torch.tensor(times, dtype=layout.dtype, device=layout.device),
        ys=rec_layout.unpack(buffer), y1=dict(layout.unpack(y)),
        status=status.long(), t_stop=t_stop,
        stats={"steps": i, "evaluations": evaluations, "seconds": seconds, "method": method,
               "dt": dt, "dt_growth": grid.g, "replicas": S, "replica_steps": replica_steps,
               "compactions": compactions})
