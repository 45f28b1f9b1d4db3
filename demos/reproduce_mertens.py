"""Reproducing Mertens' local learning through linear decoders on signed XOR, in continuous time.

    python -m demos.reproduce_mertens --out DIR [--seeds 5] [--period 150] [--dt 1] [--eta 1]
                                                [--backprop-steps 300] [--device cpu] [--quick]

Mertens' notebook (seed 004, SPEC §6): every hidden layer ℓ of a 2-100-100-10-1 Mish network with
per-example L2 normalisation of each hidden layer and a sigmoid output gets a bias-free linear
decoder ``D_ℓ`` and learns on its own loss ``mean (D_ℓ r_ℓ − y)²``; the output layer learns on
the BCE of its output. No signal comes from above. Task ``signed_xor``: ``x ~ U(−1, 1)²``, label
1 if ``x_0 x_1 ≥ 0``; 1000 training and 1000 test points.

Methods (one row each in ``summary["accuracy"]``):

* ``backprop``: the same network from the same start, trained end to end on the BCE by
  full-batch **Rprop** (``torch.optim.Rprop`` with its defaults, lr 0.01; the notebook used Rprop
  on minibatches of 100) with autograd, for ``backprop_steps`` steps;
* ``sequential_trained`` / ``sequential_fixed``: :class:`circuits.LocalDecoders` with a
  sequential :class:`LayerSchedule` (layer ℓ learns during [(ℓ−1)P, ℓP), P = ``period``),
  decoders learned with the layer or kept at their random start (the public code's fixed
  read-outs);
* ``parallel_trained`` / ``parallel_fixed``: every layer learns for the same total time L·P.

The circuits are integrated by :func:`solvers.solve` (Euler, step ``dt``): weights, biases and
decoders are the ODE state, learning is gradient flow on the full training set at rate η per
unit time, so ``eta·dt`` is the step size of the equivalent full-batch gradient descent (a
decoder's loss has curvature up to 2, rates being unit vectors, so ``eta·dt`` must stay ≤ 1).
Every seed is one replica of the replica axis S: one solve per circuit method.

The flow is stiff where the normalisation is: ``r = m/‖m‖`` has Jacobian ``(I − r rᵀ)/‖m‖``,
and while a layer learns, some examples' ``‖m_ℓ‖`` shrink (to 0.02–0.1 on signed XOR), so
Euler overshoots and the active layer's loss jumps up for a step even at dt = 0.05 — which exact
gradient flow on a frozen input never does. ``summary["local_loss_rise"]`` measures it. The
trained-decoder results are robust to it (float32 and float64 agree to 1e-3); the fixed-decoder
sequential runs are not: their layers' ‖m‖ keep shrinking, and the default run gave test
accuracy 0.86 ± 0.01 in float32 but 0.56 ± 0.08 in float64 (four of five seeds collapsed to a
constant output), a rounding-level difference amplified by the unstable steps.

Writes ``DIR/summary.json``::

    {"accuracy": {METHOD: {"mean", "std", "per_seed"}},        # test accuracy of the output
     "train_accuracy": {...}, "layer_accuracy": {METHOD: {"mean": [L], "per_seed": [[L]]}},
     "seeds": [...], "seconds": float, "method_seconds": {...}, "status": {...},
     "config": {...}, "figures": [...]}

(std is the sample standard deviation over seeds, 0 for one seed; ``layer_accuracy`` is the
test accuracy of each hidden layer read through its decoder, and of the output for ℓ = L;
``local_loss_rise[METHOD]`` per layer, see :func:`loss_rise`), and
the figures ``accuracy.png`` (test accuracy per method, mean ± std and every seed),
``learning_curves.png`` (test accuracy of every layer's read-out over time) and
``decision_regions.png`` (seed 0: each layer's decoded decision region, per method).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from circuits import ForwardNetwork  # noqa: E402
from circuits.local_decoders import LayerSchedule, LocalDecoders  # noqa: E402
from solvers import solve  # noqa: E402

from .config import dataclass_config, intra_op_threads, run_cli  # noqa: E402
from .datasets import signed_xor  # noqa: E402
from .plots import layer_colour  # noqa: E402

LOCAL_METHODS = ("sequential_trained", "sequential_fixed", "parallel_trained", "parallel_fixed")
METHODS = ("backprop",) + LOCAL_METHODS
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Config:
    """The demo's parameters (each also a command-line flag)."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)   # network and decoder seeds: replicas of one solve
    data_seed: int = 0                         # the training and test sets
    n_train: int = 1000
    n_test: int = 1000
    widths: tuple[int, ...] = (2, 100, 100, 10, 1)
    eta: float = 1.0                # η of W, b (per unit time)
    eta_decoders: float | None = None   # η_D (default η)
    period: float = 150.0           # time each layer learns for (sequential); parallel: L·period
    dt: float = 1.0                 # Euler step: η·dt is the gradient-descent step size
    record_every: int = 10          # steps between recorded points of the learning curves
    backprop_steps: int = 300       # full-batch Rprop steps of the backprop baseline
    backprop_lr: float = 0.01       # Rprop's initial step size (torch's default)
    grid: int = 120                 # decision-region grid points per axis
    dtype: str = "float32"          # float32 is 2.4x faster on CPU (see the module docstring on
                                    # what rounding changes)
    device: str = "cpu"
    threads: int = 1                # torch intra-op threads (tiny tensors: more only adds sync)

    def __post_init__(self):
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: received {list(self.seeds)!r}, expected distinct "
                             "integers ≥ 0 (at least one)")
        if len(self.widths) < 3 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                       for n in self.widths) \
                or self.widths[0] != 2 or self.widths[-1] != 1:
            raise ValueError(f"widths: received {list(self.widths)!r}, expected [2, n_1, ..., 1]"
                             " (2 inputs, at least one hidden layer, one sigmoid output)")
        for name in ("n_train", "n_test", "record_every", "backprop_steps", "grid", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: received {v!r}, expected an integer ≥ 1")
        for name in ("eta", "period", "dt", "backprop_lr") + (
                ("eta_decoders",) if self.eta_decoders is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v <= 0:
                raise ValueError(f"{name}: received {v!r}, expected a finite number > 0")
        if self.dt > self.period:
            raise ValueError(f"dt: received {self.dt!r}, expected at most period = "
                             f"{self.period!r} (each layer needs at least one step)")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: received {self.dtype!r}, expected one of {list(DTYPES)}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device: received {self.device!r}, expected a torch device such "
                             f"as 'cpu' or 'cuda' ({err})") from None

    @property
    def L(self) -> int:
        return len(self.widths) - 1

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @classmethod
    def quick(cls, **overrides) -> "Config":
        """A small configuration that runs in a few seconds (tests, smoke runs)."""
        small = dict(seeds=(0, 1), n_train=200, n_test=200, widths=(2, 32, 32, 8, 1),
                     period=40.0, dt=1.0, record_every=5, backprop_steps=120, grid=40)
        return cls(**{**small, **overrides})


def load(config: Config | Mapping[str, Any] | None = None) -> Config:
    """``config`` as a :class:`Config` (None: the defaults; a mapping: overrides of them)."""
    return dataclass_config(Config, config, ("widths", "seeds"))


# -- the task and the network -----------------------------------------------------------------

def datasets(cfg: Config) -> dict[str, torch.Tensor]:
    """Training and test sets (disjoint draws of one generator) on the config's device/dtype."""
    task = signed_xor(cfg.n_train, cfg.n_test, cfg.data_seed)     # one-hot; column 1 = label
    to = dict(dtype=cfg.torch_dtype, device=cfg.device)
    return {"x_train": task.x_train.to(**to), "y_train": task.y_train[:, 1:].to(**to),
            "x_test": task.x_test.to(**to), "y_test": task.y_test[:, 1:].to(**to)}


def initial_network(cfg: Config) -> ForwardNetwork:
    """S = len(seeds) replicas with ``nn.Linear``'s initialisation: W and b ~ U(±1/√n_in)."""
    seeds = list(cfg.seeds)
    net = ForwardNetwork(list(cfg.widths), "mish", "sigmoid", seed=seeds)
    biases = []
    for n_in, n_out in zip(cfg.widths, cfg.widths[1:]):
        rows = []
        for s in seeds:
            g = torch.Generator().manual_seed(10_000 + 100 * s + len(biases))
            rows.append((torch.rand(1, n_out, generator=g, dtype=torch.float64) * 2 - 1)
                        * n_in ** -0.5)
        biases.append(torch.stack(rows))
    return ForwardNetwork(list(cfg.widths), "mish", "sigmoid", weights=net.weights,
                          biases=biases, dtype=cfg.torch_dtype, device=cfg.device)


# -- read-outs --------------------------------------------------------------------------------

def layer_outputs(circuit: LocalDecoders, state: Mapping[str, torch.Tensor], x: torch.Tensor
                  ) -> list[torch.Tensor]:
    """Each layer's read-out ``[S, B, 1]``: ``D_ℓ r_ℓ`` for hidden layers, ``r_L`` for the
    output (the quantity each layer's own loss compares with y)."""
    r = circuit.forward(state, x)
    L = circuit.L
    return [r[l] @ state[f"D_{l}"].transpose(-1, -2) if l < L else r[l]
            for l in range(1, L + 1)]


def accuracies(outputs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """``[L, S]`` accuracy of each read-out at threshold ½ against ``y [B, 1]``."""
    label = y > 0.5          # counted exactly, reported in float64 whatever the dtype
    return torch.stack([((o > 0.5) == label).sum((-2, -1)).to(torch.float64) / label.numel()
                        for o in outputs])


def mean_std(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=float)
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"mean": float(a.mean()), "std": std, "per_seed": [float(v) for v in a]}


# -- the methods ------------------------------------------------------------------------------

def run_local(cfg: Config, data: Mapping[str, torch.Tensor], schedule: str,
              train_decoders: bool) -> dict[str, Any]:
    """One :class:`LocalDecoders` solve with every seed as a replica."""
    L = cfg.L
    sched = (LayerSchedule.sequential(L, cfg.period) if schedule == "sequential"
             else LayerSchedule.parallel(L))
    c = LocalDecoders(initial_network(cfg), data["x_train"], data["y_train"], schedule=sched,
                      eta=cfg.eta, eta_decoders=cfg.eta_decoders, train_decoders=train_decoders,
                      decoder_seed=list(cfg.seeds), normalize=True, output_loss="bce")
    x_test, y_test = data["x_test"], data["y_test"]

    def record(y):                     # a few numbers per replica, not the weights
        obs = c.observe(y)
        test = accuracies(layer_outputs(c, y, x_test), y_test)          # [L, S]
        rec = {f"test_accuracy_{l}": test[l - 1].to(c.x.dtype).view(-1, 1, 1)
               for l in range(1, L + 1)}
        rec.update({f"{k}_{l}": obs[f"{k}_{l}"] for k in ("accuracy", "loss")
                    for l in range(1, L + 1)})
        return rec

    start = time.perf_counter()
    sol = solve(c, c.initial_state(), 0.0, L * cfg.period, dt=cfg.dt, method="euler",
                steady_state=False, save_every=cfg.record_every, observe=record)
    seconds = time.perf_counter() - start
    test = accuracies(layer_outputs(c, sol.y1, x_test), y_test)
    train = accuracies(layer_outputs(c, sol.y1, data["x_train"]), data["y_train"])
    curves = {k: v[:, :, 0, 0].cpu().numpy() for k, v in sol.ys.items()}       # [T, S]
    t = sol.ts.cpu().numpy()
    return {"circuit": c, "state": sol.y1, "test": test.cpu().numpy(),
            "train": train.cpu().numpy(), "t": t, "curves": curves,
            "loss_rise": loss_rise(t, curves, sched),
            "status": sol.counts(), "seconds": seconds,
            "output_accuracy": c.accuracy(sol.y1, x_test, y_test).cpu().numpy()}


def loss_rise(t: np.ndarray, curves: Mapping[str, np.ndarray], schedule: LayerSchedule
              ) -> list[float]:
    """Per layer: the largest relative rise of its local loss between consecutive recorded
    points while its gate is open (max over seeds, 0 if it only fell). Gradient flow on a
    frozen input (the sequential schedule) never raises it, so a rise there is integration
    error: Euler's dt too large for the flow's stiffness. Under the parallel schedule the
    input moves and rises are allowed."""
    out = []
    for l, (start, end) in enumerate(schedule.windows, start=1):
        inside = (t >= start - 1e-9) & (t <= end + 1e-9)
        loss = curves[f"loss_{l}"][inside]                          # [T_l, S]
        if len(loss) < 2:
            out.append(0.0)
            continue
        rise = (loss[1:] - loss[:-1]) / np.maximum(loss[:-1], 1e-30)
        out.append(float(max(rise.max(), 0.0)))
    return out


def backprop_forward(weights, biases, x):
    """The network's forward pass (autograd-friendly): Mish, L2 normalisation, sigmoid output
    logit. Returns the output pre-activation ``[S, B, 1]``."""
    r = x
    for l, (W, b) in enumerate(zip(weights, biases), start=1):
        a = r @ W.transpose(-1, -2) + b
        if l == len(weights):
            return a
        r = F.normalize(F.mish(a), dim=-1)
    raise AssertionError("unreachable")


def run_backprop(cfg: Config, data: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """End-to-end training of the same start by full-batch Rprop on the mean BCE (one
    optimiser over every replica's parameters: Rprop is elementwise, so replicas stay
    independent; the loss is the sum of the replicas' mean BCEs)."""
    net = initial_network(cfg)
    weights = [w.clone().requires_grad_(True) for w in net.weights]
    biases = [b.clone().requires_grad_(True) for b in net.biases]
    opt = torch.optim.Rprop(weights + biases, lr=cfg.backprop_lr)
    x, y = net.input(data["x_train"]), data["y_train"]
    x_test, y_test = net.input(data["x_test"]), data["y_test"]

    def test_accuracy():
        with torch.no_grad():
            out = backprop_forward(weights, biases, x_test)
            return accuracies([out + 0.5], y_test)[0]          # logit > 0: [S]

    steps, curve = [0], [test_accuracy()]
    start = time.perf_counter()
    for step in tqdm(range(1, cfg.backprop_steps + 1), desc="backprop (Rprop)", leave=False,
                     disable=None):
        opt.zero_grad()
        logit = backprop_forward(weights, biases, x)
        loss = F.binary_cross_entropy_with_logits(logit, y.expand_as(logit),
                                                  reduction="none").mean((-2, -1)).sum()
        loss.backward()
        opt.step()
        if step % cfg.record_every == 0 or step == cfg.backprop_steps:
            steps.append(step)
            curve.append(test_accuracy())
    seconds = time.perf_counter() - start
    with torch.no_grad():
        train_logit = backprop_forward(weights, biases, x)
        train = accuracies([train_logit + 0.5], y)[0]
    return {"weights": [w.detach() for w in weights], "biases": [b.detach() for b in biases],
            "test": curve[-1].cpu().numpy(), "train": train.cpu().numpy(),
            "steps": np.asarray(steps), "curve": torch.stack(curve).cpu().numpy(),
            "seconds": seconds}


# -- figures ----------------------------------------------------------------------------------

COLOURS = {"backprop": "0.35", "sequential_trained": "tab:blue",
           "sequential_fixed": "tab:cyan", "parallel_trained": "tab:red",
           "parallel_fixed": "tab:orange"}


def accuracy_figure(path: Path, accuracy: Mapping[str, Mapping[str, Any]]) -> Path:
    names = list(accuracy)
    fig, ax = plt.subplots(figsize=(7.5, 4.0), layout="constrained")
    for i, name in enumerate(names):
        a = accuracy[name]
        ax.bar(i, a["mean"], yerr=a["std"], color=COLOURS.get(name, "0.5"), alpha=0.8,
               capsize=5)
        ax.plot([i] * len(a["per_seed"]), a["per_seed"], "o", color="k", ms=3.5, alpha=0.7)
        ax.text(i, 0.42, f"{a['mean']:.3f}\n±{a['std']:.3f}", ha="center", fontsize="small")
    ax.axhline(0.5, color="0.5", ls=":", lw=1.0)
    ax.text(len(names) - 0.45, 0.505, "chance", ha="right", va="bottom", color="0.4",
            fontsize="small")
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names])
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("test accuracy (mean ± std over seeds; dots: seeds)")
    ax.set_title("Signed XOR: backprop vs layer-local learning through linear decoders",
                 fontsize="medium")
    ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves_figure(path: Path, local: Mapping[str, Mapping[str, Any]],
                           bp: Mapping[str, Any], cfg: Config) -> Path:
    """One panel per method: each layer's decoded test accuracy over time (mean over seeds,
    band: min–max); backprop's output test accuracy against Rprop steps."""
    L = cfg.L
    fig, axes = plt.subplots(1, len(local) + 1, figsize=(4.0 * (len(local) + 1), 3.8),
                             sharey=True, layout="constrained")
    ax = axes[0]
    m = bp["curve"].mean(1)
    ax.plot(bp["steps"], m, color=COLOURS["backprop"], lw=1.6, label="output")
    ax.fill_between(bp["steps"], bp["curve"].min(1), bp["curve"].max(1),
                    color=COLOURS["backprop"], alpha=0.2)
    ax.set_xlabel("full-batch Rprop step")
    ax.set_title("backprop", fontsize="medium")
    ax.set_ylabel("test accuracy of the layer's read-out")
    for ax, (name, res) in zip(axes[1:], local.items()):
        t = res["t"]
        for l in range(1, L + 1):
            curve = res["curves"][f"test_accuracy_{l}"]
            ax.plot(t, curve.mean(1), color=layer_colour(l), lw=1.4,
                    label=f"layer {l}" + (" (output)" if l == L else " via D"))
            ax.fill_between(t, curve.min(1), curve.max(1), color=layer_colour(l), alpha=0.15)
        if name.startswith("sequential"):
            for l in range(1, L):
                ax.axvline(l * cfg.period, color="0.6", ls=":", lw=1.0)
        ax.set_xlabel("time t (η = %g per unit time)" % cfg.eta)
        ax.set_title(name.replace("_", ", ") + " decoders", fontsize="medium")
    for ax in axes:
        ax.axhline(0.5, color="0.7", ls=":", lw=0.8)
        ax.set_ylim(0.35, 1.01)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize="small", loc="lower right")
    fig.suptitle(f"Learning curves (mean over {len(cfg.seeds)} seeds, band min–max)",
                 fontsize="medium")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def decision_regions_figure(path: Path, local: Mapping[str, Mapping[str, Any]],
                            bp: Mapping[str, Any], cfg: Config,
                            data: Mapping[str, torch.Tensor]) -> Path:
    """Seed ``cfg.seeds[0]``: each layer's read-out over [−1, 1]² (rows: methods; columns:
    layers; backprop has no decoders, only its output)."""
    L, n = cfg.L, cfg.grid
    axis = torch.linspace(-1, 1, n, dtype=cfg.torch_dtype, device=cfg.device)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    rows = {"backprop": None, **local}
    fig, axes = plt.subplots(len(rows), L, figsize=(2.6 * L, 2.5 * len(rows)),
                             squeeze=False, layout="constrained")
    x_test = data["x_test"].cpu().numpy()
    y_test = data["y_test"][:, 0].cpu().numpy()
    image = None
    for i, (name, res) in enumerate(rows.items()):
        if res is None:
            with torch.no_grad():
                logit = backprop_forward(bp["weights"], bp["biases"],
                                         grid[None].expand(len(cfg.seeds), -1, -1))
            maps = [None] * (L - 1) + [torch.sigmoid(logit)]
        else:
            maps = layer_outputs(res["circuit"], res["state"], grid)
        for l in range(1, L + 1):
            ax = axes[i, l - 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if maps[l - 1] is None:
                ax.text(0.5, 0.5, "no decoder\n(end-to-end)", ha="center", va="center",
                        transform=ax.transAxes, color="0.4")
            else:
                z = maps[l - 1][0, :, 0].reshape(n, n).cpu().numpy()
                image = ax.imshow(z, origin="lower", extent=(-1, 1, -1, 1), cmap="cividis",
                                  vmin=0, vmax=1, aspect="equal")
                ax.contour(np.linspace(-1, 1, n), np.linspace(-1, 1, n), z, levels=[0.5],
                           colors="w", linewidths=1.0)
                ax.scatter(x_test[:150, 0], x_test[:150, 1], c=y_test[:150], s=3,
                           cmap="plasma", alpha=0.6)
            if i == 0:
                ax.set_title(f"layer {l}" + (" (output)" if l == L else " read out by D"),
                             fontsize="small")
            if l == 1:
                ax.set_ylabel(name.replace("_", "\n"), fontsize="small")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="read-out (threshold ½: white line)")
    fig.suptitle(f"Decision regions, seed {cfg.seeds[0]}", fontsize="medium")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the demo ---------------------------------------------------------------------------------

