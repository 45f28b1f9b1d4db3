"""Training target propagation in continuous time: iterated-inverse DTP and DDTP-linear on a
regression and a classification task, with their alignment to backprop and Gauss-Newton
(SPEC §4, §5).

    python -m demos.train_tp --out DIR [--config configs/train_tp.yaml]

Every seed is a replica (axis S): all seeds of a method train in one integration,
:func:`solvers.train`, minibatch k shown during ``[k·T, (k+1)·T)`` to a
:class:`circuits.TargetPropagation` with its weights in its state (``online_gamma = 0``). At
each jump the circuit is rebound to the weights there, its feedback learns on the batch with the
forward weights held still (:class:`circuits.LearnedFeedback`: ``iterated_dtp``'s mirrored
decoders by Bengio's auto-encoder rule, ``ddtp_linear``'s direct ``Q_ℓ`` by the difference
reconstruction rule, the first batch at the rule's fixed point), and the targets restart at the
forward pass and settle (``iterated_output`` or ``ddtp_linear``) while the online rule
``dW_ℓ/dt = η τ̇_ℓ n_{ℓ-1}ᵀ`` moves the weights: over a settle, η·DTP1 with the output nudged by
β. β stays small so that the targets remain differential (at β = 0.1 most iterated-inverse
settles drifted off); η β sets the step.

``dfa`` keeps a random Q (DDTP-linear without feedback learning, a reference), and ``backprop``
(:class:`circuits.Plastic` with :class:`circuits.ClosedForm`, one Euler step of size 1 per
batch) trains the same networks on the same minibatches (``ΔW = η_bp mean δ rᵀ``). Every
``eval_every`` presentations (in ``on_chunk``) the test loss (½‖y − ŷ‖², mean over examples),
the test accuracy (classification) and, on that presentation's batch, the angle between the
settled target change ``τ_ℓ − h_ℓ`` and backprop's and the Gauss-Newton target step
(:meth:`circuits.TargetPropagation.target_angles`) are recorded. ``diverged`` counts replicas
:func:`solvers.train` flagged (held at their last finite state).

Writes ``DIR/summary.json`` and one figure per task (``DIR/<task>.png``: test loss / accuracy
and the two angles against presentations, mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from circuits import (ClosedForm, ForwardNetwork, LearnedFeedback, Plastic, TargetPropagation,
                      feedback_learning)
from circuits import FeedbackLearning as Feedback      # the `feedback` section (demos.train too)
from solvers import minibatch_order
from solvers import train as integrate
from workbench import tasks

from .config import (Schema, Section, intra_op_threads, jsonable, load_config, output_dir,
                     read_yaml)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "train_tp.yaml"
METHODS = ("iterated_dtp", "ddtp_linear", "dfa", "backprop")
RULE = {"iterated_dtp": "iterated_output", "ddtp_linear": "ddtp_linear", "dfa": "dfa"}
KIND = {"iterated_dtp": "decoders", "ddtp_linear": "direct", "dfa": "direct"}


@dataclass(frozen=True)
class Training:
    """epochs, batch (examples per presentation), beta (the output nudge), eta (the online
    rule's rate), bp_eta (backprop's), update (``dtp1`` or ``local_loss``), seeds (replicas),
    order_seed (minibatch order), eval_every (presentations between evaluations)."""

    epochs: int = 4
    batch: int = 16
    beta: float = 0.01
    eta: float = 10.0
    bp_eta: float = 0.1
    update: str = "dtp1"
    seeds: int = 3
    order_seed: int = 0
    eval_every: int = 10

    def __post_init__(self):
        for name in ("epochs", "batch", "seeds", "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"training.{name}: received {v!r}, expected an integer ≥ 1")
        if self.update not in ("dtp1", "local_loss"):
            raise ValueError(f"training.update: received {self.update!r}, expected 'dtp1' or "
                             "'local_loss'")
        for name in ("beta", "eta", "bp_eta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"training.{name}: received {v!r}, expected a number > 0")


SCHEMA = Schema(sections={
    "regression": Section(tasks.teacher_regression, exclude=("dtype",)),
    "classification": Section(tasks.gaussian_mixture, exclude=("dtype",)),
    "network": Section(ForwardNetwork, exclude=("widths", "weights", "biases", "replicas",
                                                 "seed")),
    "training": Section(Training),
    "feedback": Section(Feedback),
    "targets": Section(integrate, exclude=("circuit", "y0", "stream", "presentations", "chunk",
                                           "start", "teacher_from", "teacher_dt", "diverged",
                                           "on_chunk", "progress")),
}, demo={
    "hidden": {"regression": [20, 10], "classification": [16, 16]},
    "methods": list(METHODS),
    "tasks": ["regression", "classification"],
    "tau": 1.0,                     # the targets' time constant T
    "threads": 1,
})


def load(config: str | Path | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config: ``config`` (path, mapping or None) over ``configs/train_tp.yaml``."""
    cfg = load_config(config, SCHEMA, defaults=read_yaml(DEFAULT_CONFIG))
    bad = [m for m in cfg["methods"] if m not in METHODS]
    if not isinstance(cfg["methods"], list) or not cfg["methods"] or bad:
        raise ValueError(f"config key 'methods': received {cfg['methods']!r}, expected a "
                         f"non-empty list drawn from {list(METHODS)}")
    if not isinstance(cfg["tasks"], list) or not cfg["tasks"] or any(
            t not in ("regression", "classification") for t in cfg["tasks"]):
        raise ValueError(f"config key 'tasks': received {cfg['tasks']!r}, expected a non-empty "
                         "list drawn from ['regression', 'classification']")
    hidden = cfg["hidden"]
    if not isinstance(hidden, Mapping) or set(hidden) - {"regression", "classification"} or any(
            not isinstance(h, list) or not h or not all(isinstance(n, int) and n > 0 for n in h)
            for h in hidden.values()):
        raise ValueError(f"config key 'hidden': received {hidden!r}, expected a mapping from "
                         "'regression' / 'classification' to lists of hidden widths")
    Training(**cfg["training"]), Feedback(**cfg["feedback"])          # check them up front
    return cfg


