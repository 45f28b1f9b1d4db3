"""Why a method learns slower than backprop, measured: per-layer alignment of its weight change
with backprop's over training, its effective learning rate, and the state its circuit carries
from one minibatch to the next.

    python -m demos.credit_alignment --config configs/mnist1d.yaml --out DIR
        [--methods dfc iterated_dtp ddtp_linear] [--epochs N] [--probes 4]

Each method trains as in the method table (:mod:`demos.train`: the same learning circuit,
integrator, stream and schedule, one integration of S seeds). At every epoch boundary, from the
state ``y`` reached there, each of ``probes`` fixed minibatches is presented once more in a side
integration (one presentation, the method's own settings; the run itself is not disturbed) and
compared with backprop's update on the same minibatch and weights (learning rate 1, the
configured loss):

* ``cosine_ℓ``: cosine between the method's ΔW_ℓ and backprop's −∂ℒ/∂W_ℓ (mean over probes;
  with a weight flow such as Adam, ΔW_ℓ is the family's own update under plain gradient flow,
  :meth:`circuits.Plastic.with_gradient_flow`, not the optimiser's step);
  ``cosine_gauss_newton_ℓ``: with the Gauss-Newton weight change (each layer's minimum-norm
  pre-activation change that produces the output error, λ = 1e-3: what DFC and DDTP-linear
  approximate);
* ``gain_ℓ``: ‖ΔW_ℓ‖ / ‖∂ℒ/∂W_ℓ‖, the effective learning rate per layer (backprop's own
  gain is its η);
* ``carried``: the norm of the circuit's own populations (controller, targets, errors ...) at
  the start of a presentation, relative to their norm at its end — what one minibatch leaves the
  next (0: each settles from rest).

Writes ``DIR/summary.json`` (per method: epochs, test accuracy, cosine and gain per layer,
carried state) and ``DIR/alignment.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from circuits.credit import gauss_newton, weight_updates  # noqa: E402
from circuits.registry import learning_circuit  # noqa: E402
from solvers import train as integrate  # noqa: E402
from workbench.plots import save_figure  # noqa: E402

from . import train  # noqa: E402
from .config import intra_op_threads, jsonable, run_cli  # noqa: E402
from .method_config import Training, network  # noqa: E402

DEFAULT_METHODS = ("dfc", "iterated_dtp", "ddtp_linear")


def _weights(y: Mapping[str, torch.Tensor], L: int) -> list[torch.Tensor]:
    return [y[f"W_{l}"] for l in range(1, L + 1)]


def references(cfg, task, y, x, target, output_activation: str
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Backprop's −∂ℒ/∂W_ℓ (mean over the minibatch, the configured loss) and the Gauss-Newton
    weight change (``credit.gauss_newton``, λ = 1e-3, per layer) at the weights of ``y``."""
    tr = Training(**cfg["training"])
    net = network(cfg, task, output_activation)
    net = net.with_parameters(_weights(y, net.L),
                              [y[f"b_{l}"] for l in range(1, net.L + 1)]
                              if net.biases is not None else None)
    bp = learning_circuit("backprop", net, x, target, eta=1.0, loss=tr.loss)
    dy = bp.vector_field(0.0, bp.initial_state())
    instant = bp.bound(bp.initial_state())
    gn = weight_updates(instant.forward, gauss_newton(net, instant.forward, instant.delta_L))
    return _weights(dy, net.L), gn


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per replica ``[S]`` cosine of two ``[S, ...]`` tensors."""
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)


def probe(setup, cfg, task, y, minibatches, kw) -> dict[str, Any]:
    """The method's update on each probe minibatch from ``y``, against backprop's."""
    L = len([k for k in y if k.startswith("W_")])
    fast = [k for k in y if not (k.startswith("W_") or k.startswith("b_"))]
    fast = [k for k in fast if not k.startswith("adam_")]
    circuit = setup.circuit
    if hasattr(circuit, "with_gradient_flow"):      # the family's update, not the optimiser's
        circuit, plain = circuit.with_gradient_flow()
        y = plain(y)
    cos, cos_gn, gain, carried = [], [], [], []
    for x, target in minibatches:
        after = integrate(circuit, y, lambda k: (x, target), presentations=1,
                          progress=False, **kw).y
        grad, gn = references(cfg, task, y, x, target, setup.spec.output_activation)
        change = [a - b for a, b in zip(_weights(after, L), _weights(y, L))]
        cos.append(torch.stack([_cos(c, g) for c, g in zip(change, grad)]))
        cos_gn.append(torch.stack([_cos(c, g) for c, g in zip(change, gn)]))
        gain.append(torch.stack([c.flatten(1).norm(dim=-1) / g.flatten(1).norm(dim=-1)
                                 for c, g in zip(change, grad)]))
        if fast:
            start = torch.sqrt(sum(y[k].flatten(1).pow(2).sum(-1) for k in fast))
            end = torch.sqrt(sum(after[k].flatten(1).pow(2).sum(-1) for k in fast))
            carried.append(start / end.clamp_min(1e-300))
    out = {"cosine": torch.stack(cos).mean(0).tolist(),          # [L][S]
           "cosine_gauss_newton": torch.stack(cos_gn).mean(0).tolist(),
           "gain": torch.stack(gain).mean(0).tolist()}
    out["carried"] = torch.stack(carried).mean(0).tolist() if carried else None
    return out


def run_method(cfg, task, method: str, epochs: int, probes: int) -> dict[str, Any]:
    setup = train.build(cfg, task, method)
    s, per_epoch = setup.spec, setup.per_epoch
    P = min(setup.presentations, epochs * per_epoch)
    kw = dict(period=s.period, dt=s.dt, method=s.integrator, teacher_from=s.teacher_from,
              relinearise_every=s.relinearise_every)
    minibatches = [setup.stream(k) for k in range(probes)]
    record: dict[str, Any] = {"epoch": [], "test_accuracy": [], "cosine": [],
                              "cosine_gauss_newton": [], "gain": [], "carried": []}

    def measure(k: int, y) -> None:
        record["epoch"].append(k / per_epoch)
        record["test_accuracy"].append(train.accuracy(setup, y, task).tolist())
        for key, value in probe(setup, cfg, task, y, minibatches, kw).items():
            record[key].append(value)

    measure(0, setup.y0)
    integrate(setup.circuit, setup.y0, setup.stream, presentations=P, chunk=per_epoch,
              on_chunk=lambda k, y, sol: measure(k, y), progress=False, **kw)
    return record


def figure(out: Path, results: Mapping[str, Any]) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, (method, r) in enumerate(results.items()):
        colour = f"C{i}"
        ep = r["epoch"]
        axes[0].plot(ep, [sum(a) / len(a) for a in r["test_accuracy"]], color=colour,
                     label=method)
        L = len(r["cosine"][0])
        for l in range(L):
            style = ["-", "--", ":", "-."][min(l, 3)]
            axes[1].plot(ep, [sum(c[l]) / len(c[l]) for c in r["cosine"]], style,
                         color=colour, label=f"{method} W_{l + 1}")
            axes[2].plot(ep, [sum(g[l]) / len(g[l]) for g in r["gain"]], style, color=colour,
                         label=f"{method} W_{l + 1}")
    axes[0].set(xlabel="epoch", ylabel="test accuracy (mean over seeds)")
    axes[1].set(xlabel="epoch", ylabel="cosine with backprop's ΔW (per layer)", ylim=(-0.2, 1.05))
    axes[2].set(xlabel="epoch", ylabel="‖ΔW‖ / ‖∂ℒ/∂W‖ (effective rate)", yscale="log")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out / "alignment.png")


def run(cfg_path: str | Path | Mapping[str, Any], out: str | Path, methods=DEFAULT_METHODS,
        epochs: int | None = None, probes: int = 4) -> dict[str, Any]:
    cfg = train.load(cfg_path)
    for m in methods:
        if m not in train.METHODS:
            raise ValueError(f"methods: received {m!r}, expected names from "
                             f"{list(train.METHODS)}")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes: received {probes!r}, expected an integer ≥ 1")
    tr = Training(**cfg["training"])
    epochs = tr.epochs if epochs is None else epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= tr.epochs:
        raise ValueError(f"epochs: received {epochs!r}, expected an integer in 1..{tr.epochs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    task = train.load_task(cfg)
    with intra_op_threads(cfg.get("threads", 1)):
        results = {m: run_method(cfg, task, m, epochs, probes) for m in methods}
    path = figure(out, results)
    summary = jsonable({"task": cfg["task"], "loss": tr.loss, "methods": results,
                        "figure": path.name, "seconds": time.perf_counter() - start})
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    return summary


def report(summary: Mapping[str, Any]) -> str:
    lines = []
    for m, r in summary["methods"].items():
        last = {k: r[k][-1] for k in ("cosine", "gain", "test_accuracy")}
        acc = sum(last["test_accuracy"]) / len(last["test_accuracy"])
        cos = ", ".join(f"W_{l + 1} {sum(c) / len(c):.2f}" for l, c in enumerate(last["cosine"]))
        gain = ", ".join(f"{sum(g) / len(g):.2g}" for g in last["gain"])
        lines.append(f"{m:<14} epoch {r['epoch'][-1]:g}: accuracy {acc:.3f}; cosine with "
                     f"backprop {cos}; gain {gain}")
    lines.append(f"{summary['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m demos.credit_alignment",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--probes", type=int, default=4)
    return run_cli(parser, argv, lambda a: a,
                   lambda a, out: run(a.config, out, a.methods, a.epochs, a.probes), report)


if __name__ == "__main__":
    main()
    sys.exit(0)
