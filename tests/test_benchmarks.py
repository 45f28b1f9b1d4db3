"""The benchmark scripts still run (tiny sizes; the figures themselves live in BENCHMARKS.md)."""
from benchmarks import di_batched


def test_di_batched_runs_and_agrees_with_the_per_replica_loop(capsys):
    result = di_batched.main(["--replicas", "4", "--steps", "20", "--repeats", "1",
                              "--loop-replicas", "2", "--dtype", "float64"])
    assert "speed-up, batched vs per-replica loop" in capsys.readouterr().out
    diff = result["max_abs_diff"]
    # one batched solve, one-at-a-time torchdiffeq and the hand-written loops agree in float64
    assert diff["batched_vs_per_replica"] < 1e-13
    assert diff["solve_vs_handwritten_flat"] == 0.0
    assert set(result["ratios"]) >= {"speedup_batched_vs_loop", "solve_over_handwritten"}
