"""A sweep split into shards and computed by an existing distributed engine.

:func:`solvers.sweep.sweep` with ``executor=`` (or ``shards=`` / ``shard_dir=``) comes here.
The grid's flat (C-order) index range is cut into ``shards`` contiguous ranges of balanced
sizes (:func:`shard_bounds`); each range is one :func:`solvers.sweep.sweep_range` — a sweep of
its own, chunked as usual — submitted with ``executor.submit(run_shard, ...)``. Anything with
that method works: ``concurrent.futures.ProcessPoolExecutor``, ``dask.distributed.Client``
(:func:`dask_client` starts a local cluster or connects to a scheduler), ``submitit``'s
``AutoExecutor`` for SLURM. Futures are waited on with ``done()`` / ``result()``, which all of
them have.

* **Exact.** A shard returns its replicas' raw values; they are concatenated in grid order and
  finished (settle time, NaN clean-up, labels) element-wise by
  :func:`solvers.sweep.assemble_result`, so the merged result equals the in-process one bit for
  bit (every shard holds at least two points, so no shard takes the S = 1 kernel path; see
  :func:`solvers.sweep.sweep` on chunking and exactness). Like chunking, the exact affine flow
  (``method="affine"`` / ``"auto"``) is the exception: its batch shrinks to other sizes in a
  shard, and a batched matmul of another size may round differently (agreement ~1e-14).
* **Balance.** Shards are contiguous ranges of the grid, and replicas that stop early are
  cheap: a sweep whose slow points cluster on one side is balanced better with several shards
  per worker (``shards=4 * workers``); each shard costs a few ms beyond its compute
  (``benchmarks/sweep_workers.py``).
* **Written as it finishes, resumed on a rerun.** With ``shard_dir``, the main process writes
  each shard as soon as its future completes, to ``shard-<start>-<stop>.npz`` (numpy, no
  pickle) through a temporary file and an atomic rename, so a killed run never leaves half a
  shard. A rerun with the same ``shard_dir`` reads the shards already there and submits only
  the others; without ``shards=`` it keeps the shard count it found there. A shard file
  records a fingerprint of the sweep (grid values, solve arguments, error / measure / builder
  names, prediction); one from a different sweep is refused, not mixed in.
* **GPUs.** In a worker that sees several CUDA devices, shard i makes device ``i % n``
  current (``torch.cuda.set_device``) before it builds: a builder that puts its tensors on
  ``"cuda"`` then lands on one GPU per shard. (Results on a GPU equal those of the same GPU
  run in one process, not those on the CPU.) Untested here: no GPU on the development machine.

The builder and the measures travel to the workers: with a process pool or submitit they must
be picklable (module-level functions or ``functools.partial`` of them); Dask takes closures.
Start a process pool with ``mp_context=multiprocessing.get_context("spawn")``: a forked worker
can hang once torch has started its thread pool in the parent (a warning says so).
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .labelled import _atomic_write

SHARD_FORMAT = 1
POLL_SECONDS = 0.05


# -- how many shards, and where --------------------------------------------------------------

def worker_count(executor: Any) -> int | None:
    """How many workers ``executor`` has: a Dask client's workers, a process / thread pool's
    ``max_workers``; None when it does not say (e.g. submitit)."""
    if hasattr(executor, "scheduler_info"):                      # dask.distributed.Client
        info = executor.scheduler_info()
        return int(info.get("n_workers", len(info.get("workers", {}))))
    for attr in ("_max_workers", "max_workers"):
        n = getattr(executor, attr, None)
        if isinstance(n, int) and not isinstance(n, bool):
            return n
    return None


def check_executor(executor: Any) -> None:
    """``executor`` is None or has a callable ``submit``; a clear ValueError otherwise."""
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise ValueError(f"executor: received {type(executor).__name__} ({executor!r:.60}), "
                         "expected None or an object with submit(fn, *args) returning futures "
                         "(concurrent.futures.ProcessPoolExecutor, dask.distributed.Client, "
                         "submitit.AutoExecutor)")
    context = getattr(executor, "_mp_context", None)
    if context is not None and context.get_start_method() == "fork":
        warnings.warn("executor: a fork-based ProcessPoolExecutor can hang once torch has "
                      "started its thread pool in this process; pass mp_context="
                      "multiprocessing.get_context('spawn') (or use a Dask client)",
                      RuntimeWarning, stacklevel=4)


def shard_count(executor: Any, shards: Any, grid_size: int) -> int:
    """The number of shards: ``shards`` if given (an integer ≥ 1), else one per worker of
    ``executor`` (1 without one); at most ``grid_size // 2`` (≥ 1), so that every shard holds
    two points or more."""
    if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int)
                               or shards < 1):
        raise ValueError(f"shards: received {shards!r}, expected None (one per worker) or an "
                         "integer ≥ 1")
    if shards is None:
        if executor is None:
            shards = 1
        else:
            shards = worker_count(executor)
            if shards is None:
                raise ValueError(f"shards: received None, but executor "
                                 f"{type(executor).__name__} does not say how many workers it "
                                 "has; expected an integer ≥ 1")
            if shards < 1:
                raise ValueError(f"executor: received a {type(executor).__name__} with "
                                 f"{shards} workers, expected at least one (wait for workers, "
                                 "e.g. client.wait_for_workers(n), or pass shards=)")
    return max(1, min(shards, grid_size // 2))


def shard_bounds(size: int, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous ranges ``(start, stop)`` covering ``0..size`` in order, sizes
    differing by at most one."""
    edges = [size * i // n for i in range(n + 1)]
    return list(zip(edges, edges[1:]))


def shard_name(start: int, stop: int) -> str:
    """The file name of the shard holding flat indices ``start:stop``."""
    return f"shard-{start:09d}-{stop:09d}.npz"


def _stable(value: Any) -> Any:
    """A JSON stand-in for ``value`` that is the same in every process (no addresses)."""
    if isinstance(value, Mapping):
        return {str(k): _stable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor)
                          else value).tolist()
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    func = getattr(value, "func", None)                  # functools.partial: its function
    target = func if callable(func) else value
    if callable(target):
        qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
        return f"{getattr(target, '__module__', '?')}.{qualname}"
    text = str(value)
    return type(value).__qualname__ + ("" if " at 0x" in text else f":{text}")


