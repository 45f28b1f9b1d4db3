"""Does ``torch.compile`` pay on a CPU? One 10-step Euler chunk of the benchmark's DI circuit
(S = 1024 replicas, 3-layer tanh network, float32), eager against compiled.

    python -m benchmarks.compile_chunk [--device cpu] [--chunks 100]

Prints the time per step of each, their ratio, the one-off compile time and the number of steps
after which compiling breaks even. ``solve`` does not compile (yet): this measures whether it
should.
"""
from __future__ import annotations

import argparse
import time

import torch

from circuits import DynamicInversion, ForwardNetwork
from solvers import Layout

STEPS_PER_CHUNK = 10


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_chunk")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunks", type=int, default=100, help="timed chunks of 10 steps")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    net = ForwardNetwork([20, 30, 30, 10], seed=0, dtype=torch.float32, device=device)
    x, target = torch.randn(1, 20, generator=g), torch.randn(1, 10, generator=g)
    k_i, alpha = torch.meshgrid(torch.logspace(-1, 1, 32), torch.logspace(-3, 0, 32),
                                indexing="ij")
    circuit = DynamicInversion(net, x, target, alpha=alpha.flatten(), k_i=k_i.flatten())
    y0 = circuit.initial_state()
    layout = Layout(y0)
    dt = 0.01

    def chunk(y: torch.Tensor) -> torch.Tensor:
        for _ in range(STEPS_PER_CHUNK):
            y = torch.add(y, layout.pack(circuit.vector_field(0.0, layout.unpack(y))), alpha=dt)
        return y

    def per_step(fn) -> float:
        y = layout.pack(y0)
        for _ in range(3):
            y = fn(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.chunks):
            y = fn(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / (args.chunks * STEPS_PER_CHUNK)

    eager = per_step(chunk)
    start = time.perf_counter()
    compiled_chunk = torch.compile(chunk)
    compiled_chunk(layout.pack(y0))
    compile_seconds = time.perf_counter() - start
    compiled = per_step(compiled_chunk)
    saved = eager - compiled
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"eager    {eager * 1e6:8.1f} µs/step")
    print(f"compiled {compiled * 1e6:8.1f} µs/step   ({eager / compiled:.2f}× faster)")
    print(f"compile  {compile_seconds:8.1f} s once;  break-even after "
          + (f"{compile_seconds / saved:,.0f} steps" if saved > 0 else "never"))


if __name__ == "__main__":
    main()
