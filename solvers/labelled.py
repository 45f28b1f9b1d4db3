"""Results as labelled ``xarray.Dataset`` s, and sweeps on disk as netCDF.

* :func:`sweep_to_xarray` (:meth:`solvers.SweepResult.to_xarray`): one data variable per array
  of a sweep (``status``, ``t_stop``, ``settle_time``, ``error``, the prediction, measures),
  the grid axes as coordinates, the meaning of each status code in the variable's attrs (CF
  ``flag_values`` / ``flag_meanings``), the sweep's attrs as dataset attrs.
* :func:`save_netcdf` / :func:`load_netcdf` (:meth:`SweepResult.save` / :meth:`SweepResult.load`
  with a ``.nc`` path): that dataset in one netCDF-4 file written by h5netcdf. It opens with
  ``xarray.open_dataset(path)`` in any Python that has xarray and h5netcdf, without this
  project; loading it back gives the same arrays bit for bit and the same attrs. No pickle.
* :func:`solution_to_xarray` (:meth:`solvers.Solution.to_xarray`): trajectories over
  ``time`` × ``replica`` × unit dims, status and stop time per replica.
* :func:`training_to_xarray` (:meth:`solvers.TrainingResult.to_xarray`): the final state and
  divergence flags per replica, and histories recorded per presentation (e.g. a loss logged in
  ``on_chunk``) along a ``presentation`` coordinate.

Attributes netCDF cannot hold (None, bools, lists, dicts) are stored as JSON strings; their
keys are listed in the attribute ``json_attrs`` so :func:`decode_attrs` restores them.

xarray is imported inside the functions, so ``import solvers`` does not pay for it.
"""
from __future__ import annotations

import json
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .solve import Status

#: Attribute naming the keys whose values are JSON strings.
JSON_KEY = "json_attrs"
#: Dataset attributes this module adds (dropped again by :func:`load_netcdf`).
_BOOKKEEPING = (JSON_KEY, "sweep_arrays", "index_dims", "format")
FORMAT = "feedback-circuits sweep, netCDF-4 (solvers.labelled)"

#: State names taken for matrices (weights, biases, feedback), not populations ``[S, B, n]``.
PARAMETER_NAME = re.compile(r"^(W|b|B|Q)(_\w+)?$")
STATUS_MEANINGS = " ".join(s.name.lower() for s in Status)
DESCRIPTIONS = {
    "status": "simulated outcome per grid point: code of solvers.solve.Status",
    "predicted_status": "linear-stability prediction: code of solvers.solve.Status "
                        "(converged where the Jacobian and the step are stable, else diverged)",
    "t_stop": "time each replica stopped (t1 if it never did)",
    "settle_time": "t_stop where status is converged, NaN elsewhere",
    "error": "relative error of the final state to the closed-form steady state",
    "spectral_abscissa": "max Re of the Jacobian's eigenvalues (< 0: continuous-time stable)",
    "spectral_radius": "spectral radius of the method's one-step amplification matrix at dt",
    "continuous_stable": "1 where spectral_abscissa < 0, else 0",
    "step_stable": "1 where spectral_radius < 1, else 0",
}


class LegacyFormatWarning(UserWarning):
    """Reading a sweep saved as ``.npz``: still supported; netCDF (``.nc``) is the format now."""


def warn_legacy(path: str | Path) -> None:
    """Warn once per call that ``path`` is in the older ``.npz`` format."""
    warnings.warn(f"{path}: .npz is the older sweep format (still read); save as .nc "
                  "(netCDF: SweepResult.save('name.nc')) to open it with xarray",
                  LegacyFormatWarning, stacklevel=3)


def _xarray() -> Any:
    try:
        import xarray
    except ImportError as err:            # pragma: no cover - xarray is a dependency
        raise ImportError("to_xarray / .nc files need xarray and h5netcdf: pip install "
                          "xarray h5netcdf h5py") from err
    return xarray


# -- attributes -------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "tolist"):                      # torch tensors
        return value.tolist()
    return str(value)


