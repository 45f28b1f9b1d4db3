"""Batched dynamic inversion: one ``solve`` over S replicas against S separate integrations.

A layer-wise DI circuit (:class:`circuits.DynamicInversion`) on a 3-layer tanh network, one input
example, S = 1024 replicas on a 32 × 32 grid of (k_i, α). Three measurements, all in one run:

1. **batched vs per-replica loop**: ``solve(..., method="euler", steady_state=False)`` on the
   S-replica circuit, against the same S circuits built one at a time (S = 1 each) and integrated
   with ``torchdiffeq.odeint(..., method="euler", options={"step_size": dt})`` on the flat state.
   Same number of Euler steps on both sides. ``--loop-replicas N`` times an evenly spaced subset
   of N circuits and extrapolates linearly to S (said so in the output).
2. **solve vs a hand-written loop**: the same S-replica circuit stepped by a plain Python loop
   ``d = circuit.vector_field(t, y); y = {k: y[k] + dt * d[k] for k in y}``; the ratio of the time
   per step. A flat-state variant (pack / unpack with :class:`solvers.Layout`, one ``torch.add``)
   is timed too, which separates the cost of the flat representation from ``solve``'s own
   bookkeeping (freezing, stopping checks, recording).
3. **agreement**: max |batched − per-replica| over the replicas integrated one at a time.

``solve`` with ``steady_state=True`` is timed as well, as information (it stops early, so it does
a different number of steps).

Run from the repository root::

    python -m benchmarks.di_batched                       # defaults: S = 1024, 1000 steps
    python -m benchmarks.di_batched --device cuda --out di.json

Timings are wall-clock medians of ``--repeats`` runs after one warm-up run; the solve and
hand-written runs are interleaved so that both see the same machine conditions.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from typing import Callable

import torch
import torchdiffeq

from circuits import DynamicInversion, ForwardNetwork
from solvers import Layout, solve

from . import finish, prepare

DTYPES = {"float32": torch.float32, "float64": torch.float64}
GOAL_SPEEDUP = 50.0        # batched ≥ 50× faster than the per-replica loop
GOAL_PER_STEP = 1.5        # solve's time per step within 1.5× of the hand-written loop


# -- machine ---------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: torch.device) -> dict:
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchdiffeq": getattr(torchdiffeq, "__version__", "unknown"),
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# -- set-up ----------------------------------------------------------------------------------------

def make_problem(widths: list[int], dtype: torch.dtype, device: torch.device, k_i_range, alpha_range,
                 grid: int):
    """Network, one example, target and the flattened (k_i, α) grid (k_i slow, α fast)."""
    net = ForwardNetwork(widths, activation="tanh", seed=0, dtype=dtype, device=device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, widths[0], generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    target = torch.randn(1, widths[-1], generator=g, dtype=torch.float64).to(device=device,
                                                                             dtype=dtype)
    k_i = torch.logspace(math.log10(k_i_range[0]), math.log10(k_i_range[1]), grid,
                         dtype=torch.float64)
    alpha = torch.logspace(math.log10(alpha_range[0]), math.log10(alpha_range[1]), grid,
                           dtype=torch.float64)
    K, A = torch.meshgrid(k_i, alpha, indexing="ij")
    return (net, x, target, K.reshape(-1).to(device=device, dtype=dtype),
            A.reshape(-1).to(device=device, dtype=dtype))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


# -- the three integrators -------------------------------------------------------------------------

def run_solve(circuit, y0, steps: int, dt: float, steady_state: bool):
    return solve(circuit, y0, 0.0, steps * dt, dt=dt, method="euler",
                 steady_state=steady_state, progress=False)


def run_handwritten(circuit, y0, steps: int, dt: float):
    """The plain loop on the named state: what one would write without ``solve``."""
    y = dict(y0)
    for i in range(steps):
        d = circuit.vector_field(i * dt, y)
        y = {k: y[k] + dt * d[k] for k in y}
    return y


def run_handwritten_flat(circuit, y0, steps: int, dt: float):
    """The plain loop on ``solve``'s flat state: pack / unpack and one add per step."""
    layout = Layout(y0)
    y = layout.pack(y0)
    for i in range(steps):
        d = layout.pack(circuit.vector_field(i * dt, layout.unpack(y)))
        y = torch.add(y, d, alpha=dt)
    return layout.unpack(y)


