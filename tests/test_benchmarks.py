"""The benchmark scripts still run (tiny sizes; the figures themselves live in BENCHMARKS.md)."""
import json
import math

import pytest

from benchmarks import di_batched, pc_cost


def test_di_batched_runs_and_agrees_with_the_per_replica_loop(capsys):
    result = di_batched.main(["--replicas", "4", "--steps", "20", "--repeats", "1",
                              "--loop-replicas", "2", "--dtype", "float64"])
    assert "speed-up, batched vs per-replica loop" in capsys.readouterr().out
    diff = result["max_abs_diff"]
    # one batched solve, one-at-a-time torchdiffeq and the hand-written loops agree in float64
    assert diff["batched_vs_per_replica"] < 1e-13
    assert diff["solve_vs_handwritten_flat"] == 0.0
    assert set(result["ratios"]) >= {"speedup_batched_vs_loop", "solve_over_handwritten"}


def test_pc_cost_runs_and_z_il_updates_like_backprop(capsys, tmp_path):
    out = tmp_path / "pc.json"
    result = pc_cost.main(["--widths", "4", "6", "5", "3", "--batch", "2", "--examples", "2",
                           "--repeats", "1", "--dtype", "float64", "--max-time", "20",
                           "--out", str(out)])
    assert "× backprop" in capsys.readouterr().out
    ratios = result["ratios"]
    assert set(ratios) == {f"{rule}_over_backprop_B{b}" for rule in ("z_il", "fa_z_il", "il")
                           for b in (2,)}
    assert all(math.isfinite(r) and r > 0 for r in ratios.values())
    gaps = result["max_abs_update_diff"]["float64"]
    assert gaps["z_il"] <= 1e-10 and gaps["fa_z_il"] <= 1e-10      # both are exactly backprop
    assert gaps["il"] > 1e-6                                         # plain IL is not
    assert json.loads(out.read_text())["ratios"] == ratios


def test_train_cost_writes_the_contract(tmp_path):
    """One epoch of backprop, simulated DI and Z-IL on digits: the summary has the keys users
    script against, DI (exponential partitioned steps) learns, and Z-IL equals backprop."""
    from benchmarks import train_cost
    train_cost.main(["--out", str(tmp_path), "--methods", "backprop", "di", "z_il",
                     "--epochs", "1", "--repeats", "1"])
    import json
    s = json.loads((tmp_path / "summary.json").read_text())
    assert {"methods", "machine"} <= set(s)
    for name in ("backprop", "di", "z_il"):
        m = s["methods"][name]
        assert {"seconds_per_epoch", "ratio_to_backprop", "test_accuracy",
                "eval_ratio_to_vector_field"} <= set(m)
        assert m["test_accuracy"] > 0.6 and m["seconds_per_epoch"] > 0
    assert s["methods"]["backprop"]["ratio_to_backprop"] == 1.0
    assert s["methods"]["di"]["eval_ratio_to_vector_field"] > 1.0
    assert s["methods"]["di"]["steps_per_presentation"] == 10
    # Z-IL in one integration is SGD: the same accuracy as backprop on every seed
    assert s["methods"]["z_il"]["test_accuracy_per_seed"] == pytest.approx(
        s["methods"]["backprop"]["test_accuracy_per_seed"], abs=1e-12)