def fingerprint(build: Any, grid: Any, solve_kwargs: Mapping[str, Any],
                options: Mapping[str, Any]) -> str:
    """A hash of what determines a sweep's values: the grid's axes and values, the solve
    arguments, the builder's, error's, measures' and oracle's names, ``predict``."""
    content = {"grid": {d: grid.coords[d].tolist() for d in grid.dims},
               "solve": _stable(dict(solve_kwargs)), "build": _stable(build),
               "error": _stable(options.get("error")),
               "measures": _stable(options.get("measures") or {}),
               "oracle": _stable(options.get("oracle")), "predict": options.get("predict")}
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_key(value: Any) -> str:
    """A short hash of ``value`` (JSON-able, e.g. a run's whole config): name a run's
    ``shard_dir`` after it so a changed config never resumes another config's shards."""
    text = json.dumps(_stable(value), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- shard files ------------------------------------------------------------------------------

def write_shard(path: Path, flat: Mapping[str, np.ndarray], info: Mapping[str, Any],
                start: int, stop: int, sweep_id: str, shards: int) -> Path:
    """Write one shard's raw values ``flat`` (``{name: [stop - start]}``) and ``info`` to
    ``path`` (``.npz``, no pickle) atomically."""
    meta = {"format": SHARD_FORMAT, "start": start, "stop": stop, "fingerprint": sweep_id,
            "shards": shards, "names": list(flat), "info": dict(info)}
    entries = {f"flat/{name}": np.asarray(values) for name, values in flat.items()}
    entries["__shard__"] = np.array(json.dumps(meta))

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez(fh, **entries)
    return _atomic_write(path, write)


def read_shard(path: Path, sweep_id: str | None = None
               ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """``(flat, info, meta)`` of a shard file; with ``sweep_id``, a ValueError unless the file
    belongs to that sweep."""
    with np.load(path, allow_pickle=False) as files:
        meta = json.loads(str(files["__shard__"]))
        flat = {name: np.asarray(files[f"flat/{name}"]) for name in meta["names"]}
    if sweep_id is not None and meta.get("fingerprint") != sweep_id:
        raise ValueError(f"shard_dir: {path} holds a shard of a different sweep (fingerprint "
                         f"{meta.get('fingerprint')!r}, expected {sweep_id!r}: the grid, solve "
                         "arguments, builder or measures differ); expected a new or empty "
                         "folder, or one written by this same sweep")
    n = meta["stop"] - meta["start"]
    bad = [k for k, v in flat.items() if v.shape[:1] != (n,)]
    if bad:
        raise ValueError(f"shard_dir: {path} holds arrays {bad} of the wrong length, expected "
                         f"{n} values each (a damaged shard: delete it to recompute)")
    return flat, meta["info"], meta


def _existing_count(shard_dir: Path, sweep_id: str) -> int | None:
    """The shard count of this sweep's shards already in ``shard_dir`` (None if none)."""
    for path in sorted(shard_dir.glob("shard-*.npz")):
        try:
            _, _, meta = read_shard(path)
        except (OSError, ValueError, KeyError):
            continue
        if meta.get("fingerprint") == sweep_id:
            return int(meta["shards"])
    return None


# -- the work ---------------------------------------------------------------------------------

def run_shard(build: Callable, grid: Any, start: int, stop: int,
              solve_kwargs: Mapping[str, Any], options: Mapping[str, Any],
              index: int = 0) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One shard, in a worker: makes CUDA device ``index % n`` current where a worker sees
    ``n > 1`` GPUs, then :func:`solvers.sweep.sweep_range` on flat indices ``start:stop``.
    Returns its ``(flat, info)`` (numpy values, host memory)."""
    from .sweep import sweep_range

    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        torch.cuda.set_device(index % torch.cuda.device_count())
    tick = time.perf_counter()
    flat, info = sweep_range(build, grid, start, stop, solve_kwargs, **options)
    info["shard_seconds"] = time.perf_counter() - tick
    return flat, info


def _submit(executor: Any, fn: Callable, *args: Any) -> Any:
    if hasattr(executor, "scheduler_info"):     # Dask: not pure (never reuse a cached result)
        return executor.submit(fn, *args, pure=False)
    return executor.submit(fn, *args)


def completed(futures: Sequence[tuple[Any, int]]) -> Iterator[tuple[Any, int]]:
    """``(future, tag)`` pairs in the order the futures finish: ``concurrent.futures`` ones
    through ``as_completed``, any other kind (Dask, submitit) by polling ``done()``."""
    if all(isinstance(f, cf.Future) for f, _ in futures):
        tags = {f: tag for f, tag in futures}
        for f in cf.as_completed(tags):
            yield f, tags[f]
        return
    pending = list(futures)
    while pending:
        done = [(f, tag) for f, tag in pending if f.done()]
        if not done:
            time.sleep(POLL_SECONDS)
            continue
        for item in done:
            pending.remove(item)
            yield item


def _merge_info(infos: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``info`` of a whole grid from its shards' (in grid order)."""
    first = infos[0]
    return {"chunk": max(i["chunk"] for i in infos),
            "chunks": sum(i["chunks"] for i in infos),
            "bytes_per_replica": next((i["bytes_per_replica"] for i in infos
                                       if i["bytes_per_replica"] is not None), None),
            "t0": first["t0"], "t1": first["t1"], "method": first["method"],
            "dt": first["dt"],
            "steps_per_chunk": [s for i in infos for s in i["steps_per_chunk"]],
            "solve_seconds": sum(i["solve_seconds"] for i in infos),
            "predict_seconds": sum(i["predict_seconds"] for i in infos)}


def _check_shard_dir(shard_dir: Any) -> Path | None:
    if shard_dir is None:
        return None
    if not isinstance(shard_dir, (str, os.PathLike)):
        raise ValueError(f"shard_dir: received {type(shard_dir).__name__}, expected None or a "
                         "folder path (str or pathlib.Path)")
    path = Path(shard_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"shard_dir: received {str(path)!r}, a file; expected a folder (it is "
                         "created if missing)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def sharded_sweep(build: Callable, grid: Any, solve_kwargs: Mapping[str, Any], *,
                  executor: Any = None, shard_dir: str | Path | None = None,
                  shards: int | None = None, error: Callable | None = None,
                  measures: Mapping[str, Callable] | None = None, predict: str | None = None,
                  oracle: Callable | None = None, chunk: int | None = None,
                  max_bytes: int = 1 << 30, progress: bool = False) -> Any:
    """:func:`solvers.sweep.sweep` split into shards (see the module docstring); arguments as
    there, already checked (``error`` a callable or None). Without ``executor`` the shards run
    one after the other in this process (still written to and resumed from ``shard_dir``).

    Returns the :class:`solvers.sweep.SweepResult` of the whole grid, its attrs those of the
    in-process sweep (``chunk`` the largest, ``chunks`` and the seconds summed over shards)
    plus ``shards`` (count), ``shard_bounds`` (``[start, stop]`` each), ``shards_resumed``
    (read from ``shard_dir``, not computed), ``shard_seconds`` (each shard's time in its
    worker) and ``executor`` (its type name)."""
    from .sweep import assemble_result

    check_executor(executor)
    folder = _check_shard_dir(shard_dir)
    options = {"error": error, "measures": dict(measures or {}), "predict": predict,
               "oracle": oracle, "chunk": chunk, "max_bytes": max_bytes, "progress": False}
    sweep_id = fingerprint(build, grid, solve_kwargs, options)
    found = _existing_count(folder, sweep_id) if folder is not None and shards is None else None
    n = shard_count(executor, found if found is not None else shards, grid.size)
    plan = shard_bounds(grid.size, n)
    start_time = time.perf_counter()
    parts: list[tuple[dict, dict] | None] = [None] * n
    resumed = 0
    for i, (a, b) in enumerate(plan):
        if folder is not None and (folder / shard_name(a, b)).exists():
            flat, info, _ = read_shard(folder / shard_name(a, b), sweep_id)
            parts[i] = (flat, info)
            resumed += 1
    todo = [i for i in range(n) if parts[i] is None]

    def finish(i: int, flat: dict, info: dict) -> None:
        parts[i] = (flat, info)
        if folder is not None:
            write_shard(folder / shard_name(*plan[i]), flat, info, *plan[i], sweep_id, n)
        if progress:
            done = sum(p is not None for p in parts)
            print(f"sweep: shard {i + 1}/{n} done ({done}/{n}), "
                  f"{time.perf_counter() - start_time:.1f} s")

    args = (build, grid)
    if executor is None:
        for i in todo:
            finish(i, *run_shard(*args, *plan[i], solve_kwargs, options, i))
    else:
        futures = [(_submit(executor, run_shard, *args, *plan[i], dict(solve_kwargs),
                            options, i), i) for i in todo]
        try:
            for future, i in completed(futures):
                finish(i, *future.result())
        except BaseException:            # a shard failed or the run was interrupted:
            for future, _ in futures:     # stop the rest (finished shards are on disk)
                try:
                    if not future.done():
                        future.cancel()
                except Exception:         # best effort: the first error is the one to see
                    pass
            raise
    flats = [p[0] for p in parts]
    names = list(flats[0])
    flat = {name: np.concatenate([f[name] for f in flats]) for name in names}
    extra = {"shards": n, "shard_bounds": [list(b) for b in plan], "shards_resumed": resumed,
             "shard_seconds": [p[1].get("shard_seconds") for p in parts],
             "executor": None if executor is None else type(executor).__name__}
    return assemble_result(grid, flat, _merge_info([p[1] for p in parts]),
                           max_bytes=max_bytes, predict=predict,
                           seconds=time.perf_counter() - start_time, extra=extra)


# -- Dask -------------------------------------------------------------------------------------

@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``dask.distributed.Client``, closed on exit: connected to the running scheduler at
    ``scheduler`` (``"tcp://host:8786"``), or to a new local cluster of ``workers`` worker
    processes with one thread each (no dashboard), shut down on exit. At most one of the two;
    neither: yields None (run in process; Dask is not imported)."""
    if workers is not None and scheduler is not None:
        raise ValueError(f"workers, scheduler: received {workers!r}, {scheduler!r}, expected "
                         "at most one (a worker count for a local cluster, or a scheduler "
                         "address)")
    if workers is None and scheduler is None:
        yield None
        return
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers: received {workers!r}, expected an integer ≥ 1")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler):
        raise ValueError(f"scheduler: received {scheduler!r}, expected an address such as "
                         "'tcp://127.0.0.1:8786'")
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


__all__ = ["worker_count", "check_executor", "shard_count", "shard_bounds", "shard_name",
           "fingerprint", "run_key", "write_shard", "read_shard", "run_shard", "completed",
           "sharded_sweep", "dask_client"]