def initial_feedback(method: str, net: ForwardNetwork, fb: Feedback, seed: int):
    """:func:`circuits.initial_feedback` for a method name (kept for :mod:`demos.train`)."""
    return feedback_learning.initial_feedback(KIND[method], net, scale=fb.init_scale, seed=seed)


def learn_feedback(method: str, net: ForwardNetwork, x: torch.Tensor, current, fb: Feedback,
                   seed: int, to_fixed_point: bool = False):
    """:func:`circuits.learn_feedback` with a method name (kept for :mod:`demos.train`)."""
    return feedback_learning.learn_feedback(net, x, current, fb, seed=seed,
                                            duration=math.inf if to_fixed_point else None)


def evaluate(net: ForwardNetwork, task: tasks.Task) -> dict[str, np.ndarray]:
    """Per replica ``[S]``: the test loss and (classification) accuracy."""
    out = net.forward(task.x_test).r[-1]                                   # [S, M, n_L]
    res = {"test_loss": (0.5 * ((out - task.y_test.to(out)) ** 2).sum(-1).mean(-1)).cpu().numpy()}
    if task.classification:
        hits = out.argmax(-1) == task.labels_test.to(out.device)
        res["test_accuracy"] = hits.to(torch.float64).mean(-1).cpu().numpy()
    return res