def run(config: Config | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Train every method into ``out``; ``config`` is None (the defaults), a :class:`Config`
    or a mapping of its fields. Returns the summary (also written to ``out/summary.json``)."""
    cfg = load(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with intra_op_threads(cfg.threads):
        summary = _run(cfg, out)
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    return summary


def _run(cfg: Config, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    data = datasets(cfg)
    bp = run_backprop(cfg, data)
    local = {}
    for name in tqdm(LOCAL_METHODS, desc="local decoders", leave=False, disable=None):
        schedule, decoders = name.split("_")
        local[name] = run_local(cfg, data, schedule, decoders == "trained")

    accuracy = {"backprop": mean_std(bp["test"].tolist())}
    train_accuracy = {"backprop": mean_std(bp["train"].tolist())}
    layer_accuracy, layer_train = {}, {}
    for name, res in local.items():
        accuracy[name] = mean_std(res["test"][-1].tolist())
        train_accuracy[name] = mean_std(res["train"][-1].tolist())
        layer_accuracy[name] = {"mean": res["test"].mean(1).tolist(),
                                "per_seed": res["test"].T.tolist()}
        layer_train[name] = {"mean": res["train"].mean(1).tolist(),
                             "per_seed": res["train"].T.tolist()}
    figures = [
        accuracy_figure(out / "accuracy.png", accuracy),
        learning_curves_figure(out / "learning_curves.png", local, bp, cfg),
        decision_regions_figure(out / "decision_regions.png", local, bp, cfg, data),
    ]
    return {
        "accuracy": accuracy,
        "train_accuracy": train_accuracy,
        "layer_accuracy": layer_accuracy,
        "layer_train_accuracy": layer_train,
        "seeds": list(cfg.seeds),
        "seconds": time.perf_counter() - start,
        "method_seconds": {"backprop": bp["seconds"],
                           **{k: v["seconds"] for k, v in local.items()}},
        "status": {k: v["status"] for k, v in local.items()},
        "local_loss_rise": {k: v["loss_rise"] for k, v in local.items()},
        "optimizer": {"backprop": f"full-batch Rprop (torch.optim.Rprop, lr {cfg.backprop_lr:g},"
                                  f" {cfg.backprop_steps} steps) on the mean BCE, autograd",
                      "local": f"gradient flow, Euler dt = {cfg.dt:g}, eta = {cfg.eta:g}, "
                               f"sequential: {cfg.period:g} per layer, parallel: "
                               f"{cfg.L * cfg.period:g} for all layers"},
        "duration": cfg.L * cfg.period,
        "figures": [f.name for f in figures],
        "config": {k: list(v) if isinstance(v, tuple) else v
                   for k, v in dataclasses.asdict(cfg).items()},
        "torch": torch.__version__,
    }


def passed(summary: Mapping[str, Any], threshold: float = 0.9) -> bool:
    """Trained decoders learn signed XOR under both schedules, as backprop does."""
    acc = summary["accuracy"]
    return all(acc[m]["mean"] >= threshold
               for m in ("backprop", "sequential_trained", "parallel_trained"))


def report(summary: Mapping[str, Any]) -> str:
    """The accuracy table (test accuracy mean ± std over seeds, per-layer decoded means)."""
    lines = [f"{'method':<20} {'test accuracy':>17}  {'train':>6}  per-layer test (decoded)",
             "-" * 78]
    for name, a in summary["accuracy"].items():
        layers = summary["layer_accuracy"].get(name)
        per_layer = "  ".join(f"{v:.3f}" for v in layers["mean"]) if layers else "-"
        lines.append(f"{name:<20} {a['mean']:.3f} ± {a['std']:.3f}      "
                     f"{summary['train_accuracy'][name]['mean']:.3f}  {per_layer}")
    lines.append(f"seeds {summary['seeds']}, {summary['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m demos.reproduce_mertens",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"number of seeds 0..N-1 (default {len(defaults.seeds)})")
    parser.add_argument("--period", type=float, default=None,
                        help=f"time each layer learns for (sequential); parallel runs L·period "
                             f"(default {defaults.period:g})")
    parser.add_argument("--dt", type=float, default=None,
                        help=f"Euler step (default {defaults.dt:g})")
    parser.add_argument("--eta", type=float, default=None,
                        help=f"learning rate per unit time (default {defaults.eta:g})")
    parser.add_argument("--backprop-steps", type=int, default=None,
                        help=f"Rprop steps of backprop (default {defaults.backprop_steps})")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help=f"default {defaults.dtype}")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="the small configuration of Config.quick() (a few seconds)")
    def make_config(args):
        overrides: dict[str, Any] = {}
        if args.seeds is not None:
            if args.seeds < 1:
                raise ValueError(f"--seeds: received {args.seeds}, expected an integer ≥ 1")
            overrides["seeds"] = tuple(range(args.seeds))
        for key in ("period", "dt", "eta", "backprop_steps", "dtype", "device"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        return Config.quick(**overrides) if args.quick else Config(**overrides)

    return run_cli(parser, argv, make_config, run, report)


if __name__ == "__main__":
    main()
    sys.exit(0)
