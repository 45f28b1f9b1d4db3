"""Parameter sweeps on the replica axis (solvers.sweep) and the sweep demo."""
import json

import numpy as np
import pytest
import torch

from circuits import DynamicInversion, ForwardNetwork, replica_network
from solvers import solve
from solvers.labelled import LegacyFormatWarning
from solvers.solve import Status
from solvers.sweep import Grid, LabelledArray, SweepResult, sweep

WIDTHS = [4, 8, 6, 3]


def _example(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 4, generator=g, dtype=torch.float64),
            torch.randn(1, 3, generator=g, dtype=torch.float64))


def _random_feedback(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 6, generator=g, dtype=torch.float64) / 6 ** 0.5,
            torch.randn(6, 3, generator=g, dtype=torch.float64) / 3 ** 0.5]


NET = ForwardNetwork(WIDTHS, activation="tanh", seed=0)
X, Y = _example()
B_RANDOM = _random_feedback()


def build_random(points):
    return DynamicInversion(NET, X, Y, feedback=B_RANDOM, **points)


def build_transpose(points):
    return DynamicInversion(NET, X, Y, **points)


SOLVER = dict(t0=0.0, t1=400.0, dt=0.1, method="euler", atol=1e-10, rtol=1e-8)
GRID = Grid({"k_i": np.logspace(-1, 2, 6), "alpha": np.logspace(-0.5, 1.5, 5)})


@pytest.fixture(scope="module")
def random_sweep():
    return sweep(build_random, GRID, SOLVER, predict="initial")


def test_grid_points_and_reshape_round_trip():
    grid = Grid({"k_i": [1.0, 2.0, 3.0], "alpha": [0.1, 0.2], "seed": [5, 6]})
    assert grid.dims == ("k_i", "alpha", "seed") and grid.shape == (3, 2, 2) and len(grid) == 12
    pts = grid.points()
    assert pts["seed"].dtype == torch.int64 and pts["alpha"].dtype == torch.float64
    # C order: the last axis varies fastest
    assert pts["k_i"].tolist() == [1.0] * 4 + [2.0] * 4 + [3.0] * 4
    assert pts["seed"].tolist()[:4] == [5, 6, 5, 6]
    cube = grid.reshape(pts["alpha"].numpy())
    assert cube.shape == (3, 2, 2) and (cube[:, 1, :] == 0.2).all()
    assert np.array_equal(grid.flatten(cube), pts["alpha"].numpy())
    assert grid.point(7) == {"k_i": 2.0, "alpha": 0.2, "seed": 6}
    part = grid.points(5, 9)
    assert part["k_i"].tolist() == pts["k_i"].tolist()[5:9]


def test_labelled_array_and_result_save_load_exact(tmp_path, random_sweep):
    arr = LabelledArray(np.random.default_rng(0).normal(size=(3, 2)), ("k_i", "alpha"),
                        {"k_i": np.array([1.0, 2.0, 3.0]), "alpha": np.array([0.1, 1 / 3])},
                        name="x", attrs={"note": "α"})
    back = LabelledArray.load(arr.save(tmp_path / "a.npz"))
    assert back.equals(arr) and back.name == "x" and back.attrs == {"note": "α"}
    assert back.sel(k_i=2.0).data.tolist() == arr.data[1].tolist()
    with pytest.warns(LegacyFormatWarning):
        loaded = SweepResult.load(random_sweep.save(tmp_path / "r.npz"))
    assert loaded.equals(random_sweep) and loaded.attrs == json.loads(
        json.dumps(random_sweep.attrs))
    assert np.array_equal(loaded["status"].coords["alpha"],
                          GRID.coords["alpha"])


def test_chunked_equals_unchunked_exactly(random_sweep):
    chunked = sweep(build_random, GRID, SOLVER, predict="initial", chunk=7)
    assert chunked.attrs["chunks"] == 5 and random_sweep.attrs["chunks"] == 1
    assert chunked.equals(random_sweep)
    # a tiny memory budget splits the grid automatically
    per = random_sweep.attrs["bytes_per_replica"]
    budget = sweep(build_random, GRID, SOLVER, predict="initial", max_bytes=4 * per)
    assert budget.attrs["chunk"] == 4 and budget.attrs["chunks"] == 8
    assert budget.equals(random_sweep)


def test_di_sweep_final_error_matches_closed_form():
    grid = Grid({"k_i": [0.5, 1.0, 2.0], "alpha": [0.05, 0.2, 1.0], "k_p": [0.0, 0.5]})
    solver = dict(SOLVER, t1=3000.0, atol=1e-13, rtol=1e-11)
    result = sweep(build_transpose, grid, solver)
    assert (result["status"].data == int(Status.CONVERGED)).all()   # B = −Wᵀ: always stable
    assert result["error"].data.max() < 1e-6
    # the same per replica, by hand
    circuit = build_transpose(grid.points())
    sol = solve(circuit, circuit.initial_state(), **solver)
    star = circuit.steady_state()
    for s in range(grid.size):
        num = sum(float((sol.y1[k][s] - star[k][s]).norm() ** 2) for k in star) ** 0.5
        den = sum(float(star[k][s].norm() ** 2) for k in star) ** 0.5
        assert abs(grid.flatten(result["error"].data)[s] - num / den) <= 1e-12


def test_predicted_and_simulated_status_agree(random_sweep):
    status = random_sweep["status"].data
    assert (status == int(Status.CONVERGED)).any() and (status == int(Status.DIVERGED)).any()
    agreement = random_sweep.agreement()
    assert agreement["stability_agreement"] == 1.0, agreement
    assert agreement["predicted_unstable_by_cause"]["continuous"] > 0
    assert agreement["predicted_unstable_by_cause"]["step"] > 0      # alpha dt > 2: Euler's limit


