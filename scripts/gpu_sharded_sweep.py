"""A DI sweep sharded over every visible GPU (one Dask worker per GPU: shard i runs on
cuda:{i % n}), checked bit for bit against the same sweep in one process."""
import json, os, sys, time
from pathlib import Path
import numpy as np, torch
from dask.distributed import Client, LocalCluster
from circuits import DynamicInversion, ForwardNetwork
from solvers import Grid, sweep


def build(points):                 # cloudpickled to the workers; tensors on the current GPU
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 30, generator=g, dtype=torch.float64)
    y = torch.randn(1, 10, generator=g, dtype=torch.float64)
    net = ForwardNetwork([30, 20, 10], activation="tanh", seed=0, device=device)
    return DynamicInversion(net, x, y, feedback="random", feedback_seed=1, **points)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    gpus, n = torch.cuda.device_count(), int(os.environ.get("GRID_N", "32"))
    grid = Grid({"k_i": np.logspace(-1, 2, n), "alpha": np.logspace(-3, 0, n)})
    solver = dict(t0=0.0, t1=2000.0, dt=0.1, method="euler", atol=1e-10, rtol=1e-8)
    clock = time.perf_counter()
    single = sweep(build, grid, solver)
    one = time.perf_counter() - clock
    with LocalCluster(n_workers=max(gpus, 1), threads_per_worker=1) as cluster, \
            Client(cluster) as client:
        clock = time.perf_counter()
        merged = sweep(build, grid, solver, executor=client, shard_dir=out / "shards")
        many = time.perf_counter() - clock
    summary = {"gpus": gpus, "grid": [n, n], "seconds_one_process": one,
               "seconds_sharded": many, "equal": bool(merged.equals(single)),
               "counts": merged.counts()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(summary)
    sys.exit(0 if summary["equal"] else 1)