def run_torchdiffeq(circuit, steps: int, dt: float, device: torch.device,
                    calls: list[int] | None = None) -> torch.Tensor:
    """One S = 1 circuit with torchdiffeq's fixed-step Euler; returns the final flat state.
    ``calls`` (a one-element list), if given, counts the vector-field evaluations."""
    y0 = circuit.initial_state()
    layout = Layout(y0)

    def f(t, y):
        if calls is not None:
            calls[0] += 1
        return layout.pack(circuit.vector_field(t, layout.unpack(y)))

    # float64 times (torchdiffeq's advice), so that its grid i·dt is the same as solve's.
    span = torch.tensor([0.0, steps * dt], dtype=torch.float64, device=device)
    final = torchdiffeq.odeint(f, layout.pack(y0), span, method="euler",
                               options={"step_size": dt})[-1]
    return layout.pack_by_replica(layout.unpack(final))      # [1, D]


# -- the benchmark ---------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.di_batched", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=1024,
                   help="S; must be a perfect square (a k_i × α grid), default 1024 = 32 × 32")
    p.add_argument("--steps", type=int, default=1000, help="Euler steps (default 1000)")
    p.add_argument("--dt", type=float, default=0.01, help="step size (default 0.01)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--widths", type=int, nargs="+", default=[20, 30, 30, 10],
                   help="network widths n_0 .. n_3 (default 20 30 30 10)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed repeats of solve and of the hand-written loops (median reported)")
    p.add_argument("--loop-replicas", type=int, default=None,
                   help="circuits integrated one at a time; the loop time is extrapolated "
                        "linearly to S when fewer than S (default: all S on cpu, 64 on cuda)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    grid = math.isqrt(args.replicas)
    if args.replicas < 1 or grid * grid != args.replicas:
        p.error(f"--replicas: received {args.replicas}, expected a perfect square ≥ 1 "
                "(the replicas form a k_i × α grid)")
    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: received {getattr(args, name)}, expected an integer ≥ 1")
    if not (math.isfinite(args.dt) and args.dt > 0):
        p.error(f"--dt: received {args.dt}, expected a finite number > 0")
    if len(args.widths) != 4 or min(args.widths) < 1:
        p.error(f"--widths: received {args.widths}, expected four positive widths (3 layers)")
    if args.loop_replicas is not None and not 1 <= args.loop_replicas <= args.replicas:
        p.error(f"--loop-replicas: received {args.loop_replicas}, expected 1 .. {args.replicas}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads: received {args.threads}, expected an integer ≥ 1")
    return args


def fmt_s(x: float) -> str:
    if x >= 1.0:
        return f"{x:.3f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.3f} ms"
    return f"{x * 1e6:.1f} µs"


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, dtype = prepare(args)
    S, steps, dt = args.replicas, args.steps, args.dt
    grid = math.isqrt(S)
    n_loop = args.loop_replicas if args.loop_replicas is not None else (
        S if device.type == "cpu" else min(S, 64))
    info = machine_info(device)
    load_before = load_average()

    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), torchdiffeq {info['torchdiffeq']}, "
          f"device {info['device']}" + (f" ({info['gpu']})" if "gpu" in info else ""))
    print(f"problem: DynamicInversion on ForwardNetwork({args.widths}, tanh), B = 1, "
          f"S = {S} = {grid} k_i × {grid} α (k_i ∈ [0.1, 10], α ∈ [1e-3, 1], log-spaced), "
          f"{args.dtype}, Euler, {steps} steps of dt = {dt} (T = {steps * dt:g})")
    if load_before is not None:
        print(f"load average before: {load_before}")

    net, x, target, K, A = make_problem(args.widths, dtype, device, (0.1, 10.0), (1e-3, 1.0),
                                        grid)

    # -- build the batched circuit ---------------------------------------------------------------
    t_build_batched, circuit = timed(lambda: DynamicInversion(net, x, target, alpha=A, k_i=K),
                                     device)
    y0 = circuit.initial_state()
    D = Layout(y0).size

    # -- solve vs hand-written loops (interleaved repeats after one warm-up each) ----------------
    print(f"timing solve and the hand-written loops: 1 warm-up + {args.repeats} repeats each ...",
          flush=True)
    runners = {
        "solve": lambda: run_solve(circuit, y0, steps, dt, steady_state=False),
        "handwritten": lambda: run_handwritten(circuit, y0, steps, dt),
        "handwritten_flat": lambda: run_handwritten_flat(circuit, y0, steps, dt),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    results: dict[str, object] = {}
    for name, fn in runners.items():
        _, results[name] = timed(fn, device)
    for _ in range(args.repeats):
        for name, fn in runners.items():
            t, results[name] = timed(fn, device)
            times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    sol = results["solve"]
    counts = sol.counts()
    if sol.stats["steps"] != steps:
        print(f"WARNING: solve took {sol.stats['steps']} steps, expected {steps}")
    if counts["diverged"]:
        print(f"WARNING: {counts['diverged']} replicas diverged (frozen by solve); the "
              "agreement check below compares frozen states — lower --dt")

    y_solve = sol.y1
    diff_hand = max((results["handwritten"][k] - y_solve[k]).abs().max().item() for k in y_solve)
    diff_flat = max((results["handwritten_flat"][k] - y_solve[k]).abs().max().item()
                    for k in y_solve)
    scale = max(v.abs().max().item() for v in y_solve.values())

    # -- steady_state on (information) -----------------------------------------------------------
    run_solve(circuit, y0, steps, dt, steady_state=True)        # warm-up
    ss_times, ss_sol = [], None
    for _ in range(args.repeats):
        t, ss_sol = timed(lambda: run_solve(circuit, y0, steps, dt, steady_state=True), device)
        ss_times.append(t)
    ss_med = statistics.median(ss_times)

    # -- per-replica loop with torchdiffeq -------------------------------------------------------
    idx = sorted({round(i * (S - 1) / max(n_loop - 1, 1)) for i in range(n_loop)})
    n_loop = len(idx)
    subset = n_loop < S
    print(f"timing the per-replica loop: {n_loop} of {S} circuits one at a time with "
          f"torchdiffeq euler" + (" (extrapolated linearly to S)" if subset else "") + " ...",
          flush=True)
    warm = DynamicInversion(net, x, target, alpha=A[idx[0]:idx[0] + 1], k_i=K[idx[0]:idx[0] + 1])
    calls = [0]
    run_torchdiffeq(warm, steps, dt, device, calls)           # warm-up, counts the steps
    if calls[0] != steps:
        print(f"WARNING: torchdiffeq took {calls[0]} Euler steps, expected {steps} "
              "(its grid is ceil(T / dt) steps; pick dt so that T / dt is an integer)")
    build_times, int_times, finals = [], [], []
    loop_start = time.perf_counter()
    for s in idx:
        tb, c1 = timed(lambda: DynamicInversion(net, x, target, alpha=A[s:s + 1],
                                                k_i=K[s:s + 1]), device)
        ti, y1 = timed(lambda: run_torchdiffeq(c1, steps, dt, device), device)
        build_times.append(tb)
        int_times.append(ti)
        finals.append(y1)
    loop_wall = time.perf_counter() - loop_start
    per_replica_median = statistics.median(int_times)
    per_replica_mean = statistics.fmean(int_times)
    loop_measured = sum(int_times)
    loop_total = per_replica_median * S if subset else loop_measured
    loop_total_with_build = (loop_total + statistics.median(build_times) * S if subset
                             else loop_measured + sum(build_times))

    flat_solve = Layout(y0).pack_by_replica(y_solve)[idx]
    flat_loop = torch.cat(finals, dim=0)
    diff_loop = (flat_solve - flat_loop).abs().max().item()
    # the same, relative to each replica's own max |y| (float32 rounding grows with |y|)
    rel_loop = ((flat_solve - flat_loop).abs().amax(dim=1)
                / flat_solve.abs().amax(dim=1).clamp_min(torch.finfo(dtype).tiny)).max().item()
    load_after = load_average()

    speedup = loop_total / med["solve"]
    speedup_with_build = loop_total_with_build / (med["solve"] + t_build_batched)
    per_step = {k: v / steps for k, v in med.items()}
    ratio_hand = med["solve"] / med["handwritten"]
    ratio_flat = med["solve"] / med["handwritten_flat"]
    ratio_hand_best = best["solve"] / best["handwritten"]

    # -- report ----------------------------------------------------------------------------------
    rows = [
        ("batched solve, S replicas, steady_state=False", med["solve"], per_step["solve"]),
        ("hand-written loop (dict state), S replicas", med["handwritten"],
         per_step["handwritten"]),
        ("hand-written loop (flat state), S replicas", med["handwritten_flat"],
         per_step["handwritten_flat"]),
        (f"batched solve, steady_state=True ({ss_sol.stats['steps']} steps)", ss_med,
         ss_med / max(ss_sol.stats["steps"], 1)),
        (f"per-replica torchdiffeq loop, {'extrapolated to ' if subset else ''}S circuits",
         loop_total, loop_total / steps),
        ("  one S = 1 circuit (median)", per_replica_median, per_replica_median / steps),
    ]
    print()
    print(f"{'measurement':<58} {'total':>12} {'per step':>12}")
    print("-" * 84)
    for name, total, step in rows:
        print(f"{name:<58} {fmt_s(total):>12} {fmt_s(step):>12}")
    print("-" * 84)
    print(f"build: batched circuit {fmt_s(t_build_batched)}, one S = 1 circuit "
          f"{fmt_s(statistics.median(build_times))} (median)")
    if subset:
        print(f"per-replica loop: {n_loop} of {S} circuits timed ({fmt_s(loop_measured)}); "
              f"S × median = {fmt_s(loop_total)} (S × mean would be "
              f"{fmt_s(per_replica_mean * S)})")
    else:
        print(f"per-replica loop: all {S} circuits timed, integration {fmt_s(loop_measured)} "
              f"(wall incl. builds {fmt_s(loop_wall)})")
    print(f"steady_state=True: {ss_sol.counts()} after {ss_sol.stats['steps']} steps"
          + ("" if ss_sol.stats["steps"] < steps else
             " (none stopped early, so this is the fixed-step run plus the steady-state test)"))
    print(f"final status (steady_state=False): {counts}")
    print()
    print(f"speed-up, batched vs per-replica loop (integration only): {speedup:8.1f}×   "
          f"goal ≥ {GOAL_SPEEDUP:g}×: {'met' if speedup >= GOAL_SPEEDUP else 'MISSED'}")
    print(f"speed-up, including building the circuits:                 {speedup_with_build:8.1f}×")
    print(f"solve / hand-written per step (dict state, median):        {ratio_hand:8.3f}    "
          f"goal ≤ {GOAL_PER_STEP:g}: {'met' if ratio_hand <= GOAL_PER_STEP else 'MISSED'}")
    print(f"solve / hand-written per step (dict state, best of runs):  {ratio_hand_best:8.3f}")
    print(f"solve / hand-written per step (flat state, median):        {ratio_flat:8.3f}")
    print(f"max |batched − per-replica| over {n_loop} circuits:          {diff_loop:.3e}  "
          f"(max |y| = {scale:.3g}; relative to each replica's max |y|: {rel_loop:.2e})")
    print(f"max |solve − hand-written (dict)|: {diff_hand:.3e}; "
          f"max |solve − hand-written (flat)|: {diff_flat:.3e}")
    if load_after is not None:
        print(f"load average after: {load_after}")

    report = {
        "machine": info,
        "load_average": {"before": load_before, "after": load_after},
        "config": {"replicas": S, "grid": [grid, grid], "steps": steps, "dt": dt,
                   "T": steps * dt, "dtype": args.dtype, "widths": args.widths,
                   "state_size_per_replica": D, "repeats": args.repeats,
                   "loop_replicas": n_loop, "loop_extrapolated": subset,
                   "k_i_range": [0.1, 10.0], "alpha_range": [1e-3, 1.0]},
        "seconds": {
            "solve": times["solve"], "handwritten": times["handwritten"],
            "handwritten_flat": times["handwritten_flat"],
            "solve_steady_state": ss_times,
            "solve_median": med["solve"], "handwritten_median": med["handwritten"],
            "handwritten_flat_median": med["handwritten_flat"],
            "solve_steady_state_median": ss_med,
            "loop_per_replica_median": per_replica_median,
            "loop_per_replica_mean": per_replica_mean,
            "loop_measured": loop_measured, "loop_total": loop_total,
            "loop_total_with_build": loop_total_with_build,
            "build_batched": t_build_batched,
            "build_per_replica_median": statistics.median(build_times),
        },
        "per_step_seconds": per_step,
        "steady_state": {"steps": ss_sol.stats["steps"], "counts": ss_sol.counts()},
        "status_counts": counts,
        "torchdiffeq_steps": calls[0],
        "ratios": {"speedup_batched_vs_loop": speedup,
                   "speedup_including_build": speedup_with_build,
                   "solve_over_handwritten": ratio_hand,
                   "solve_over_handwritten_best": ratio_hand_best,
                   "solve_over_handwritten_flat": ratio_flat},
        "max_abs_diff": {"batched_vs_per_replica": diff_loop,
                         "batched_vs_per_replica_relative": rel_loop,
                         "solve_vs_handwritten": diff_hand,
                         "solve_vs_handwritten_flat": diff_flat, "max_abs_state": scale},
        "goals": {"speedup_ge_50": speedup >= GOAL_SPEEDUP,
                  "per_step_within_1.5": ratio_hand <= GOAL_PER_STEP},
    }
    return finish(report, args.out)


if __name__ == "__main__":
    main()
