"""A sweep on a local Dask cluster: 1 worker vs 2 workers vs in-process, and the cost of a shard.

The dynamic-inversion sweep of ``configs/sweep.yaml`` (k_i × α, random feedback) with Euler at
dt = 0.1 (the exact flow is too cheap for the distribution to matter), on a 32 × 32 grid, run
four ways, each result compared bit for bit with the in-process one:

1. **in process**: ``sweep(...)`` (no executor), one intra-op thread;
2. **1 worker**, **2 workers**: ``sweep(..., executor=client)`` on a local Dask cluster of that
   many worker processes (one thread each; :func:`solvers.shards.dask_client`), one shard per
   worker. The cluster is started and warmed up (a 2-point sweep on every worker: they import
   torch and the circuits) before the clock starts; its start-up time is reported on its own.
   ``speedup_2_vs_1`` is the ratio of the two wall times.
3. **overhead per shard**: on the 1-worker cluster, the same grid cut into ``grid.size // 2``
   shards of two points; ``(wall − Σ time inside the shards) / shards`` is what one shard costs
   beyond its compute (submit, transfer of the builder and the results, the merge).

Run from the repository root::

    python -m benchmarks.sweep_workers --out DIR            # 32 × 32 grid
    python -m benchmarks.sweep_workers --out DIR --quick    # 8 × 8 grid, t1 = 500 (a smoke run)

Writes ``DIR/summary.json``. Timings are wall-clock medians of ``--repeats`` runs; run it on a
quiet machine with at least 2 free cores (the speed-up is bounded by the cores, not the workers).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from demos import sweep as demo
from solvers.shards import dask_client
from solvers.sweep import Grid, SweepResult, sweep


def setup(quick: bool) -> tuple[Callable, Grid, dict[str, Any], dict[str, Any]]:
    """The builder, grid, solve arguments and sweep options of the benchmark sweep."""
    n = 8 if quick else 32
    config = demo.load({"sweeps": ["dynamic_inversion"],
                        "dynamic_inversion_grid": {"k_i": {"logspace": [-1, 2, n]},
                                                   "alpha": {"logspace": [-2, 1.5, n]}},
                        "dynamic_inversion_solver": {"method": "euler",
                                                     "t1": 500.0 if quick else 3000.0}})
    grid = demo.make_grid("dynamic_inversion", config)
    build = demo.builder("dynamic_inversion", config)
    return (build, grid, dict(config["dynamic_inversion_solver"]),
            dict(config["dynamic_inversion_sweep"]))


def timed(run: Callable[[], SweepResult], repeats: int) -> tuple[float, SweepResult]:
    """Median wall seconds of ``repeats`` calls of ``run`` and the last result."""
    times, result = [], None
    for _ in range(repeats):
        tick = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - tick)
    return statistics.median(times), result


def warm_up(build: Callable, grid: Grid, solver: dict, options: dict) -> None:
    """A small sweep in this process (imports, first-call costs): run on each worker."""
    torch.set_num_threads(1)
    sweep(build, grid, solver, **options)


def on_cluster(workers: int, build: Callable, grid: Grid, solver: dict, options: dict,
               reference: SweepResult, repeats: int, tiny_shards: bool) -> dict[str, Any]:
    """Time the sweep on a fresh local cluster of ``workers`` processes (and, with
    ``tiny_shards``, the same grid in 2-point shards)."""
    tick = time.perf_counter()
    with dask_client(workers=workers) as client:
        started = time.perf_counter() - tick
        warm = Grid({d: grid.coords[d][:1] if i else grid.coords[d][:2]
                     for i, d in enumerate(grid.dims)})
        client.run(warm_up, build, warm, solver, options)           # on every worker
        seconds, result = timed(lambda: sweep(build, grid, solver, **options,
                                              executor=client), repeats)
        out = {"workers": workers, "cluster_start_seconds": started, "seconds": seconds,
               "shards": result.attrs["shards"],
               "shard_seconds": result.attrs["shard_seconds"],
               "equal_to_in_process": result.equals(reference, ignore=())}
        if tiny_shards:
            n = grid.size // 2
            wall, tiny = timed(lambda: sweep(build, grid, solver, **options, executor=client,
                                             shards=n), repeats)
            compute = sum(tiny.attrs["shard_seconds"])
            out["tiny_shards"] = {"shards": n, "seconds": wall, "compute_seconds": compute,
                                  "overhead_per_shard_seconds": (wall - compute) / n,
                                  "equal_to_in_process": tiny.equals(reference)}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep_workers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for summary.json")
    parser.add_argument("--quick", action="store_true", help="8 × 8 grid, t1 = 500")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per setting (default 1 with --quick, else 3)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        parser.error(f"--repeats: received {repeats}, expected an integer ≥ 1")
    torch.set_num_threads(1)
    build, grid, solver, options = setup(args.quick)
    sweep(build, Grid({d: grid.coords[d][:2] for d in grid.dims}), solver, **options)  # warm
    in_process, reference = timed(lambda: sweep(build, grid, solver, **options), repeats)
    one = on_cluster(1, build, grid, solver, options, reference, repeats, tiny_shards=True)
    two = on_cluster(2, build, grid, solver, options, reference, repeats, tiny_shards=False)
    summary = {
        "benchmark": "sweep_workers", "quick": args.quick, "repeats": repeats,
        "grid": {d: len(grid.coords[d]) for d in grid.dims}, "grid_points": grid.size,
        "method": solver.get("method"), "t1": solver.get("t1"),
        "in_process_seconds": in_process, "workers_1": one, "workers_2": two,
        "speedup_2_vs_1": one["seconds"] / two["seconds"],
        "speedup_2_vs_in_process": in_process / two["seconds"],
        "overhead_per_shard_seconds": one["tiny_shards"]["overhead_per_shard_seconds"],
        "all_equal_to_in_process": bool(one["equal_to_in_process"]
                                        and two["equal_to_in_process"]
                                        and one["tiny_shards"]["equal_to_in_process"]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"in process {in_process:.2f} s; 1 worker {one['seconds']:.2f} s; 2 workers "
          f"{two['seconds']:.2f} s; speed-up 2 vs 1 {summary['speedup_2_vs_1']:.2f}; overhead "
          f"per shard {summary['overhead_per_shard_seconds'] * 1e3:.1f} ms; equal "
          f"{summary['all_equal_to_in_process']}; wrote {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
