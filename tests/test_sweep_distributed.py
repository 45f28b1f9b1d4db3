"""Sweeps on an existing distributed engine (solvers.shards): a grid split into shards computed
by a Dask cluster or a concurrent.futures executor, written as they finish, resumed on a
rerun, merged to the single-process result bit for bit (float64)."""
import concurrent.futures as cf
import functools
import os
import time

import numpy as np
import pytest

distributed = pytest.importorskip("dask.distributed")

from circuits import DynamicInversion                              # noqa: E402
from solvers.shards import (check_executor, read_shard, shard_bounds,  # noqa: E402
                            shard_name)
from solvers.sweep import Grid, sweep                              # noqa: E402
from tests.test_sweep_xarray import B, NET, X, Y   # noqa: E402  the same circuit

# 4 × 4 grid of k_i × alpha (as configs/sweep.yaml, smaller): stable, unstable and Euler-limited
GRID = Grid({"k_i": np.logspace(-1, 2, 4), "alpha": np.logspace(-0.5, 1.5, 4)})
SOLVER = dict(t0=0.0, t1=300.0, dt=0.1, method="euler", atol=1e-10, rtol=1e-8)


def build_di(points, feedback_scale=1.0):
    """The builder the workers receive (module-level: picklable)."""
    return DynamicInversion(NET, X, Y, feedback=[feedback_scale * b for b in B], **points)


BUILD = functools.partial(build_di, feedback_scale=1.0)