def train(task: tasks.Task, widths: list[int], method: str, cfg: Mapping[str, Any],
          progress: bool = True) -> dict[str, Any]:
    """Train S = ``training.seeds`` replicas with ``method`` in one integration; returns the
    history."""
    tr, fb = Training(**cfg["training"]), Feedback(**cfg["feedback"])
    net = ForwardNetwork(widths, seed=list(range(tr.seeds)), **cfg["network"])
    order = minibatch_order(task.x_train.shape[0], tr.batch, tr.epochs, tr.order_seed)

    def stream(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return task.x_train[order[k]], task.y_train[order[k]]
    x0, t0 = stream(0)
    if method == "backprop":
        circuit = Plastic(ClosedForm("backprop"), net, x0, t0, eta=tr.bp_eta, gate="always")
        run = {"period": 1.0, "dt": 1.0}
    else:
        feedback = (initial_feedback("dfa", net, fb, seed=1) if method == "dfa"
                    else LearnedFeedback(KIND[method], net, fb, seed=1, noise_seed=1000))
        key = "decoders" if KIND[method] == "decoders" else "feedback"
        circuit = TargetPropagation(net, x0, t0, rule=RULE[method], beta=tr.beta,
                                    tau=cfg["tau"], online_gamma=0.0, online_eta=tr.eta,
                                    online_form=tr.update, **{key: feedback})
        run = dict(cfg["targets"])
    hist: dict[str, Any] = {"presentation": [0], "test_loss": [], "test_accuracy": [],
                            "angle_to_backprop": [], "angle_to_gauss_newton": []}
    for key, v in evaluate(net, task).items():
        hist[key].append(v)

    def on_chunk(k: int, y: Mapping[str, torch.Tensor], solution) -> None:
        hist["presentation"].append(k)
        for key, v in evaluate(circuit.network_of(y), task).items():
            hist[key].append(v)
        if method != "backprop":        # the settle of presentation k − 1, on its batch
            angles = circuit.target_angles(y, damping=fb.damping)
            hist["angle_to_backprop"].append(angles["backprop"].cpu().numpy())
            hist["angle_to_gauss_newton"].append(angles["gauss_newton"].cpu().numpy())
    result = integrate(circuit, circuit.initial_state(), stream, presentations=order.shape[0],
                       chunk=tr.eval_every, on_chunk=on_chunk, progress=progress, **run)
    hist["diverged"] = int(result.diverged.sum())
    hist["steps"] = result.stats["steps"]
    return hist


def statistics(values: list[np.ndarray]) -> dict[str, Any]:
    """Mean and std over replicas of the last entry, plus the per-seed values."""
    last = np.asarray(values[-1], dtype=float)
    return {"mean": float(last.mean()), "std": float(last.std()), "per_seed": last.tolist()}


def method_summary(hist: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"test_loss": statistics(hist["test_loss"]),
                           "initial_test_loss": statistics(hist["test_loss"][:1]),
                           "seconds": seconds, "diverged": hist["diverged"],
                           "steps": hist["steps"]}
    if hist["test_accuracy"]:
        out["test_accuracy"] = statistics(hist["test_accuracy"])
    for key in ("angle_to_backprop", "angle_to_gauss_newton"):
        if hist[key]:
            arr = np.asarray(hist[key], dtype=float)                   # [evaluations, S]
            out[key] = {"mean_over_training": float(arr.mean()), "first": float(arr[0].mean()),
                        "last": float(arr[-1].mean())}
    return out


TITLES = {"test_accuracy": "test accuracy", "test_loss": "test loss ½‖y − ŷ‖²",
          "angle_to_backprop": "∠(τ − h, backprop) [deg]",
          "angle_to_gauss_newton": "∠(τ − h, Gauss-Newton) [deg]"}


def figure(path: Path, name: str, histories: Mapping[str, Mapping[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    classification = any(h["test_accuracy"] for h in histories.values())
    keys = ["test_accuracy" if classification else "test_loss",
            "angle_to_backprop", "angle_to_gauss_newton"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for method, h in histories.items():
        for ax, key in zip(axes, keys):
            if h[key]:
                arr = np.asarray(h[key], dtype=float)
                x = np.asarray(h["presentation"])[-len(arr):]       # angles start after 0
                m, s = arr.mean(1), arr.std(1)
                ax.plot(x, m, label=method)
                ax.fill_between(x, m - s, m + s, alpha=0.2)
    for ax, key in zip(axes, keys):
        ax.set_title(TITLES[key])
        ax.set_xlabel("presentation (minibatch)")
        if key == "test_loss":
            ax.set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"{name}: continuous-time target propagation (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config: str | Path | Mapping[str, Any] | None, out: str | Path,
        progress: bool = True) -> dict[str, Any]:
    cfg = load(config)
    out = output_dir(out, "out")              # writable, checked before any work
    start = time.perf_counter()
    dtype = cfg["network"].get("dtype", torch.float64)
    summary: dict[str, Any] = {"tasks": {}}
    with intra_op_threads(cfg["threads"]):
        for kind in cfg["tasks"]:
            task = (tasks.teacher_regression if kind == "regression"
                    else tasks.gaussian_mixture)(**cfg[kind], dtype=dtype)
            widths = [task.inputs, *cfg["hidden"][kind], task.y_train.shape[1]]
            histories, methods = {}, {}
            for method in cfg["methods"]:
                t0 = time.perf_counter()
                histories[method] = train(task, widths, method, cfg, progress)
                methods[method] = method_summary(histories[method], time.perf_counter() - t0)
            figure(out / f"{kind}.png", f"{kind} ({task.name}, {widths})", histories)
            summary["tasks"][kind] = {"task": task.name, "widths": widths, "methods": methods}
    summary["seconds"] = time.perf_counter() - start
    summary["config"] = cfg
    summary = jsonable(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    return summary


def passed(summary: Mapping[str, Any]) -> bool:
    """Every method lowered the mean test loss on every task."""
    return all(m["test_loss"]["mean"] < m["initial_test_loss"]["mean"]
               for t in summary["tasks"].values() for m in t["methods"].values())


def report(summary: Mapping[str, Any]) -> str:
    lines = []
    for kind, t in summary["tasks"].items():
        lines.append(f"{kind} {t['widths']}:")
        for m, s in t["methods"].items():
            acc = s.get("test_accuracy")
            row = f"  {m:13s} test loss {s['initial_test_loss']['mean']:.4f} → " \
                  f"{s['test_loss']['mean']:.4f} ± {s['test_loss']['std']:.4f}"
            if acc:
                row += f", accuracy {acc['mean']:.3f} ± {acc['std']:.3f}"
            if "angle_to_backprop" in s:
                row += f", ∠BP {s['angle_to_backprop']['mean_over_training']:.1f}°, " \
                       f"∠GN {s['angle_to_gauss_newton']['mean_over_training']:.1f}°"
            lines.append(row + f"  ({s['seconds']:.1f} s)")
    lines.append(f"total {summary['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.train_tp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--config", default=None, help="YAML merged over "
                        "configs/train_tp.yaml")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:                                 # every check before any training: usage errors
        load(args.config)
        output_dir(args.out, "--out")
    except (OSError, ValueError, TypeError) as err:
        parser.error(str(err))
    summary = run(args.config, args.out, progress=not args.no_progress)
    print(report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
