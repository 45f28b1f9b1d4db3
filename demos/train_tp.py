"""Training target propagation in continuous time: iterated-inverse DTP and DDTP-linear on a
regression and a classification task, with their alignment to backprop and Gauss-Newton
(SPEC §4, §5).

    python -m demos.train_tp --out DIR [--config configs/train_tp.yaml]

Every seed is one replica of the replica axis S, so all seeds of a method train in the same
integrations. Each minibatch is one presentation of two phases, each one :func:`solvers.solve`;
the weights are state and run on from one presentation to the next:

* ``feedback``: the feedback parameters learn on the batch while the forward weights hold still
  — for ``iterated_dtp`` mirrored decoders ``g_ℓ(h) = V_ℓ φ_ℓ(h) + c_ℓ`` by Bengio's auto-encoder
  rule (:class:`circuits.ReconstructionLearning`, noise-corrupted inputs), for ``ddtp_linear``
  the direct feedback ``Q_ℓ`` by the difference reconstruction rule
  (:class:`circuits.DifferenceReconstruction`). Both start on the first batch from their
  rule's closed-form fixed point (``feedback.warm_start``).
* ``targets``: :class:`circuits.TargetPropagation` — ``iterated_output`` (Bengio's iterated
  inverse, correction on the decoder output) or ``ddtp_linear`` — with the online rule
  ``dW_ℓ/dt = η τ̇_ℓ n_{ℓ-1}ᵀ`` (γ = 0) applied *while the targets settle*; over a settle this is
  η·DTP1 with the output nudged by β. β stays small so that targets remain differential (an
  exact inverse through a saturating layer exists only for small nudges: at β = 0.1 most
  iterated-inverse settles drifted off and were flagged), and η β sets the step.

``dfa`` keeps its random Q (DDTP-linear without feedback learning, a reference), and
``backprop`` trains the same networks on the same minibatches (``ΔW = η_bp mean δ rᵀ``). Every
``eval_every`` presentations the test loss (½‖y − ŷ‖², mean over examples), the test accuracy
(classification) and, on that presentation's batch, the angle between the settled target change
``τ_ℓ − h_ℓ`` and backprop's ``−β∂ℒ/∂h_ℓ`` and the Gauss-Newton target step
``β J̄ᵀ(J̄J̄ᵀ + λI)⁻¹δ_L`` (hidden layers concatenated, per replica) are recorded. A replica whose
settle diverges keeps its last finite state and is counted in ``diverged``; a settle that hits
its horizon unsettled is counted in ``unsettled``.

Writes ``DIR/summary.json`` and one figure per task (``DIR/<task>.png``: test loss / accuracy
and the two angles against presentations, mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from circuits import (DifferenceReconstruction, ForwardNetwork, MirroredDecoder,
                      ReconstructionLearning, TargetPropagation, credit)
from solvers import Phase, solve
from solvers.solve import Status

from . import tasks
from .config import Schema, Section, intra_op_threads, jsonable, load_config, read_yaml
from solvers import minibatch_order

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "train_tp.yaml"
METHODS = ("iterated_dtp", "ddtp_linear", "dfa", "backprop")
RULE = {"iterated_dtp": "iterated_output", "ddtp_linear": "ddtp_linear", "dfa": "dfa"}


@dataclass(frozen=True)
class Training:
    """epochs, batch (examples per presentation), beta (the output nudge = the learning rate of
    the target methods), bp_eta (backprop's rate), seeds (replicas), order_seed (minibatch
    order), eval_every (presentations between evaluations)."""

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


@dataclass(frozen=True)
class Feedback:
    """The feedback phase: duration, dt (rk4), eta (rate), warm_start (on the first batch, start
    from the rule's closed-form fixed point, the limit of a long warm-up), noise (σ of the
    decoders' input corruption), sigma (DRL's injected noise), damping (λ: DRL's damping and the
    decoders' weight decay), init_scale (std of the initial random decoders / feedback)."""

    duration: float = 2.0
    dt: float = 0.1
    eta: float = 2.0
    warm_start: bool = True
    noise: float = 0.05
    sigma: float = 0.01
    damping: float = 0.01
    init_scale: float = 0.1

    def __post_init__(self):
        for name in ("duration", "dt", "eta", "sigma", "damping", "init_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"feedback.{name}: received {v!r}, expected a number > 0")


SCHEMA = Schema(sections={
    "regression": Section(tasks.teacher_regression, exclude=("dtype",)),
    "classification": Section(tasks.gaussian_mixture, exclude=("dtype",)),
    "network": Section(ForwardNetwork, exclude=("widths", "weights", "biases", "replicas",
                                                 "seed")),
    "training": Section(Training),
    "feedback": Section(Feedback),
    "targets": Section(Phase, exclude=("name", "teacher", "save_every")),
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
    return cfg


# -- one presentation -------------------------------------------------------------------------

def network(widths: list[int], cfg: Mapping[str, Any], weights, biases) -> ForwardNetwork:
    args = {k: v for k, v in cfg["network"].items() if k not in ("init", "scale", "bias")}
    return ForwardNetwork(widths, weights=weights, biases=biases, **args)


def initial_feedback(method: str, net: ForwardNetwork, fb: Feedback, seed: int):
    g = torch.Generator().manual_seed(seed)
    S, w = net.replicas, net.widths

    def randn(*shape):
        return (fb.init_scale * torch.randn(S, *shape, generator=g, dtype=torch.float64)).to(
            dtype=net.dtype, device=net.device)
    if method == "iterated_dtp":
        return [MirroredDecoder(randn(w[l - 1], w[l]), randn(1, w[l - 1]), net.activation(l))
                for l in range(2, net.L + 1)]
    return [randn(n, w[-1]) for n in w[1:-1]]


def learn_feedback(method: str, net: ForwardNetwork, x: torch.Tensor, current, fb: Feedback,
                   seed: int, to_fixed_point: bool = False):
    """The feedback phase: decoders (or Q's) after ``fb.duration`` of their learning rule on
    batch ``x``, or at the rule's fixed point (``to_fixed_point``)."""
    if method == "iterated_dtp":
        c = ReconstructionLearning(net, x, current, eta=fb.eta, decay=fb.damping,
                                   noise=fb.noise, seed=seed)
    else:
        c = DifferenceReconstruction(net, x, sigma=fb.sigma, damping=fb.damping, eta=fb.eta,
                                     feedback=current, seed=seed)
    y = c.fixed_point() if to_fixed_point else solve(
        c, c.initial_state(), 0.0, fb.duration, dt=fb.dt, method="rk4", steady_state=False).y1
    return c.decoders(y) if method == "iterated_dtp" else c.feedback(y)


def angles(circuit: TargetPropagation, tau: list[torch.Tensor], damping: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per replica ``[S]``: the angle (degrees) between the hidden target changes and backprop's
    and Gauss-Newton's target steps (batch and hidden layers flattened together)."""
    net, fwd = circuit.network, circuit.fwd
    change = [t - h for t, h in zip(tau[:-1], circuit.h[:-1])]
    bp = credit.backprop(net, fwd, circuit.delta_L)[:-1]
    gn = credit.gauss_newton(net, fwd, circuit.delta_L, damping=damping)[:-1]
    return credit.angle(change, bp), credit.angle(change, gn)


def evaluate(net: ForwardNetwork, task: tasks.Task) -> dict[str, np.ndarray]:
    out = net.forward(task.x_test).r[-1]                                   # [S, M, n_L]
    y = task.y_test.to(out)
    res = {"test_loss": (0.5 * ((out - y) ** 2).sum(-1).mean(-1)).cpu().numpy()}
    if task.classification:
        hits = out.argmax(-1) == task.labels_test.to(out.device)
        res["test_accuracy"] = hits.to(torch.float64).mean(-1).cpu().numpy()
    return res


# -- a whole run --------------------------------------------------------------------------------

def train(task: tasks.Task, widths: list[int], method: str, cfg: Mapping[str, Any],
          progress: bool = True) -> dict[str, Any]:
    """Train S = ``training.seeds`` replicas with ``method``; returns the history."""
    tr, fb = Training(**cfg["training"]), Feedback(**cfg["feedback"])
    phase = Phase("targets", teacher=True, **cfg["targets"])
    net0 = ForwardNetwork(widths, seed=list(range(tr.seeds)), **cfg["network"])
    W, b = [w.clone() for w in net0.weights], [c.clone() for c in net0.biases]
    order = minibatch_order(task.x_train.shape[0], tr.batch, tr.epochs, tr.order_seed)
    feedback = None if method == "backprop" else initial_feedback(method, net0, fb, seed=1)
    hist: dict[str, Any] = {"presentation": [], "test_loss": [], "test_accuracy": [],
                            "angle_to_backprop": [], "angle_to_gauss_newton": [],
                            "diverged": 0, "unsettled": 0, "settle_steps": []}
    hist.update({k: [v] for k, v in evaluate(net0, task).items()})
    hist["presentation"].append(0)
    from tqdm.auto import tqdm
    bar = tqdm(range(order.shape[0]), desc=f"{task.name} {method}", disable=not progress,
               leave=False)
    for k in bar:
        x, y = task.x_train[order[k]], task.y_train[order[k]]
        net = network(widths, cfg, W, b)
        if method == "backprop":
            fwd = net.forward(x)
            deltas = credit.backprop(net, fwd, fwd.dphi[-1] * (net.output_like(y) - fwd.r[-1]))
            B = x.shape[0]
            W = [w + tr.bp_eta * d / B for w, d in zip(W, credit.weight_updates(fwd, deltas))]
            b = [c + tr.bp_eta * d.mean(-2, keepdim=True) for c, d in zip(b, deltas)]
        else:
            if method != "dfa":
                feedback = learn_feedback(method, net, x, feedback, fb, seed=1000 + k,
                                          to_fixed_point=fb.warm_start and k == 0)
            kw = {"decoders": feedback} if method == "iterated_dtp" else {"feedback": feedback}
            circuit = TargetPropagation(net, x, y, rule=RULE[method], beta=tr.beta,
                                        tau=cfg["tau"], online_gamma=0.0, online_eta=tr.eta,
                                        online_form=tr.update, **kw)
            sol = solve(circuit, circuit.initial_state(), 0.0, phase.duration, dt=phase.dt,
                        method=phase.method, steady_state=phase.steady_state, atol=phase.atol,
                        rtol=phase.rtol)
            hist["diverged"] += int((sol.status == Status.DIVERGED).sum())
            if phase.steady_state:
                hist["unsettled"] += int((sol.status == Status.REACHED_T1).sum())
            hist["settle_steps"].append(sol.stats["steps"])
            W = [sol.y1[f"W_{l}"] for l in range(1, net.L + 1)]
            b = [sol.y1[f"b_{l}"] for l in range(1, net.L + 1)]
        if (k + 1) % tr.eval_every == 0 or k + 1 == order.shape[0]:
            hist["presentation"].append(k + 1)
            for key, v in evaluate(network(widths, cfg, W, b), task).items():
                hist[key].append(v)
            if method != "backprop":
                a_bp, a_gn = angles(circuit, circuit.targets(sol.y1), fb.damping)
                hist["angle_to_backprop"].append(a_bp.cpu().numpy())
                hist["angle_to_gauss_newton"].append(a_gn.cpu().numpy())
    return hist


def statistics(values: list[np.ndarray]) -> dict[str, Any]:
    """Mean and std over replicas of the last entry, plus the per-seed values."""
    last = np.asarray(values[-1], dtype=float)
    return {"mean": float(last.mean()), "std": float(last.std()), "per_seed": last.tolist()}


def method_summary(hist: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"test_loss": statistics(hist["test_loss"]),
                           "initial_test_loss": statistics(hist["test_loss"][:1]),
                           "seconds": seconds, "diverged": hist["diverged"],
                           "unsettled": hist["unsettled"]}
    if hist["test_accuracy"]:
        out["test_accuracy"] = statistics(hist["test_accuracy"])
    for key in ("angle_to_backprop", "angle_to_gauss_newton"):
        if hist[key]:
            arr = np.asarray(hist[key], dtype=float)                   # [evaluations, S]
            out[key] = {"mean_over_training": float(arr.mean()), "first": float(arr[0].mean()),
                        "last": float(arr[-1].mean())}
    if hist["settle_steps"]:
        out["mean_settle_steps"] = float(np.mean(hist["settle_steps"]))
    return out


def figure(path: Path, name: str, histories: Mapping[str, Mapping[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    classification = any(h["test_accuracy"] for h in histories.values())
    keys = (["test_accuracy"] if classification else ["test_loss"]) + \
        ["angle_to_backprop", "angle_to_gauss_newton"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for method, h in histories.items():
        for ax, key in zip(axes, keys):
            if not h[key]:
                continue
            arr = np.asarray(h[key], dtype=float)
            x = np.asarray(h["presentation"])
            x = x if len(x) == len(arr) else x[1:]
            m, s = arr.mean(1), arr.std(1)
            ax.plot(x, m, label=method)
            ax.fill_between(x, m - s, m + s, alpha=0.2)
    titles = {"test_accuracy": "test accuracy", "test_loss": "test loss ½‖y − ŷ‖²",
              "angle_to_backprop": "∠(τ − h, backprop) [deg]",
              "angle_to_gauss_newton": "∠(τ − h, Gauss-Newton) [deg]"}
    for ax, key in zip(axes, keys):
        ax.set_title(titles[key])
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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    summary = run(args.config, args.out, progress=not args.no_progress)
    print(report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
