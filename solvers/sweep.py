"""Parameter sweeps as the replica axis: a grid of circuit parameters is S replicas of one solve.

* :class:`Grid`: ordered, named axes of values (``k_i``, ``k_p``, ``alpha``, time constants,
  ``seed``, ``weight_scale`` ...). Its cartesian product, flattened in C order (the last axis
  varies fastest), is the replica axis; :meth:`Grid.points` gives the per-replica values of a
  slice of it (what a circuit builder receives), :meth:`Grid.reshape` turns a flat per-replica
  array back into the grid's shape.
* :class:`LabelledArray`: numpy data with named dims and coordinates (the parameter values);
  ``save`` / ``load`` as ``.npz`` (no dependency beyond numpy). :class:`SweepResult` holds the
  arrays of one sweep (status, stop time, error to the closed form, predicted stability ...),
  saves them to one netCDF file (``.nc``, readable by ``xarray.open_dataset`` without this
  project) or the older ``.npz``, and converts to an ``xarray.Dataset``
  (:meth:`SweepResult.to_xarray`, :mod:`solvers.labelled`).
* :func:`sweep`: build one circuit whose replicas are grid points, ``solve`` it once per chunk,
  collect per-replica results. Chunks are sized automatically from an estimate of the bytes one
  replica needs (state, solver work buffers, recording, and the Jacobian when stability is
  predicted), so a grid larger than memory is split. Chunking does not change any replica's
  result: replicas never interact in ``solve``. With ``executor=`` (a process pool, a Dask
  client, submitit ...) the grid is split into shards computed elsewhere, written as they
  finish and resumed on a rerun (:mod:`solvers.shards`), merged to the same result bit for bit.
* :func:`predict_stability`: the linear-stability prediction per replica (spectral abscissa of
  the Jacobian < 0, and the stepping method's amplification matrix at the solve's ``dt`` having
  spectral radius < 1), compared point by point with the simulated status by
  :meth:`SweepResult.agreement`. By default it is :func:`linearised_stability`, which needs
  nothing of the circuit but its vector field (and ``leak`` for exponential Euler); a circuit
  package's own analysis (e.g. ``circuits.analyse_circuit``) can be passed as ``oracle``.

Diverged replicas. ``solve`` rolls a diverged replica back to its last checked (finite) state
and freezes it, so every stored value of a diverged replica is computed from that last finite
state: finite, but meaningless as a result. It is always flagged by ``status`` (code
``Status.DIVERGED``); mask by status before reading errors. ``settle_time`` is the only array
holding NaN by design: it is NaN exactly where ``status`` is not converged. A measure that is
non-finite anyway (e.g. a closed form that does not exist at that grid point) is stored as NaN and
counted in ``attrs["nonfinite"]``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .implicit import replica_jacobian
from .affine import AFFINE
from .methods import ADAPTIVE, get_method, rk_step
from .solve import Solution, Status, auto_method, solve
from .state import Layout, State

# name -> (kind, lower bound, bound inclusive): the parameters a grid axis may be named after.
PARAMETERS: dict[str, tuple[str, float, bool]] = {
    "k_i": ("float", 0.0, True),
    "k_p": ("float", 0.0, True),
    "alpha": ("float", 0.0, True),
    "tau_u": ("float", 0.0, False),
    "tau_delta": ("float", 0.0, False),
    "tau_v": ("float", 0.0, False),
    "tau_x": ("float", 0.0, False),
    "nudge": ("float", 0.0, False),
    "feedback_scale": ("float", 0.0, False),
    "seed": ("int", 0.0, True),
    "feedback_seed": ("int", 0.0, True),
    "weight_scale": ("float", 0.0, False),
}

STATUS_NAMES = [s.name.lower() for s in Status]          # index = status code
PREDICTED_NAMES = ("converged", "diverged")


# -- the grid ---------------------------------------------------------------------------------

def _axis_values(name: str, values: Any, kind: str, low: float, inclusive: bool) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ValueError(f"grid axis {name!r}: received {values!r}, expected a non-empty "
                         "sequence of numbers")
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"grid axis {name!r}: received an array of shape {arr.shape}, expected "
                         "a 1-D sequence of numbers")
    if arr.size == 0:
        raise ValueError(f"grid axis {name!r}: received an empty sequence, expected at least one "
                         "value")
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"grid axis {name!r}: received {v!r} at index {i}, expected a "
                             f"{'integer' if kind == 'int' else 'number'}")
        if not math.isfinite(v):
            raise ValueError(f"grid axis {name!r}: received {v!r} at index {i}, expected finite "
                             "numbers")
        if kind == "int" and v != int(v):
            raise ValueError(f"grid axis {name!r}: received {v!r} at index {i}, expected an "
                             "integer")
        if v < low or (not inclusive and v == low):
            raise ValueError(f"grid axis {name!r}: received {v!r} at index {i}, expected values "
                             f"{'≥' if inclusive else '>'} {low:g}")
    if kind == "int":
        return arr.astype(np.int64)
    return arr.astype(np.float64)


class Grid:
    """Ordered named axes; their cartesian product (C order) is the replica axis.

    Args:
        axes: ``{name: values}`` in axis order; values a non-empty 1-D sequence of finite
            numbers (integers for ``seed``-like axes).
        parameters: the names an axis may take and their constraints, ``{name: (kind, low,
            inclusive)}`` with kind ``"float"`` or ``"int"`` (default :data:`PARAMETERS`). Pass
            your own to sweep other arguments of a builder.
    """

    def __init__(self, axes: Mapping[str, Any],
                 parameters: Mapping[str, tuple[str, float, bool]] | None = None):
        parameters = PARAMETERS if parameters is None else parameters
        if not isinstance(axes, Mapping) or not axes:
            raise ValueError(f"grid: received {axes!r}, expected a non-empty mapping of "
                             f"parameter names to values; valid names: {sorted(parameters)}")
        self.coords: dict[str, np.ndarray] = {}
        for name, values in axes.items():
            if name not in parameters:
                raise ValueError(f"grid axis {name!r}: unknown parameter name; expected one of "
                                 f"{sorted(parameters)}")
            self.coords[name] = _axis_values(name, values, *parameters[name])
        self.dims: tuple[str, ...] = tuple(self.coords)
        self.shape: tuple[int, ...] = tuple(len(v) for v in self.coords.values())
        self.size = math.prod(self.shape)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return "Grid(" + ", ".join(f"{d}[{n}]" for d, n in zip(self.dims, self.shape)) + ")"

    def column(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Per-replica values of axis ``name`` for flat indices ``start:stop``."""
        stop = self.size if stop is None else stop
        index = np.unravel_index(np.arange(start, stop), self.shape)
        return self.coords[name][index[self.dims.index(name)]]

    def points(self, start: int = 0, stop: int | None = None) -> dict[str, torch.Tensor]:
        """``{name: tensor [stop - start]}``: the parameters of replicas ``start:stop``
        (float64 for float axes, int64 for integer axes)."""
        return {name: torch.as_tensor(self.column(name, start, stop)) for name in self.dims}

    def point(self, i: int) -> dict[str, float | int]:
        """The parameters of flat index ``i`` as Python numbers."""
        return {name: v[0].item() for name, v in self.points(i, i + 1).items()}

    def reshape(self, flat: Any) -> np.ndarray:
        """``[size, ...]`` → ``[*shape, ...]``."""
        arr = np.asarray(flat)
        if arr.shape[:1] != (self.size,):
            raise ValueError(f"flat: received shape {arr.shape}, expected a leading axis of "
                             f"size {self.size} (the grid's points)")
        return arr.reshape(*self.shape, *arr.shape[1:])

    def flatten(self, array: Any) -> np.ndarray:
        """``[*shape, ...]`` → ``[size, ...]`` (the inverse of :meth:`reshape`)."""
        arr = np.asarray(array)
        if arr.shape[:len(self.shape)] != self.shape:
            raise ValueError(f"array: received shape {arr.shape}, expected leading axes "
                             f"{self.shape} (the grid's shape)")
        return arr.reshape(self.size, *arr.shape[len(self.shape):])