class CountingBuilder:
    """``build_di`` that counts its calls (in-process runs only)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, points):
        self.calls += 1
        return build_di(points)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def reference():
    return sweep(BUILD, GRID, SOLVER, predict="initial")


def assert_bit_equal(got, want):
    assert list(got.arrays) == list(want.arrays)
    for name in want.arrays:
        a, b = got[name], want[name]
        assert a.dims == b.dims and a.data.dtype == b.data.dtype == b.data.dtype, name
        assert a.data.tobytes() == b.data.tobytes(), name            # bit for bit, NaN included
        for d in b.coords:
            assert np.array_equal(a.coords[d], b.coords[d])
    assert got.equals(want)


def test_dask_shards_merge_to_the_single_process_result(client, reference):
    got = sweep(BUILD, GRID, SOLVER, predict="initial", executor=client)
    assert got.attrs["shards"] == 2 and got.attrs["executor"] == "Client"
    assert got.attrs["shard_bounds"] == [[0, 8], [8, 16]]
    assert_bit_equal(got, reference)
    statuses = set(reference["status"].data.ravel().tolist())
    assert statuses >= {1, 2}                     # the grid holds converged and diverged points
    # more shards than workers: still exact
    assert_bit_equal(sweep(BUILD, GRID, SOLVER, predict="initial", executor=client, shards=5),
                     reference)


def test_dask_writes_shards_and_resumes_only_the_missing(client, reference, tmp_path):
    first = sweep(BUILD, GRID, SOLVER, predict="initial", executor=client, shard_dir=tmp_path)
    files = sorted(tmp_path.glob("shard-*.npz"))
    assert [f.name for f in files] == [shard_name(0, 8), shard_name(8, 16)]
    assert first.attrs["shards_resumed"] == 0
    flat, info, meta = read_shard(files[0])
    assert meta["start"] == 0 and meta["stop"] == 8 and flat["status"].shape == (8,)
    kept = files[0].stat().st_mtime_ns
    files[1].unlink()                                    # as if the run died before shard 2
    time.sleep(0.01)
    again = sweep(BUILD, GRID, SOLVER, predict="initial", executor=client, shard_dir=tmp_path)
    assert again.attrs["shards_resumed"] == 1
    assert files[0].stat().st_mtime_ns == kept           # finished shard: read, not recomputed
    assert files[1].exists()
    assert_bit_equal(again, reference)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]   # renames were atomic


def test_in_process_shards_resume_without_calling_the_builder(reference, tmp_path):
    builder = CountingBuilder()
    first = sweep(builder, GRID, SOLVER, predict="initial", shards=3, shard_dir=tmp_path)
    assert first.attrs["shards"] == 3 and builder.calls == 6      # a probe + one chunk a shard
    assert_bit_equal(first, reference)
    builder.calls = 0
    again = sweep(builder, GRID, SOLVER, predict="initial", shard_dir=tmp_path)   # count kept
    assert again.attrs["shards"] == 3 and again.attrs["shards_resumed"] == 3
    assert builder.calls == 0
    (tmp_path / shard_name(*shard_bounds(16, 3)[1])).unlink()
    again = sweep(builder, GRID, SOLVER, predict="initial", shard_dir=tmp_path)
    assert builder.calls == 2 and again.attrs["shards_resumed"] == 2
    assert_bit_equal(again, reference)


def test_concurrent_futures_executor(reference):
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        got = sweep(BUILD, GRID, SOLVER, predict="initial", executor=pool)
    assert got.attrs["shards"] == 2 and got.attrs["executor"] == "ThreadPoolExecutor"
    assert_bit_equal(got, reference)


def test_demo_on_a_running_scheduler_resumes(client, tmp_path):
    from demos import sweep as demo

    config = {"sweeps": ["dynamic_inversion"],
              "dynamic_inversion_grid": {"k_i": [0.5, 5.0], "alpha": [0.1, 1.0, 10.0]},
              "dynamic_inversion_solver": {"t1": 200.0}}
    plain = demo.run(config, tmp_path / "plain")
    summary = demo.run(config, tmp_path / "dask", scheduler=client.scheduler.address)
    shards = sorted((tmp_path / "dask" / "shards").glob("dynamic_inversion-*/shard-*.npz"))
    assert len(shards) == 2
    stamps = [p.stat().st_mtime_ns for p in shards]
    again = demo.run(config, tmp_path / "dask", scheduler=client.scheduler.address)
    assert [p.stat().st_mtime_ns for p in shards] == stamps          # resumed, not recomputed
    for entry in (summary, again):
        got = entry["sweeps"]["dynamic_inversion"]
        want = plain["sweeps"]["dynamic_inversion"]
        assert got["status_counts"] == want["status_counts"]
        assert got["stability_agreement"] == want["stability_agreement"]
    with pytest.raises(SystemExit):                                    # a usage error
        demo.main(["--out", str(tmp_path / "bad"), "--workers", "0"])


class NoCount:
    """An executor-like object that does not say how many workers it has."""

    def submit(self, fn, *args):
        future = cf.Future()
        future.set_result(fn(*args))
        return future


@pytest.mark.parametrize("kwargs, words", [
    ({"executor": object()}, ["executor: received object", "submit"]),
    ({"executor": "dask"}, ["executor: received str", "dask.distributed.Client"]),
    ({"shards": 0}, ["shards: received 0", "integer ≥ 1"]),
    ({"shards": 1.5}, ["shards: received 1.5", "integer ≥ 1"]),
    ({"shards": True}, ["shards: received True", "integer ≥ 1"]),
    ({"shards": "2"}, ["shards: received '2'", "integer ≥ 1"]),
    ({"executor": NoCount()}, ["shards: received None", "NoCount", "integer ≥ 1"]),
    ({"shard_dir": 3}, ["shard_dir: received int", "folder path"]),
])
def test_bad_executor_or_shards_raise_clear_errors(kwargs, words):
    with pytest.raises(ValueError) as err:
        sweep(BUILD, GRID, SOLVER, **kwargs)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_shards_of_another_sweep_are_refused(tmp_path):
    small = Grid({"k_i": [0.5, 5.0], "alpha": [0.3, 3.0]})
    sweep(BUILD, small, SOLVER, shards=2, shard_dir=tmp_path)
    with pytest.raises(ValueError, match="shard_dir: .* different sweep"):
        sweep(BUILD, small, dict(SOLVER, t1=100.0), shards=2, shard_dir=tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="shard_dir: received .*a file; expected a folder"):
        sweep(BUILD, small, SOLVER, shard_dir=tmp_path / "file")


def test_fork_pool_warns():
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as pool:
        with pytest.warns(RuntimeWarning, match="spawn"):
            check_executor(pool)
