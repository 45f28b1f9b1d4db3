"""The settle race runs in quick mode, writes its contract, and its numba Euler loops agree with
solve(method="euler") (the figures themselves are not checked: quick mode is not a benchmark)."""
import json
import math

import pytest

pytest.importorskip("numba", reason="numba is not installed (optional extra 'bench'); the settle "
                                    "race's hand-written loops need it")
pytest.importorskip("torchode", reason="torchode is not installed (optional extra 'bench')")


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    import torch

    from benchmarks import settle_race
    out = tmp_path_factory.mktemp("settle_race")
    threads = torch.get_num_threads()
    try:
        returned = settle_race.main(["--out", str(out), "--quick"])
    finally:
        torch.set_num_threads(threads)            # the race sets one thread for itself
    written = json.loads((out / "summary.json").read_text())
    assert written["sweeps"].keys() == returned["sweeps"].keys()
    return written


def test_summary_has_the_contract_keys(summary):
    assert set(summary["sweeps"]) == {"di_leak_1024", "dfc_tanh"}       # --quick skips the large
    m = summary["machine"]
    assert {"cpu", "cores", "torch", "numba", "torchode", "torchdiffeq", "threads"} <= set(m)
    assert m["threads"] == 1 and m["torch_threads"] == 1
    for name, sweep in summary["sweeps"].items():
        ew, tt = sweep["equal_work"], sweep["to_tolerance"]
        assert ew["ratio_vs_numba"] > 0 and math.isfinite(ew["ratio_vs_numba"])
        for key in ("ratio_vs_numba", "ratio_vs_torchdiffeq", "ratio_vs_torchode"):
            assert tt[key] > 0 and math.isfinite(tt[key]), (name, key)
        contestants = {"numba_stop", "solve_euler", "solve_fastest", "torchode", "torchdiffeq"}
        assert set(tt["worst_relative_error"]) == contestants
        assert set(tt["seconds"]) == contestants
        assert tt["torchdiffeq"]["extrapolated"] is True
        kind = "di" if name.startswith("di") else "dfc"
        kwargs = tt["solve_kwargs"]
        assert kwargs["atol"] == sweep["tolerances"]["atol"]
        assert kwargs["rtol"] == sweep["tolerances"]["rtol"] > 0
        winner, tried = tt["solve_fastest"], tt["solve_candidates"]
        assert set(tried) == set(summary["fastest"][kind])
        assert {k: kwargs[k] for k in summary["fastest"][kind][winner]
                if summary["fastest"][kind][winner][k] != "near_bound"} == {
            k: v for k, v in summary["fastest"][kind][winner].items() if v != "near_bound"}
        assert tried[winner]["meets_goal"] and tried[winner]["worst_relative_error"] <= 1e-6
        assert tried[winner]["seconds"] == min(v["seconds"] for v in tried.values()
                                               if v["meets_goal"])
        assert tt["seconds"]["solve_fastest"] == tried[winner]["seconds"]
        steps = tt["steps"]["numba_stop"]
        assert 0 < steps["median"] <= steps["max"] <= sweep["tolerances"]["max_steps"]


def test_numba_agrees_with_solve_euler(summary):
    for name, sweep in summary["sweeps"].items():
        ew = sweep["equal_work"]
        assert ew["steps"] == 1000
        assert ew["same_status"] and ew["agree"]
        assert ew["max_relative_difference"] < 1e-9, name
        assert ew["diverged"] == {"numba_fixed": 0, "solve": 0}, name
        # with the stopping rule too: the same stop step per replica, the same final state
        stop = sweep["to_tolerance"]["numba_stop_vs_solve_euler"]
        assert stop["same_stop_steps"] and stop["max_relative_difference"] < 1e-9, name
    # the authors' step order (controller first) is another trajectory to the same fixed point
    cf = summary["sweeps"]["di_leak_1024"]["equal_work"]["controller_first"]
    assert cf["relative_difference_to_plain_euler_after_20_steps"] > 1e-6
    assert cf["relative_error_to_star_after_N_steps"] < 1e-9


def test_every_contestant_settles_to_the_goal(summary):
    for name, sweep in summary["sweeps"].items():
        tt = sweep["to_tolerance"]
        for contestant, err in tt["worst_relative_error"].items():
            assert err is not None and err < 1e-6, (name, contestant, err)
            assert tt["diverged"][contestant] == 0, (name, contestant)
            assert tt["not_converged"][contestant] == 0, (name, contestant)