def test_diverged_replica_is_flagged_never_nan(random_sweep):
    diverged = random_sweep["status"].data == int(Status.DIVERGED)
    assert diverged.any()
    for name in ("t_stop", "error", "spectral_abscissa"):
        assert np.isfinite(random_sweep[name].data).all(), name
    assert np.isnan(random_sweep["settle_time"].data[diverged]).all()
    assert np.isfinite(random_sweep["settle_time"].data[~diverged & (
        random_sweep["status"].data == int(Status.CONVERGED))]).all()
    assert random_sweep.attrs["nonfinite"] == {}


def test_seed_and_weight_scale_axes_give_per_replica_networks():
    net = replica_network(WIDTHS, torch.tensor([3, 4, 3]), torch.tensor([1.0, 1.0, 0.5]))
    for s, (seed, scale) in enumerate([(3, 1.0), (4, 1.0), (3, 0.5)]):
        ref = ForwardNetwork(WIDTHS, seed=seed)
        for w, r in zip(net.weights, ref.weights):
            assert torch.equal(w[s], r[0] * scale)


@pytest.mark.parametrize("axes, words", [
    ({"alpha": []}, ["'alpha'", "empty", "at least one"]),
    ({"gain": [1.0]}, ["'gain'", "unknown parameter", "k_i"]),
    ({"alpha": [0.1, float("nan")]}, ["'alpha'", "nan", "finite"]),
    ({"k_i": [1.0, float("inf")]}, ["'k_i'", "inf", "finite"]),
    ({"alpha": [-1.0]}, ["'alpha'", "-1.0", "≥ 0"]),
    ({"seed": [1.5]}, ["'seed'", "1.5", "integer"]),
    ({}, ["grid", "non-empty"]),
])
def test_bad_grid_inputs_raise_clear_errors(axes, words):
    with pytest.raises(ValueError) as err:
        Grid(axes)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_bad_sweep_inputs_raise_clear_errors():
    grid = Grid({"alpha": [0.1]})
    with pytest.raises(ValueError, match="chunk: received 0"):
        sweep(build_transpose, grid, SOLVER, chunk=0)
    with pytest.raises(ValueError, match="missing 't1'"):
        sweep(build_transpose, grid, {"t0": 0.0, "dt": 0.1})
    with pytest.raises(ValueError, match="predict: received 'always'"):
        sweep(build_transpose, grid, SOLVER, predict="always")
    with pytest.raises(ValueError, match="flat: received shape"):
        grid.reshape(np.zeros(3))


def test_demo_quick_run_writes_summary_and_figures(tmp_path):
    from demos import sweep as demo

    config = {
        "dynamic_inversion_grid": {"k_i": {"logspace": [-1, 2, 5]},
                                   "alpha": {"logspace": [-0.5, 1.5, 4]}},
        "dynamic_inversion_solver": {"t1": 300.0},
        "feedback_control_grid": {"k_p": {"linspace": [0, 1.5, 4]},
                                  "alpha": {"logspace": [-0.5, 2, 3]}},
        "feedback_control_solver": {"t1": 100.0},
    }
    summary = demo.run(config, tmp_path)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert set(on_disk["sweeps"]) == {"dynamic_inversion", "feedback_control"}
    for name, entry in on_disk["sweeps"].items():
        assert {"grid_points", "stability_agreement", "seconds"} <= set(entry)
        assert entry["grid_points"] == {"dynamic_inversion": 20, "feedback_control": 12}[name]
        assert 0.0 <= entry["stability_agreement"] <= 1.0
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        loaded = SweepResult.load(tmp_path / f"{name}.nc")
        assert loaded["status"].shape == tuple(g["n"] for g in entry["grid"].values())
        with pytest.warns(LegacyFormatWarning):                  # the older format, still read
            assert SweepResult.load(tmp_path / f"{name}.npz").equals(loaded)
    assert summary["sweeps"]["dynamic_inversion"]["stability_agreement"] == on_disk["sweeps"][
        "dynamic_inversion"]["stability_agreement"]
    with pytest.raises(ValueError, match="'gain'"):
        demo.run({"dynamic_inversion_grid": {"gain": [1.0]}, "sweeps": ["dynamic_inversion"]},
                 tmp_path / "bad")


def test_seed_and_scale_grid_through_the_demo_builder():
    from demos import sweep as demo

    config = demo.load({"dynamic_inversion": {"feedback": "transpose", "alpha": 0.1},
                        "dynamic_inversion_grid": {"seed": [0, 1, 2],
                                                   "weight_scale": [0.5, 1.0]}})
    grid = demo.make_grid("dynamic_inversion", config)
    build = demo.builder("dynamic_inversion", config)
    solver = dict(SOLVER, t1=3000.0, atol=1e-13, rtol=1e-11)
    whole = sweep(build, grid, solver)
    assert (whole["status"].data == int(Status.CONVERGED)).all()
    assert whole["error"].data.max() < 1e-6
    assert sweep(build, grid, solver, chunk=2).equals(whole)
    # replica (seed 2, scale 0.5) is the network drawn from seed 2 with weights halved
    circuit = build(grid.points(4, 6))
    ref = ForwardNetwork(WIDTHS, seed=2)
    assert torch.equal(circuit.network.weights[0][0], ref.weights[0][0] * 0.5)
