"""Labelled results as xarray (solvers.labelled): sweeps, solutions and training runs as
``xarray.Dataset``, sweeps saved as netCDF that opens without this project."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")

from circuits import ClosedForm, DynamicInversion, ForwardNetwork, Plastic   # noqa: E402
from solvers import solve, train                                            # noqa: E402
from solvers.labelled import LegacyFormatWarning, decode_attrs              # noqa: E402
from solvers.solve import Status                                            # noqa: E402
from solvers.sweep import Grid, SweepResult, sweep                          # noqa: E402

F64 = torch.float64
NET = ForwardNetwork([4, 8, 6, 3], activation="tanh", seed=0)
_g = torch.Generator().manual_seed(1)
X = torch.randn(1, 4, generator=_g, dtype=F64)
Y = torch.randn(1, 3, generator=_g, dtype=F64)
B = [torch.randn(8, 6, generator=_g, dtype=F64) / 6 ** 0.5,
     torch.randn(6, 3, generator=_g, dtype=F64) / 3 ** 0.5]
GRID = Grid({"k_i": [0.1, 1.0, 10.0], "alpha": [0.03, 0.3, 3.0, 30.0]})
SOLVER = dict(t0=0.0, t1=300.0, dt=0.1, method="euler", atol=1e-10, rtol=1e-8)


def build(points):
    return DynamicInversion(NET, X, Y, feedback=B, **points)


def final_norm(circuit, sol):
    """A custom measure: ‖δ_1‖ per replica at the end."""
    return sol.y1["delta_1"].flatten(1).norm(dim=1)


@pytest.fixture(scope="module")
def result():
    return sweep(build, GRID, SOLVER, predict="initial", measures={"final_norm": final_norm})


def test_sweep_to_xarray_labels_grid_and_arrays(result):
    ds = result.to_xarray()
    assert tuple(ds.sizes) == ("k_i", "alpha") and dict(ds.sizes) == {"k_i": 3, "alpha": 4}
    for d in GRID.dims:                                       # coordinates: the grid values
        assert np.array_equal(ds[d].values, GRID.coords[d])
    assert set(ds.data_vars) == set(result.arrays) >= {
        "status", "t_stop", "settle_time", "error", "predicted_status", "spectral_abscissa",
        "spectral_radius", "final_norm"}
    for name, arr in result.arrays.items():                   # data: the SweepResult arrays
        assert ds[name].dims == arr.dims and ds[name].dtype == arr.data.dtype
        assert np.array_equal(ds[name].values, arr.data, equal_nan=True), name
    assert ds["status"].attrs["flag_meanings"].split() == [s.name.lower() for s in Status]
    assert ds["status"].attrs["flag_values"].tolist() == [int(s) for s in Status]
    assert "flag_meanings" in ds["predicted_status"].attrs
    # label-based selection picks the grid point
    point = ds["t_stop"].sel(k_i=1.0, alpha=0.3).item()
    assert point == result["t_stop"].data[1, 1]
    conv = ds["status"] == int(Status.CONVERGED)
    assert bool(ds["settle_time"].where(conv).notnull().sum() == conv.sum())
    assert decode_attrs(ds.attrs, drop=("sweep_arrays", "index_dims", "format")) == json.loads(
        json.dumps(result.attrs))


def test_netcdf_round_trip_is_exact(result, tmp_path):
    path = result.save(tmp_path / "di.nc")
    assert path.suffix == ".nc" and not list(tmp_path.glob(".*tmp"))     # atomic: no leftovers
    back = SweepResult.load(path)
    assert back.equals(result)                                 # dims, coords, dtype, data
    assert list(back.arrays) == list(result.arrays)
    assert back.attrs == json.loads(json.dumps(result.attrs))
    assert back["status"].data.dtype == np.int8
    assert np.isnan(back["settle_time"].data).sum() == np.isnan(
        result["settle_time"].data).sum() > 0
    assert back.agreement() == result.agreement()


def test_netcdf_opens_in_a_fresh_python_without_the_project(result, tmp_path):
    path = result.save(tmp_path / "di.nc")
    code = (
        "import json, sys, xarray as xr\n"
        f"ds = xr.open_dataset({str(path)!r})\n"
        "assert not any(m.split('.')[0] in ('solvers', 'circuits', 'demos') for m in sys.modules)\n"
        "print(json.dumps({'k_i': ds['k_i'].values.tolist(), 'alpha': ds['alpha'].values.tolist(),"
        " 't_stop': ds['t_stop'].values.tolist(), 'status': ds['status'].values.tolist(),"
        " 'meanings': ds['status'].attrs['flag_meanings'], 'method': ds.attrs['method']}))\n")
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["k_i"] == GRID.coords["k_i"].tolist()
    assert got["alpha"] == GRID.coords["alpha"].tolist()
    assert got["t_stop"] == result["t_stop"].data.tolist()
    assert got["status"] == result["status"].data.tolist()
    assert got["meanings"] == "reached_t1 converged diverged" and got["method"] == "euler"


def test_old_npz_still_loads_with_a_note(result, tmp_path):
    path = result.save(tmp_path / "di.npz")
    with pytest.warns(LegacyFormatWarning, match="netCDF"):
        back = SweepResult.load(path)
    assert back.equals(result)


def test_solution_to_xarray_has_time_replica_and_unit_dims():
    circuit = build(GRID.points(0, 4))
    sol = solve(circuit, circuit.initial_state(), 0.0, 20.0, dt=0.5, save_every=10,
                steady_state=False)
    ds = sol.to_xarray()
    assert np.array_equal(ds["time"].values, sol.ts.numpy())
    assert ds["replica"].values.tolist() == [0, 1, 2, 3]
    for name, traj in sol.ys.items():                           # [T, S, B, n]
        assert ds[name].dims == ("time", "replica", "example", f"{name}_unit")
        assert np.array_equal(ds[name].values, traj.numpy())
        assert np.array_equal(ds[f"{name}_final"].values, sol.y1[name].numpy())
    assert ds["status"].values.tolist() == sol.status.tolist()
    assert np.array_equal(ds["t_stop"].values, sol.t_stop.numpy())
    assert ds["status"].attrs["flag_meanings"].startswith("reached_t1")
    last = ds["delta_1"].isel(time=-1)
    assert np.array_equal(last.values, sol.ys["delta_1"][-1].numpy())


def test_training_result_to_xarray_with_a_history():
    stream = lambda k: (X, Y)
    net = ForwardNetwork([4, 6, 5, 3], activation="tanh", seed=[1, 2])   # S = 2
    bp = Plastic(ClosedForm("backprop"), net, X, Y, eta=0.1)
    losses = {}
    loss = lambda y: bp.outputs(y, X).sub(Y).pow(2).mean((1, 2))

    run = train(bp, bp.initial_state(), stream, period=1.0, presentations=6, dt=1.0, chunk=2,
                on_chunk=lambda k, y, sol: losses.update({k: {"loss": loss(y)}}))
    ds = run.to_xarray(history=losses, epoch_size=4)
    assert ds["presentation"].values.tolist() == [2, 4, 6]
    assert ds["epoch"].values.tolist() == [0, 1, 1]
    assert ds["loss"].dims == ("presentation", "replica")
    assert np.array_equal(ds["loss"].sel(presentation=6).values, loss(run.y).numpy())
    assert ds.attrs["presentations"] == 6 and ds["diverged"].values.tolist() == [False, False]
    for name, value in run.y.items():
        assert ds[name].dims == ("replica", f"{name}_row", f"{name}_col")      # W_l, b_l
        assert np.array_equal(ds[name].values, value.numpy())
    with pytest.raises(ValueError, match="epoch_size: received 0"):
        run.to_xarray(history=losses, epoch_size=0)


def test_demo_writes_netcdf_next_to_npz(tmp_path):
    from demos import sweep as demo

    config = {"sweeps": ["dynamic_inversion"],
              "dynamic_inversion_grid": {"k_i": [0.5, 5.0], "alpha": [0.1, 1.0, 10.0]},
              "dynamic_inversion_solver": {"t1": 200.0}}
    summary = demo.run(config, tmp_path)
    entry = summary["sweeps"]["dynamic_inversion"]
    assert entry["netcdf"] == "dynamic_inversion.nc" and entry["data"] == "dynamic_inversion.npz"
    with pytest.warns(LegacyFormatWarning):
        old = SweepResult.load(tmp_path / "dynamic_inversion.npz")
    new = SweepResult.load(tmp_path / entry["netcdf"])
    assert new.equals(old) and new.counts() == entry["status_counts"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["sweeps"]["dynamic_inversion"]["netcdf"] == "dynamic_inversion.nc"