def encode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` as netCDF can store them: strings, ints and floats as they are, anything else
    (None, bool, list, dict, arrays ...) as a JSON string, its key listed under
    :data:`JSON_KEY`. The inverse is :func:`decode_attrs`."""
    out: dict[str, Any] = {}
    as_json = []
    for key, value in attrs.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"attrs: received key {key!r}, expected a non-empty string")
        native = (isinstance(value, str) or (isinstance(value, (int, float, np.integer,
                                                                 np.floating))
                                             and not isinstance(value, (bool, np.bool_))))
        if isinstance(value, (int, np.integer)) and not -2 ** 63 <= int(value) < 2 ** 63:
            native = False
        if native:
            out[key] = value
        else:
            out[key] = json.dumps(value, default=_json_default)
            as_json.append(key)
    if as_json:
        out[JSON_KEY] = json.dumps(as_json)
    return out


def decode_attrs(attrs: Mapping[str, Any], drop: Iterable[str] = ()) -> dict[str, Any]:
    """Attributes read from netCDF back to Python values: JSON-encoded ones (listed under
    :data:`JSON_KEY`) decoded, numpy scalars as ``int`` / ``float``; keys in ``drop`` left
    out."""
    as_json = set(json.loads(attrs[JSON_KEY])) if JSON_KEY in attrs else set()
    out = {}
    for key, value in attrs.items():
        if key == JSON_KEY or key in drop:
            continue
        if key in as_json:
            out[key] = json.loads(value)
        elif isinstance(value, np.generic):
            out[key] = value.item()
        elif isinstance(value, np.ndarray) and value.ndim == 0:
            out[key] = value.item()
        else:
            out[key] = value
    return out


def status_attrs(what: str = "status") -> dict[str, Any]:
    """The meaning of status codes as CF flag attributes: ``flag_values`` (0, 1, 2) and
    ``flag_meanings`` ("reached_t1 converged diverged", in code order)."""
    return {"flag_values": np.array([int(s) for s in Status], dtype=np.int8),
            "flag_meanings": STATUS_MEANINGS,
            "long_name": DESCRIPTIONS.get(what, DESCRIPTIONS["status"])}


def _variable_attrs(name: str, labelled_attrs: Mapping[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if name in ("status", "predicted_status"):
        attrs.update(status_attrs(name))
    elif name in DESCRIPTIONS:
        attrs["long_name"] = DESCRIPTIONS[name]
    if labelled_attrs:
        attrs["labelled_attrs"] = json.dumps(dict(labelled_attrs), default=_json_default)
    return attrs


# -- sweeps -----------------------------------------------------------------------------------

def sweep_to_xarray(result: Any) -> Any:
    """A :class:`solvers.sweep.SweepResult` as an ``xarray.Dataset``.

    Dims and coordinates: the grid axes in grid order (``k_i``, ``alpha`` ..., their values);
    a dim an array has beyond them (replica, example, unit ...) gets an integer index
    coordinate ``0..n-1``. Data variables: every array under its name, data and dtype as they
    are (``status`` / ``predicted_status`` int8 with ``flag_values`` / ``flag_meanings``;
    ``settle_time`` NaN where not converged). Dataset attrs: ``result.attrs`` (JSON strings
    where netCDF needs them, see :func:`encode_attrs`), plus ``sweep_arrays`` (the array
    order) and ``format``."""
    xr = _xarray()
    data_vars, coords, index_dims = {}, {}, []
    for name, arr in result.arrays.items():
        for d, n in zip(arr.dims, arr.shape):
            if d in arr.coords:
                values = np.asarray(arr.coords[d])
                if d in coords and not np.array_equal(coords[d], values):
                    raise ValueError(f"result[{name!r}]: coordinate {d!r} differs from another "
                                     "array's; expected all arrays on one grid")
                coords[d] = values
            elif d not in coords:
                coords[d] = np.arange(n)
                index_dims.append(d)
        data_vars[name] = xr.Variable(arr.dims, np.asarray(arr.data),
                                      _variable_attrs(name, arr.attrs))
    attrs = encode_attrs({**result.attrs, "sweep_arrays": list(result.arrays),
                          "index_dims": index_dims, "format": FORMAT})
    return xr.Dataset(data_vars, coords={d: (d, v) for d, v in coords.items()}, attrs=attrs)


def _atomic_write(path: Path, write: Any) -> Path:
    """``write(tmp)`` to a temporary file next to ``path``, then rename it onto ``path`` (a
    reader never sees half a file; an interrupted write leaves ``path`` as it was)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_netcdf(result: Any, path: str | Path) -> Path:
    """Write ``result`` (a SweepResult) to ``path`` as netCDF-4 (h5netcdf engine), atomically.
    Returns the path."""
    ds = sweep_to_xarray(result)
    return _atomic_write(Path(path), lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


def dataset_to_sweep(ds: Any) -> Any:
    """A Dataset made by :func:`sweep_to_xarray` (or read from its netCDF file) back to a
    :class:`solvers.sweep.SweepResult`: the same arrays (dims, coordinates, dtype, data) and
    attrs; index coordinates it added are dropped."""
    from .sweep import LabelledArray, SweepResult

    attrs = decode_attrs(ds.attrs)
    names = attrs.get("sweep_arrays", list(ds.data_vars))
    index_dims = set(attrs.get("index_dims", []))
    arrays = {}
    for name in names:
        var = ds[name]
        coords = {d: np.asarray(ds[d].values) for d in var.dims
                  if d in ds.coords and d not in index_dims}
        labelled = json.loads(var.attrs.get("labelled_attrs", "{}"))
        arrays[name] = LabelledArray(np.asarray(var.values), tuple(var.dims), coords, name,
                                     labelled)
    return SweepResult(arrays, {k: v for k, v in attrs.items() if k not in _BOOKKEEPING})


def load_netcdf(path: str | Path) -> Any:
    """Read a sweep written by :func:`save_netcdf` into a SweepResult (everything loaded
    into memory; the file is closed on return)."""
    xr = _xarray()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: received {str(path)!r}, expected an existing .nc file")
    with xr.open_dataset(path, engine="h5netcdf", decode_times=False,
                         decode_timedelta=False) as ds:
        return dataset_to_sweep(ds.load())


# -- solutions and training -------------------------------------------------------------------

def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _unique_dims(proposals: Sequence[Sequence[str]], shape: Sequence[int],
                 sizes: dict[str, int]) -> tuple[str, ...]:
    """The first proposal whose dims agree with the sizes already taken (``sizes``, updated);
    the last proposal is numbered until it fits."""
    for dims in proposals:
        if len(set(dims)) == len(dims) and all(sizes.get(d, n) == n
                                               for d, n in zip(dims, shape)):
            break
    else:
        base, dims = list(proposals[-1]), list(proposals[-1])
        for i, (d, n) in enumerate(zip(base, shape)):
            k = 1
            while sizes.get(dims[i], n) != n or dims[i] in dims[:i]:
                k += 1
                dims[i] = f"{d}_{k}"
    sizes.update(zip(dims, shape))
    return tuple(dims)


def _trailing_dims(name: str, shape: Sequence[int], given: Mapping[str, Sequence[str]],
                   sizes: dict[str, int], lead: Sequence[str]) -> tuple[str, ...]:
    """Dim names of a per-replica tensor ``[*lead, *shape]``: ``given[name]`` if there; one
    trailing axis ``<name>_unit``; two ``<name>_row``, ``<name>_col`` for a weight or bias
    (named like :data:`PARAMETER_NAME`: ``W_2``, ``b_1``, ``B_1``, ``Q``), else ``example``,
    ``<name>_unit`` (a population ``[S, B, n]``; row / col when its size does not match the
    examples seen); more ``<name>_dim<i>``."""
    if name in given:
        dims = tuple(given[name])
        if len(dims) != len(shape):
            raise ValueError(f"dims[{name!r}]: received {dims}, expected {len(shape)} names "
                             f"(the trailing shape {tuple(shape)} after {tuple(lead)})")
        return _unique_dims([dims], shape, sizes)
    if len(shape) == 1:
        proposals = [(f"{name}_unit",)]
    elif len(shape) == 2 and PARAMETER_NAME.match(name):
        proposals = [(f"{name}_row", f"{name}_col")]
    elif len(shape) == 2:
        proposals = [("example", f"{name}_unit"), (f"{name}_row", f"{name}_col")]
    else:
        proposals = [tuple(f"{name}_dim{i}" for i in range(len(shape)))]
    return _unique_dims(proposals, shape, sizes)


def _check_dims(dims: Any) -> Mapping[str, Sequence[str]]:
    if dims is None:
        return {}
    if not isinstance(dims, Mapping) or not all(
            isinstance(v, (list, tuple)) and all(isinstance(d, str) for d in v)
            for v in dims.values()):
        raise ValueError(f"dims: received {dims!r}, expected None or a mapping of state names "
                         "to tuples of dim names for their trailing axes")
    return dims


def solution_to_xarray(sol: Any, dims: Mapping[str, Sequence[str]] | None = None,
                       final: bool = True) -> Any:
    """A :class:`solvers.Solution` as an ``xarray.Dataset``.

    * ``ys[name]`` ``[T, S, ...]`` → variable ``name`` over ``("time", "replica", ...)``, the
      ``time`` coordinate the saved times ``ts``;
    * with ``final``: ``y1[name]`` ``[S, ...]`` → ``<name>_final`` over ``("replica", ...)``;
    * ``status`` (int8, ``flag_values`` / ``flag_meanings``) and ``t_stop`` over ``replica``.

    Trailing axes are named by ``dims[name]`` if given, else ``<name>_unit`` for ``[S, n]``,
    ``example``, ``<name>_unit`` for a population ``[S, B, n]``, ``<name>_row``,
    ``<name>_col`` for a weight or bias ``[S, n, m]`` (``W_l``, ``b_l``, ``B_l``, ``Q``). Every
    dim has an integer index coordinate. ``stats`` become dataset attrs (JSON where needed)."""
    xr = _xarray()
    given = _check_dims(dims)
    ts = _numpy(sol.ts)
    status = _numpy(sol.status).astype(np.int8)
    S = status.shape[0]
    sizes: dict[str, int] = {"time": ts.shape[0], "replica": S}
    data_vars = {}
    for name, value in sol.ys.items():
        v = _numpy(value)
        trailing = _trailing_dims(name, v.shape[2:], given, sizes, ("time", "replica"))
        data_vars[name] = (("time", "replica") + trailing, v)
    if final:
        for name, value in sol.y1.items():
            v = _numpy(value)
            trailing = _trailing_dims(name, v.shape[1:], given, sizes, ("replica",))
            data_vars[f"{name}_final"] = (("replica",) + trailing, v)
    data_vars["status"] = xr.Variable(("replica",), status, status_attrs("status"))
    data_vars["t_stop"] = xr.Variable(("replica",), _numpy(sol.t_stop),
                                      {"long_name": DESCRIPTIONS["t_stop"]})
    coords = {d: (d, np.arange(n)) for d, n in sizes.items() if d != "time"}
    coords["time"] = ("time", ts)
    return xr.Dataset(data_vars, coords=coords, attrs=encode_attrs(dict(sol.stats)))


def training_to_xarray(result: Any, history: Mapping[int, Mapping[str, Any]] | None = None,
                       dims: Mapping[str, Sequence[str]] | None = None,
                       epoch_size: int | None = None) -> Any:
    """A :class:`solvers.TrainingResult` as an ``xarray.Dataset``.

    ``TrainingResult`` holds the end of a run: the state ``y`` (``{name: [S, ...]}``, weights
    included) → one variable per name over ``("replica", ...)`` (trailing dims as in
    :func:`solution_to_xarray`); ``diverged`` ``[S]`` → ``diverged`` (bool); the presentations
    reached → attr ``presentations``; ``stats`` → attrs.

    ``history``: what the caller recorded along the way, ``{k: {name: value}}`` with k the
    presentations done (as ``on_chunk(k, y, sol)`` gets it) and value a scalar or ``[S, ...]``
    (e.g. the per-replica loss) → variable ``name`` over ``("presentation", "replica", ...)``
    with the ``presentation`` coordinate the sorted k (every record must name the same
    values). ``epoch_size``: add an ``epoch`` coordinate ``k // epoch_size`` along it."""
    xr = _xarray()
    given = _check_dims(dims)
    diverged = _numpy(result.diverged).astype(bool)
    S = diverged.shape[0]
    sizes: dict[str, int] = {"replica": S}
    data_vars: dict[str, Any] = {}
    for name, value in result.y.items():
        v = _numpy(value)
        data_vars[name] = (("replica",) + _trailing_dims(name, v.shape[1:], given, sizes,
                                                         ("replica",)), v)
    data_vars["diverged"] = xr.Variable(("replica",), diverged,
                                        {"long_name": "replica diverged and was held"})
    coords: dict[str, Any] = {}
    if history:
        if not isinstance(history, Mapping):
            raise ValueError(f"history: received {type(history).__name__}, expected a mapping "
                             "{presentations done: {name: value}}")
        ks = sorted(history)
        names = list(history[ks[0]])
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) \
                    or set(history[k]) != set(names):
                raise ValueError(f"history[{k!r}]: received {sorted(history[k])}, expected an "
                                 f"integer key and the values {sorted(names)} of the first "
                                 "record")
        sizes["presentation"] = len(ks)
        for name in names:
            v = np.stack([_numpy(history[k][name]) for k in ks])
            if v.ndim >= 2 and v.shape[1] == S:
                lead = ("presentation", "replica")
            else:
                lead = ("presentation",)
            trailing = _trailing_dims(name, v.shape[len(lead):], given, sizes, lead)
            data_vars[name] = (lead + trailing, v)
        coords["presentation"] = ("presentation", np.asarray(ks, dtype=np.int64))
        if epoch_size is not None:
            if isinstance(epoch_size, bool) or not isinstance(epoch_size, int) \
                    or epoch_size < 1:
                raise ValueError(f"epoch_size: received {epoch_size!r}, expected an integer "
                                 "≥ 1 (presentations per epoch) or None")
            coords["epoch"] = ("presentation", np.asarray(ks, dtype=np.int64) // epoch_size)
    for d, n in sizes.items():
        coords.setdefault(d, (d, np.arange(n)))
    attrs = encode_attrs({**dict(result.stats), "presentations": int(result.presentations)})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


__all__ = ["LegacyFormatWarning", "encode_attrs", "decode_attrs", "status_attrs",
           "sweep_to_xarray", "save_netcdf", "load_netcdf", "dataset_to_sweep",
           "solution_to_xarray", "training_to_xarray"]
