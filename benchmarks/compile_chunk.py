"""Does ``solve(compile=True)`` pay? The benchmark's DI circuit (S = 1024 replicas, 3-layer tanh
network) stepped by forward Euler through ``solve``, eager against compiled chunks
(:func:`torch.compile` of ``check_every`` steps; a CUDA graph on a GPU).

    python -m benchmarks.compile_chunk [--device cpu] [--dtype float32] [--steps 2000]

Prints and returns the time per step of each, their ratio, the one-off compile time (the first
compiled solve minus an eager one) and the number of steps after which compiling breaks even;
the two final states must agree to rounding (fused kernels may reorder float32 sums: 5e-5 on
this circuit; bit for bit on the float64 DI circuit of ``tests``' size). ``solve`` compiles only
when asked (``compile=True``): on a CPU the break-even is ~10⁵ steps and more.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from circuits import DynamicInversion, ForwardNetwork
from solvers import solve

from . import finish, prepare


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_chunk")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--steps", type=int, default=2000, help="Euler steps per timed solve")
    parser.add_argument("--check-every", type=int, default=10, help="steps per compiled chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    device, dtype = prepare(args)
    g = torch.Generator().manual_seed(0)
    net = ForwardNetwork([20, 30, 30, 10], seed=0, dtype=dtype, device=device)
    x, target = torch.randn(1, 20, generator=g), torch.randn(1, 10, generator=g)
    k_i, alpha = torch.meshgrid(torch.logspace(-1, 1, 32), torch.logspace(-3, 0, 32),
                                indexing="ij")
    circuit = DynamicInversion(net, x, target, alpha=alpha.flatten(), k_i=k_i.flatten())
    y0 = circuit.initial_state()
    dt = 0.01
    T = args.steps * dt

    def run(compiled: bool):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        sol = solve(circuit, y0, 0.0, T, dt=dt, steady_state=False, progress=False,
                    check_every=args.check_every, compile=compiled)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, sol

    first_eager, _ = run(False)
    first_compiled, _ = run(True)            # compiles (and recompiles once for a float t)
    second_compiled, _ = run(True)
    eager = statistics.median(run(False)[0] for _ in range(args.repeats))
    compiled = statistics.median(run(True)[0] for _ in range(args.repeats))
    diff = max(float((a - b).abs().max()) for a, b in zip(run(False)[1].y1.values(),
                                                          run(True)[1].y1.values()))
    compile_seconds = first_compiled + second_compiled - 2 * compiled
    per_eager, per_compiled = eager / args.steps, compiled / args.steps
    saved = per_eager - per_compiled
    report = {
        "device": str(device), "dtype": args.dtype, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "replicas": circuit.S, "steps": args.steps,
        "check_every": args.check_every,
        "us_per_step": {"eager": per_eager * 1e6, "compiled": per_compiled * 1e6},
        "speedup": per_eager / per_compiled, "compile_seconds": compile_seconds,
        "break_even_steps": compile_seconds / saved if saved > 0 else None,
        "max_abs_difference": diff, "first_eager_seconds": first_eager,
    }
    print(f"device {device}, {args.dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, S = {circuit.S}")
    print(f"eager    {per_eager * 1e6:8.1f} µs/step")
    print(f"compiled {per_compiled * 1e6:8.1f} µs/step   ({per_eager / per_compiled:.2f}× faster)")
    print(f"compile  {compile_seconds:8.1f} s once;  break-even after "
          + (f"{compile_seconds / saved:,.0f} steps" if saved > 0 else "never")
          + f";  max |compiled − eager| = {diff:.1e}")
    return finish(report, args.out)


if __name__ == "__main__":
    main()