# -- labelled arrays --------------------------------------------------------------------------

@dataclass
class LabelledArray:
    """Numpy data with named dims and coordinates (a small, dependency-free xarray).

    ``coords[d]`` (1-D, length ``data.shape[i]``) labels dim ``d``; dims without coordinates
    are allowed. ``attrs`` must be JSON-serialisable.
    """

    data: np.ndarray
    dims: tuple[str, ...]
    coords: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.data = np.asarray(self.data)
        self.dims = tuple(self.dims)
        if len(self.dims) != self.data.ndim:
            raise ValueError(f"dims: received {self.dims}, expected {self.data.ndim} names "
                             f"(data has shape {self.data.shape})")
        for d, c in self.coords.items():
            if d not in self.dims:
                raise ValueError(f"coords: received {d!r}, expected one of the dims {self.dims}")
            c = np.asarray(c)
            if c.shape != (self.data.shape[self.dims.index(d)],):
                raise ValueError(f"coords[{d!r}]: received shape {c.shape}, expected "
                                 f"({self.data.shape[self.dims.index(d)]},)")
            self.coords[d] = c

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def sel(self, **where: Any) -> "LabelledArray":
        """Index by coordinate value (exact match, or nearest for float coordinates)."""
        index: list[Any] = [slice(None)] * self.data.ndim
        dims, coords = list(self.dims), dict(self.coords)
        for d, value in where.items():
            if d not in self.coords:
                raise ValueError(f"sel: received dim {d!r}, expected one with coordinates "
                                 f"{list(self.coords)}")
            i = int(np.argmin(np.abs(self.coords[d].astype(np.float64) - float(value))))
            index[self.dims.index(d)] = i
            dims.remove(d)
            coords.pop(d)
        return LabelledArray(self.data[tuple(index)], tuple(dims), coords, self.name,
                             dict(self.attrs))

    def equals(self, other: "LabelledArray") -> bool:
        """Same dims, coordinates and data, bit for bit (NaN equal to NaN)."""
        return (self.dims == other.dims and self.data.dtype == other.data.dtype
                and set(self.coords) == set(other.coords)
                and all(np.array_equal(self.coords[d], other.coords[d]) for d in self.coords)
                and np.array_equal(self.data, other.data,
                                   equal_nan=self.data.dtype.kind in "fc"))

    def _entries(self, prefix: str = "") -> dict[str, np.ndarray]:
        meta = {"dims": list(self.dims), "name": self.name, "attrs": self.attrs,
                "coords": list(self.coords)}
        out = {f"{prefix}data": self.data, f"{prefix}meta": np.array(json.dumps(meta))}
        out.update({f"{prefix}coord.{d}": c for d, c in self.coords.items()})
        return out

    @classmethod
    def _from_entries(cls, files: Mapping[str, np.ndarray], prefix: str = "") -> "LabelledArray":
        meta = json.loads(str(files[f"{prefix}meta"]))
        coords = {d: np.asarray(files[f"{prefix}coord.{d}"]) for d in meta["coords"]}
        return cls(np.asarray(files[f"{prefix}data"]), tuple(meta["dims"]), coords,
                   meta["name"], meta["attrs"])

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (``.npz``; data, coordinates and metadata, no pickle)."""
        path = Path(path)
        with path.open("wb") as fh:
            np.savez(fh, **self._entries())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LabelledArray":
        with np.load(Path(path), allow_pickle=False) as files:
            return cls._from_entries(files)


@dataclass
class SweepResult:
    """The labelled arrays of one sweep, all with the grid's dims and coordinates.

    Always present: ``status`` (int8 codes of :class:`solvers.Status`; names in
    ``attrs["status_names"]``), ``t_stop`` (time each replica stopped; ``t1`` if it never did),
    ``settle_time`` (``t_stop`` where converged, NaN elsewhere). With a closed form: ``error``
    (relative error of the final state to it). With a prediction: ``predicted_status`` (codes
    of :class:`Status`: CONVERGED or DIVERGED), ``spectral_abscissa``, ``spectral_radius``
    (of the method's amplification matrix; absent for adaptive methods),
    ``continuous_stable``, ``step_stable``. Plus one array per custom measure.
    """

    arrays: dict[str, LabelledArray]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> LabelledArray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    @property
    def dims(self) -> tuple[str, ...]:
        return self.arrays["status"].dims

    @property
    def coords(self) -> dict[str, np.ndarray]:
        return self.arrays["status"].coords

    def counts(self) -> dict[str, int]:
        status = self.arrays["status"].data
        return {name: int((status == code).sum()) for code, name in enumerate(STATUS_NAMES)}

    def agreement(self, error_tolerance: float | None = None) -> dict[str, Any]:
        """Predicted vs simulated status, point by point.

        Strict (``error_tolerance=None``): a point agrees when predicted converged and simulated
        converged, or predicted diverged and simulated diverged. Every other point is a
        disagreement of one kind: ``stable_truncated`` (predicted stable, still running at t1:
        a mode slower than the horizon, typically right at the boundary),
        ``unstable_truncated`` (predicted unstable, not past ``divergence_bound`` by t1: growth
        too slow, or bounded by a nonlinearity), ``stable_diverged`` and
        ``unstable_converged`` (the linearisation is wrong about it).

        With ``error_tolerance`` (for nonlinear circuits, which can have other fixed points or
        limit cycles): the prediction is about the fixed point it linearised at, so the
        simulated outcome compared with it is "settled on that fixed point" (converged with
        ``error ≤ error_tolerance``) or "left it" (diverged, or converged / truncated with
        ``error > error_tolerance``: another fixed point, a bounded oscillation). Predicted
        stable agrees with the first, predicted unstable with the second; a truncated point
        still within the tolerance is undecided and counts as a disagreement. The kinds above
        are then counted only over disagreeing points, plus ``stable_left`` (predicted stable,
        converged elsewhere). ``status_agreement`` (the strict fraction) is always reported.

        Predicted-unstable points are split by cause: ``continuous`` (spectral abscissa ≥ 0)
        or ``step`` (continuous-time stable, but the method's dt is not).
        """
        if "predicted_status" not in self.arrays:
            raise ValueError("agreement: this sweep has no prediction; run sweep(..., "
                             "predict='initial' or 'steady_state')")
        if error_tolerance is not None and "error" not in self.arrays:
            raise ValueError("error_tolerance: received a tolerance, expected a sweep with an "
                             "'error' array (run sweep with error='closed_form')")
        sim = self.arrays["status"].data
        pred = self.arrays["predicted_status"].data
        conv, div, trunc = int(Status.CONVERGED), int(Status.DIVERGED), int(Status.REACHED_T1)
        p_conv, p_div = pred == conv, pred == div
        strict = (p_conv & (sim == conv)) | (p_div & (sim == div))
        if error_tolerance is None:
            agree = strict
            kinds = {"stable_truncated": p_conv & (sim == trunc),
                     "unstable_truncated": p_div & (sim == trunc),
                     "stable_diverged": p_conv & (sim == div),
                     "unstable_converged": p_div & (sim == conv)}
        else:
            err = self.arrays["error"].data
            near = np.isfinite(err) & (err <= error_tolerance)
            settled = (sim == conv) & near
            left = (sim == div) | ((sim != div) & ~near)
            agree = (p_conv & settled) | (p_div & left)
            kinds = {"stable_truncated": p_conv & (sim == trunc),
                     "unstable_truncated": p_div & (sim == trunc) & near,
                     "stable_diverged": p_conv & (sim == div),
                     "stable_left": p_conv & (sim == conv) & ~near,
                     "unstable_converged": p_div & settled}
        cause = {}
        if "continuous_stable" in self.arrays:
            cont = self.arrays["continuous_stable"].data.astype(bool)
            cause = {"continuous": ~cont, "step": cont}
        out: dict[str, Any] = {
            "stability_agreement": float(agree.mean()),
            "status_agreement": float(strict.mean()),
            "error_tolerance": error_tolerance,
            "grid_points": int(agree.size),
            "agree": int(agree.sum()),
            "predicted": {"converged": int(p_conv.sum()), "diverged": int(p_div.sum())},
            "predicted_unstable_by_cause": {k: int((p_div & m).sum())
                                            for k, m in cause.items()},
            "disagreements": {},
        }
        if error_tolerance is not None:
            out["left_fixed_point_without_diverging"] = {
                "converged_elsewhere": int(((sim == conv) & ~near).sum()),
                "truncated_away": int(((sim == trunc) & ~near).sum())}
        for kind, mask in kinds.items():
            entry: dict[str, Any] = {"count": int(mask.sum())}
            if kind.startswith("unstable") and cause:
                entry["by_cause"] = {k: int((mask & m).sum()) for k, m in cause.items()}
            if "spectral_abscissa" in self.arrays and mask.any():
                a = self.arrays["spectral_abscissa"].data[mask]
                entry["spectral_abscissa_range"] = [float(a.min()), float(a.max())]
            if "spectral_radius" in self.arrays and mask.any():
                r = self.arrays["spectral_radius"].data[mask]
                entry["spectral_radius_range"] = [float(r.min()), float(r.max())]
            out["disagreements"][kind] = entry
        return out

    def to_xarray(self) -> Any:
        """This sweep as an ``xarray.Dataset``: one data variable per array, the grid axes as
        coordinates, status codes explained in attrs, ``attrs`` as dataset attrs
        (:func:`solvers.labelled.sweep_to_xarray`; needs xarray)."""
        from .labelled import sweep_to_xarray
        return sweep_to_xarray(self)

    def save(self, path: str | Path) -> Path:
        """All arrays and attrs in one file: netCDF for a ``.nc`` path (opens with
        ``xarray.open_dataset`` anywhere; :func:`solvers.labelled.save_netcdf`), else the
        older ``.npz`` (numpy only)."""
        path = Path(path)
        if path.suffix == ".nc":
            from .labelled import save_netcdf
            return save_netcdf(self, path)
        entries: dict[str, np.ndarray] = {
            "__sweep__": np.array(json.dumps({"arrays": list(self.arrays), "attrs": self.attrs}))}
        for name, arr in self.arrays.items():
            entries.update(arr._entries(f"{name}/"))
        with path.open("wb") as fh:
            np.savez(fh, **entries)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SweepResult":
        """Read what :meth:`save` wrote: ``.nc`` (netCDF) or ``.npz`` (the older format, still
        read, with a :class:`solvers.labelled.LegacyFormatWarning`)."""
        path = Path(path)
        if path.suffix == ".nc":
            from .labelled import load_netcdf
            return load_netcdf(path)
        from .labelled import warn_legacy
        warn_legacy(path)
        with np.load(path, allow_pickle=False) as files:
            head = json.loads(str(files["__sweep__"]))
            arrays = {name: LabelledArray._from_entries(files, f"{name}/")
                      for name in head["arrays"]}
        return cls(arrays, head["attrs"])

    def equals(self, other: "SweepResult", ignore: Sequence[str] = ()) -> bool:
        """Same arrays, bit for bit (arrays named in ``ignore`` are skipped)."""
        names = [n for n in self.arrays if n not in ignore]
        return (set(names) == {n for n in other.arrays if n not in ignore}
                and all(self.arrays[n].equals(other.arrays[n]) for n in names))


# -- error to the closed form and stability prediction ----------------------------------------

def closed_form_error(circuit: Any, y: State) -> torch.Tensor:
    """Per-replica ``‖y − y*‖ / ‖y* − y0‖`` over the state keys the closed form
    ``circuit.steady_state()`` provides, ``y0 = circuit.initial_state()`` (so a circuit that
    starts at its feed-forward pass, like DFC, is measured on the displacement it made)."""
    star = circuit.steady_state()
    y0 = circuit.initial_state()
    keys = [k for k in y0 if k in star]
    if not keys:
        raise ValueError("closed_form_error: the circuit's steady_state() shares no key with its "
                         f"state {list(y0)}")
    S = y[keys[0]].shape[0]
    diff = torch.cat([(y[k] - star[k]).reshape(S, -1) for k in keys], dim=1)
    ref = torch.cat([(star[k] - y0[k]).reshape(S, -1) for k in keys], dim=1)
    return diff.norm(dim=1) / ref.norm(dim=1).clamp_min(torch.finfo(ref.dtype).tiny)


@dataclass
class LinearStability:
    """``[S]`` per replica: spectral_abscissa (max Re λ of ∂f/∂y), stable (< 0); with a
    fixed-step method: spectral_radius of its one-step amplification matrix, step_stable
    (< 1). Any object with these four attributes can serve as a sweep's stability oracle."""

    spectral_abscissa: torch.Tensor
    stable: torch.Tensor
    spectral_radius: torch.Tensor | None = None
    step_stable: torch.Tensor | None = None


#: ``oracle(circuit, y, method, dt)``: the linear stability of ``circuit`` at state ``y`` under
#: ``method`` at step ``dt`` (both None: continuous time only), as a :class:`LinearStability`.
StabilityOracle = Callable[[Any, State, str | None, float | None], Any]


def method_amplification(J: torch.Tensor, method: str, dt: float,
                         leak: torch.Tensor | None = None) -> torch.Tensor:
    """One-step matrix ``A [S, D, D]`` with ``y_{n+1} = A y_n`` for ``dy/dt = J y``: one step
    of the method itself on the linear field ``Y ↦ J Y`` from ``Y = I`` (``leak`` ``[S, D]``:
    the decay rate exponential Euler treats exactly)."""
    eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device).expand_as(J)
    return rk_step(get_method(method), lambda t, Y: J @ Y, 0.0, eye, dt,
                   None if leak is None else leak[..., None])[0]


def linearised_stability(circuit: Any, y: State, method: str | None = None,
                         dt: float | None = None, tol: float = 1e-10) -> LinearStability:
    """Linear stability of ``circuit.vector_field`` at ``y`` per replica: the Jacobian
    ``[S, D, D]`` (:func:`solvers.implicit.replica_jacobian`) and, with a fixed-step ``method``,
    its amplification matrix at ``dt`` (exponential Euler takes ``circuit.leak(y)``)."""
    if method is not None and dt is None:
        raise ValueError(f"dt: received None, expected a step size with method {method!r}")
    layout = Layout(y)
    field = lambda flat: layout.pack_by_replica(
        circuit.vector_field(0.0, layout.unpack_by_replica(flat)))
    J = replica_jacobian(field, layout.pack_by_replica(y))
    abscissa = torch.linalg.eigvals(J).real.amax(dim=-1)
    report = LinearStability(abscissa, abscissa < -tol)
    if method is not None:
        leak = None
        if get_method(method).exponential:
            rates = circuit.leak(y)
            leak = layout.pack_by_replica({n: torch.as_tensor(
                rates.get(n, 0.0), dtype=layout.dtype, device=layout.device).expand_as(y[n])
                for n in layout.names})
        A = method_amplification(J, method, dt, leak)
        report.spectral_radius = torch.linalg.eigvals(A).abs().amax(dim=-1)
        report.step_stable = report.spectral_radius < 1 - tol
    return report


def predict_stability(circuit: Any, method: str, dt: float | None, at: str = "initial", *,
                      oracle: StabilityOracle | None = None) -> dict[str, torch.Tensor]:
    """Linear stability per replica, linearised at the initial state (``at="initial"``: exact
    for linear circuits such as DI) or at the closed-form steady state (``"steady_state"``;
    state keys it lacks are taken from the initial state), by ``oracle`` (default
    :func:`linearised_stability`; see :data:`StabilityOracle`).

    Returns ``[S]`` tensors: ``spectral_abscissa`` (max Re λ of the Jacobian),
    ``continuous_stable`` (< 0), and for fixed-step methods ``spectral_radius`` of the one-step
    amplification matrix at ``dt`` and ``step_stable`` (< 1); ``predicted_status`` is
    ``Status.CONVERGED`` where both hold, ``Status.DIVERGED`` elsewhere."""
    if at not in ("initial", "steady_state"):
        raise ValueError(f"predict: received {at!r}, expected 'initial' or 'steady_state'")
    oracle = linearised_stability if oracle is None else oracle
    if not callable(oracle):
        raise ValueError(f"oracle: received {type(oracle).__name__}, expected a callable "
                         "(circuit, y, method, dt) -> report, or None")
    y = circuit.initial_state()
    if at == "steady_state":
        star = circuit.steady_state()
        y = {k: star[k].to(v.dtype) if k in star else v for k, v in y.items()}
    if method == "auto":
        method = auto_method(circuit, y)[0]
    # adaptive methods and the exact affine flow have no step-size limit of their own
    fixed = method not in ADAPTIVE and method != AFFINE
    report = oracle(circuit, y, method if fixed else None, dt if fixed else None)
    out = {"spectral_abscissa": report.spectral_abscissa, "continuous_stable": report.stable}
    converges = report.stable
    if report.spectral_radius is not None:
        out["spectral_radius"] = report.spectral_radius
        out["step_stable"] = report.step_stable
        converges = converges & report.step_stable
    out["predicted_status"] = torch.where(converges, int(Status.CONVERGED),
                                          int(Status.DIVERGED))
    return out


# -- the sweep --------------------------------------------------------------------------------

def _saved_points(kwargs: Mapping[str, Any]) -> int:
    if kwargs.get("save_at") is not None:
        try:
            return len(kwargs["save_at"]) + 1
        except TypeError:           # not a sequence: solve names it before any work
            return 2
    every = kwargs.get("save_every")
    if every is None or kwargs.get("method", "euler") in ADAPTIVE + (AFFINE, "auto") \
            or kwargs.get("dt_growth", 1.0) != 1.0:
        return 2 if every is None else 1000
    try:
        steps = math.ceil((kwargs["t1"] - kwargs.get("t0", 0.0)) / kwargs["dt"])
        return max(2, steps // every + 2)
    except (ArithmeticError, TypeError, ValueError, KeyError):
        # invalid t0/t1/dt/save_every (zero, NaN, inf, missing, not numbers): only an
        # estimate here; solve refuses them with an error naming the argument before any work
        return 2


def bytes_per_replica(y0: State, solve_kwargs: Mapping[str, Any],
                      predict: str | None = None) -> int:
    """Estimated peak bytes one replica costs in :func:`sweep`: the state and the solver's
    work buffers (``12 + 4 × stages`` state-sized tensors), the recording (saved points ×
    recorded size), and with a prediction the Jacobian's ``D`` tangents and the eigenvalue
    work (``~12 D²`` complex-sized numbers)."""
    layout = Layout(y0)
    D, item = layout.size, layout.dtype.itemsize
    method = solve_kwargs.get("method", "euler")
    if method in (AFFINE, "auto"):        # the per-replica generator and its propagator
        stages = 1 + 3 * (D + 1) ** 2 // (4 * D)
    else:
        stages = 7 if method in ADAPTIVE else get_method(method).stages
    recorded = D
    if solve_kwargs.get("observe") is not None:
        recorded = Layout(solve_kwargs["observe"](dict(y0))).size
    total = item * (D * (12 + 4 * stages) + recorded * _saved_points(solve_kwargs))
    if predict is not None:
        total += 12 * D * D * 2 * item
    return int(total)


def _checked_options(grid: Any, solve_kwargs: Any, error: Any, measures: Any, predict: Any,
                     oracle: Any, chunk: Any, max_bytes: Any
                     ) -> tuple[Callable | None, dict[str, Callable]]:
    """Validate :func:`sweep`'s arguments before any work; returns the error function (or
    None) and the measures as a dict."""
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: received {type(grid).__name__}, expected a solvers.sweep.Grid")
    if not isinstance(solve_kwargs, Mapping):
        raise ValueError(f"solve_kwargs: received {type(solve_kwargs).__name__}, expected a "
                         "mapping of solvers.solve keyword arguments")
    for key in ("f", "y0"):
        if key in solve_kwargs:
            raise ValueError(f"solve_kwargs: received {key!r}, expected it to be left out "
                             "(sweep supplies the circuit and its initial state)")
    for key in ("t0", "t1"):
        if key not in solve_kwargs:
            raise ValueError(f"solve_kwargs: missing {key!r}, expected the time span t0, t1")
    if predict is not None and predict not in ("initial", "steady_state"):
        raise ValueError(f"predict: received {predict!r}, expected None, 'initial' or "
                         "'steady_state'")
    if oracle is not None and not callable(oracle):
        raise ValueError(f"oracle: received {type(oracle).__name__}, expected a callable "
                         "(circuit, y, method, dt) -> report, or None")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes: received {max_bytes!r}, expected an integer > 0")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)
                              or chunk < 1):
        raise ValueError(f"chunk: received {chunk!r}, expected an integer ≥ 1 or None")
    error_fn = closed_form_error if error == "closed_form" else error
    if error_fn is not None and not callable(error_fn):
        raise ValueError(f"error: received {error!r}, expected 'closed_form', None or a callable")
    return error_fn, dict(measures or {})


def sweep_range(build: Callable[[dict[str, torch.Tensor]], Any], grid: Grid, start: int,
                stop: int, solve_kwargs: Mapping[str, Any], *,
                error: Callable[[Any, State], torch.Tensor] | None = closed_form_error,
                measures: Mapping[str, Callable[[Any, Solution], torch.Tensor]] | None = None,
                predict: str | None = None, oracle: StabilityOracle | None = None,
                chunk: int | None = None, max_bytes: int = 1 << 30,
                progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The work of :func:`sweep` on the grid's flat indices ``start:stop`` (arguments already
    checked; ``error`` a callable or None): one ``solve`` per chunk of that range.

    Returns ``(flat, info)``: ``flat`` maps each array name (``status``, ``t_stop``, ``error``,
    measures, prediction) to its raw per-replica values ``[stop - start]`` (numpy, on the host;
    ``settle_time`` and the NaN clean-up are added by :func:`assemble_result`); ``info`` holds
    ``chunk``, ``chunks``, ``bytes_per_replica``, ``steps_per_chunk``, ``solve_seconds``,
    ``predict_seconds``, ``t0``, ``t1``, ``method``, ``dt``. A shard of a distributed sweep
    (:mod:`solvers.shards`) is one call of this on its range."""
    kwargs = dict(solve_kwargs)
    kwargs.setdefault("progress", False)
    t0, t1 = kwargs.pop("t0"), kwargs.pop("t1")
    size = stop - start
    per_replica = None
    if chunk is None:
        probe = build(grid.points(start, start + 1))
        per_replica = bytes_per_replica(probe.initial_state(), {**kwargs, "t0": t0, "t1": t1},
                                        predict)
        chunk = max(1, max_bytes // per_replica)
    chunk = min(chunk, size)
    # Balanced chunks (sizes differ by at most one): no stray 1-replica chunk at the end.
    n_chunks = math.ceil(size / chunk)
    bounds = [start + size * i // n_chunks for i in range(n_chunks + 1)]

    collected: dict[str, list[np.ndarray]] = {}

    def keep(name: str, value: torch.Tensor) -> None:
        collected.setdefault(name, []).append(value.detach().reshape(-1).cpu().numpy())

    start_time = time.perf_counter()
    solve_seconds = predict_seconds = 0.0
    steps = []
    for lo, hi in zip(bounds, bounds[1:]):
        circuit = build(grid.points(lo, hi))
        y0 = circuit.initial_state()
        S = Layout(y0).replicas
        if S != hi - lo:
            raise ValueError(f"build: returned a circuit with S = {S} replicas, expected "
                             f"{hi - lo} (one per grid point given)")
        sol = solve(circuit, y0, t0, t1, **kwargs)
        solve_seconds += sol.stats["seconds"]
        steps.append(int(sol.stats.get("steps") or 0))
        keep("status", sol.status.to(torch.int8))
        keep("t_stop", sol.t_stop)
        if error is not None:
            keep("error", error(circuit, sol.y1))
        for name, fn in (measures or {}).items():
            keep(name, torch.as_tensor(fn(circuit, sol)))
        if predict is not None:
            tick = time.perf_counter()
            for name, value in predict_stability(circuit, kwargs.get("method", "euler"),
                                                 kwargs.get("dt"), predict,
                                                 oracle=oracle).items():
                keep(name, value.to(torch.int8) if value.dtype == torch.bool
                     or name == "predicted_status" else value)
            predict_seconds += time.perf_counter() - tick
        if progress:
            print(f"sweep: {hi - start}/{size} replicas, "
                  f"{time.perf_counter() - start_time:.1f} s")

    flat = {name: np.concatenate(parts) for name, parts in collected.items()}
    info = {"chunk": chunk, "chunks": n_chunks, "bytes_per_replica": per_replica,
            "t0": float(t0), "t1": float(t1), "method": kwargs.get("method", "euler"),
            "dt": kwargs.get("dt"), "steps_per_chunk": steps, "solve_seconds": solve_seconds,
            "predict_seconds": predict_seconds}
    return flat, info


def assemble_result(grid: Grid, flat: Mapping[str, np.ndarray], info: Mapping[str, Any], *,
                    max_bytes: int, predict: str | None, seconds: float,
                    extra: Mapping[str, Any] | None = None) -> SweepResult:
    """The :class:`SweepResult` of a whole grid from its raw per-replica values ``flat``
    (``{name: [grid.size]}``, flat C order, as :func:`sweep_range` returns them for the whole
    grid or concatenated over shards): adds ``settle_time`` (``t_stop`` where converged, NaN
    elsewhere), stores non-finite measures as NaN (counted in ``attrs["nonfinite"]``) and
    labels every array with the grid's dims and coordinates. Element-wise only, so shards
    merge to exactly the single-process result. ``extra`` is added to the attrs."""
    flat = {name: np.array(values) for name, values in flat.items()}
    status = flat["status"]
    flat["settle_time"] = np.where(status == int(Status.CONVERGED), flat["t_stop"], np.nan)
    nonfinite = {}
    for name, values in flat.items():
        if name != "settle_time" and values.dtype.kind == "f":
            bad = ~np.isfinite(values)
            if bad.any():
                nonfinite[name] = int(bad.sum())
                values[bad] = np.nan
    attrs = {"status_names": STATUS_NAMES, "grid_shape": list(grid.shape),
             "grid_points": grid.size, "chunk": info["chunk"],
             "chunks": info["chunks"], "bytes_per_replica": info["bytes_per_replica"],
             "max_bytes": max_bytes, "t0": info["t0"], "t1": info["t1"],
             "method": info["method"], "dt": info["dt"],
             "steps_per_chunk": list(info["steps_per_chunk"]),
             "solve_seconds": info["solve_seconds"],
             "predict_seconds": info["predict_seconds"], "predict": predict,
             "seconds": seconds, "nonfinite": nonfinite, **dict(extra or {})}
    coords = {d: grid.coords[d] for d in grid.dims}
    arrays = {name: LabelledArray(grid.reshape(values), grid.dims, dict(coords), name)
              for name, values in flat.items()}
    return SweepResult(arrays, attrs)


def sweep(build: Callable[[dict[str, torch.Tensor]], Any], grid: Grid,
          solve_kwargs: Mapping[str, Any], *,
          error: Callable[[Any, State], torch.Tensor] | None | str = "closed_form",
          measures: Mapping[str, Callable[[Any, Solution], torch.Tensor]] | None = None,
          predict: str | None = None, oracle: StabilityOracle | None = None,
          chunk: int | None = None, max_bytes: int = 1 << 30,
          progress: bool = False, executor: Any = None,
          shard_dir: str | Path | None = None, shards: int | None = None) -> SweepResult:
    """Solve the circuit ``build(points)`` whose replicas are the grid's points, chunk by chunk.

    Args:
        build: ``build({name: tensor [S]}) -> circuit`` with S replicas, replica s holding the
            s-th point's parameters (``grid.points(start, stop)``). Everything not on the grid is
            fixed by the builder; it must not depend on S or on a replica's position in the
            chunk otherwise, or chunking would change results. Random feedback: an int
            ``feedback_seed`` (every replica the same matrices), or a ``feedback_seed`` axis
            (integers ≥ 0; ``points["feedback_seed"]`` is an int64 tensor of one seed per
            replica, which the circuits take as it is: replica s's matrices are drawn from its
            own seed alone, :mod:`circuits.feedback`) — not the circuits' default, which seeds
            replica s of each chunk with s.
        grid: the :class:`Grid`.
        solve_kwargs: keyword arguments of :func:`solvers.solve` (``t0``, ``t1``, ``dt``,
            ``method``, tolerances ...); ``f`` and ``y0`` are supplied (``y0`` =
            ``circuit.initial_state()``).
        error: ``(circuit, y1) -> [S]`` stored as ``error``; default
            :func:`closed_form_error`; None for none.
        measures: ``{name: (circuit, solution) -> [S]}``, each stored under its name.
        predict: None, ``"initial"`` or ``"steady_state"``: add :func:`predict_stability` at
            that linearisation point (method and dt from ``solve_kwargs``).
        oracle: the linear stability analysis ``predict`` uses (see :data:`StabilityOracle`),
            e.g. ``circuits.analyse_circuit``; default :func:`linearised_stability`.
        chunk: most replicas per solve; default: as many as fit in ``max_bytes`` by
            :func:`bytes_per_replica` (estimated on a one-replica probe of the first point).
            The grid is split into ``ceil(size / chunk)`` chunks of balanced sizes.
        max_bytes: memory budget of one chunk.
        executor: None (default: everything in this process, as above), or an object with
            ``submit(fn, *args)`` returning a future with ``result()`` —
            ``concurrent.futures.ProcessPoolExecutor``, ``dask.distributed.Client``,
            ``submitit.AutoExecutor`` ...: the grid is split into ``shards`` ranges, each a
            sweep of its own computed by ``executor`` and merged here, equal bit for bit to the
            in-process result (:mod:`solvers.shards`). ``build``, ``error``, ``measures`` and
            ``oracle`` must then be picklable (module-level functions or
            ``functools.partial`` of them; Dask also takes closures).
        shard_dir: a folder: each finished shard is written there as it completes, and a rerun
            with the same folder skips the shards already there (resume). None: nothing
            written.
        shards: how many shards; default one per worker of ``executor`` (Dask: its workers;
            a process or thread pool: ``max_workers``), 1 without an executor. At most
            ``grid.size // 2`` are used (see below).

    Chunking and exactness: a replica's arithmetic does not depend on the other replicas, so
    the results of any chunking agree bit for bit as long as every chunk takes the same kernel
    path. One exception: a circuit whose replicas share a weight matrix runs one GEMM over all
    rows when S > 1 but a batched matmul when S = 1 (:func:`circuits.network.compact`), which
    can round differently; chunks of size 1 (``chunk=1`` or a budget below two replicas) are
    therefore equal to the unchunked result only to rounding. The same holds for a chunk whose
    replicas all happen to hold one matrix the whole grid does not share (e.g. a chunk inside
    one value of a ``feedback_seed`` axis that is not the fastest): the draws are the same, the
    kernel path is not. Shards are chunks too, which is why a shard holds at least two points;
    and like chunking, the exact affine flow (``method="affine"`` / ``"auto"``, whose batch
    shrinks as replicas stop) agrees across shardings only to rounding (~1e-14).
    """
    error_fn, measures = _checked_options(grid, solve_kwargs, error, measures, predict,
                                          oracle, chunk, max_bytes)
    if executor is not None or shard_dir is not None or shards is not None:
        from .shards import sharded_sweep
        return sharded_sweep(build, grid, solve_kwargs, executor=executor,
                             shard_dir=shard_dir, shards=shards, error=error_fn,
                             measures=measures, predict=predict, oracle=oracle, chunk=chunk,
                             max_bytes=max_bytes, progress=progress)
    start_time = time.perf_counter()
    flat, info = sweep_range(build, grid, 0, grid.size, solve_kwargs, error=error_fn,
                             measures=measures, predict=predict, oracle=oracle, chunk=chunk,
                             max_bytes=max_bytes, progress=progress)
    return assemble_result(grid, flat, info, max_bytes=max_bytes, predict=predict,
                           seconds=time.perf_counter() - start_time)


#: Names that moved from solvers to circuits (solvers depends on no circuit package).
MOVED = {"replica_network": "circuits.replica_network"}


def moved_attribute(module: str, name: str) -> AttributeError:
    """The error for ``module.name``: where a moved name lives now, or the usual message."""
    if name in MOVED:
        return AttributeError(f"{module}.{name} moved: use {MOVED[name]} instead (solvers no "
                              "longer imports circuits)")
    return AttributeError(f"module {module!r} has no attribute {name!r}")


def __getattr__(name: str):
    raise moved_attribute(__name__, name)


__all__ = ["PARAMETERS", "STATUS_NAMES", "Grid", "LabelledArray", "SweepResult",
           "LinearStability", "StabilityOracle", "closed_form_error", "linearised_stability",
           "method_amplification", "predict_stability", "bytes_per_replica", "sweep",
           "sweep_range", "assemble_result"]
