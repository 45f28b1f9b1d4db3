"""A whole sweep trains at once: S networks that differ in one circuit parameter (the leak α by
default) learn in parallel in ONE integration, and the final loss is plotted against it.

    python -m demos.train_sweep --out DIR [--config configs/train_sweep.yaml]

Every replica starts from the same weights and sees the same minibatch stream of a teacher
regression task (:func:`workbench.tasks.teacher_regression`, Podlaski & Machens' nonlinear setting
by default); only ``axis`` differs. The simulated circuit (layer-wise ``di``, single-loop
``sdi`` or ``dfc``) is a :class:`circuits.Settling` family inside :class:`circuits.Plastic`:
weights are state, each minibatch is shown for ``period`` and the settle gate lets the weights
learn once the circuit's own error populations have settled. Two references train on the same
stream in their own integrations: the closed form of the same circuit at every value (``ndi``
for DI; none for SDI and DFC) and backprop (one network).

Writes ``DIR/summary.json`` — ``{"axis", "values", "final_test_loss", "closed_form_final_loss",
"backprop_final_loss", "initial_test_loss", "diverged", "seconds", ...}`` — and
``DIR/final_loss.png`` (final test loss against the parameter: simulation, closed form,
backprop; diverged replicas marked and left out of the curve) and ``DIR/learning_curves.png``.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from circuits import (ClosedForm, DeepFeedbackControl, DynamicInversion, ForwardNetwork,  # noqa: E402
                      Plastic, Settling, SingleLoopDynamicInversion, analyse_circuit)
from circuits.plasticity import GATES  # noqa: E402
from solvers import train  # noqa: E402
from workbench import tasks  # noqa: E402

from .config import (dataclass_config, intra_op_threads, jsonable, output_dir,  # noqa: E402
                     read_yaml, run_cli)
from solvers import minibatch_order  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train_sweep.yaml"
CIRCUITS = {"di": DynamicInversion, "sdi": SingleLoopDynamicInversion, "dfc": DeepFeedbackControl}
AXES = ("alpha", "k_i", "k_p", "eta")


def _values(spec: Any) -> list[float]:
    """A list, ``{logspace: [lo, hi, n]}`` (powers of ten) or ``{linspace: [lo, hi, n]}``."""
    if isinstance(spec, Mapping) and len(spec) == 1 and next(iter(spec)) in ("logspace",
                                                                             "linspace"):
        kind, (lo, hi, n) = next(iter(spec.items()))
        grid = np.logspace(lo, hi, int(n)) if kind == "logspace" else np.linspace(lo, hi, int(n))
        return [float(v) for v in grid]
    if isinstance(spec, (list, tuple)) and spec and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec):
        return [float(v) for v in spec]
    raise ValueError(f"values: received {spec!r}, expected a list of numbers, "
                     "{logspace: [lo, hi, n]} or {linspace: [lo, hi, n]}")


@dataclass
class Config:
    """The demo's settings (``configs/train_sweep.yaml`` documents each)."""

    circuit: str = "di"
    axis: str = "alpha"
    values: Any = field(default_factory=lambda: {"logspace": [-4, 1, 11]})
    circuit_args: dict = field(default_factory=lambda: {"k_i": 5.0, "k_p": 1.0})
    widths: tuple = (30, 20, 10, 10)
    activation: str = "tanh"
    init_scale: float = 0.1
    seed: int = 0
    n_train: int = 512
    n_test: int = 500
    batch: int = 8
    presentations: int = 192
    eta: float = 0.05
    period: float = 20.0
    dt: float = 0.1
    theta: float = 0.05
    gate: str = "settled"
    eval_every: int = 16
    backprop_eta: float | None = None
    threads: int | None = 1

    def __post_init__(self):
        if self.gate not in GATES:
            raise ValueError(f"gate: received {self.gate!r}, expected one of {list(GATES)}")
        if self.circuit not in CIRCUITS:
            raise ValueError(f"circuit: received {self.circuit!r}, expected one of "
                             f"{sorted(CIRCUITS)}")
        if self.axis not in AXES:
            raise ValueError(f"axis: received {self.axis!r}, expected one of {list(AXES)}")
        self.grid = _values(self.values)
        if self.axis in self.circuit_args:
            raise ValueError(f"circuit_args: received {self.axis!r}, which is the swept axis; "
                             "remove it from circuit_args")
        for name in ("n_train", "n_test", "batch", "presentations", "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: received {v!r}, expected an integer ≥ 1")
        for name in ("eta", "period", "dt", "theta", "init_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 \
                    or not math.isfinite(v):
                raise ValueError(f"{name}: received {v!r}, expected a finite number > 0")
        if self.batch > self.n_train:
            raise ValueError(f"batch: received {self.batch}, expected at most n_train = "
                             f"{self.n_train}")


def load(config: Any = None) -> Config:
    """Defaults from ``configs/train_sweep.yaml``, overridden by ``config`` (a path, a mapping
    or a Config), the rule every demo follows: keys given replace the default's, and
    ``circuit_args`` (keyword arguments) merges key by key over the default's (less the swept
    ``axis``); unknown keys are errors."""
    base = read_yaml(DEFAULT_CONFIG)
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, Path)):
        config = read_yaml(config)
    given = dict(config or {})
    merged = {**base, **given}
    if isinstance(given.get("circuit_args"), Mapping) \
            and isinstance(base.get("circuit_args"), Mapping):
        merged["circuit_args"] = {**base["circuit_args"], **given["circuit_args"]}
    if "circuit_args" not in given or isinstance(given.get("circuit_args"), Mapping):
        inherited = dict(merged.get("circuit_args") or {})
        own = given.get("circuit_args") or {}
        if merged.get("axis") in inherited and merged.get("axis") not in own:
            inherited.pop(merged["axis"])         # the default's value of what is now swept
        merged["circuit_args"] = inherited
    return dataclass_config(Config, merged, tuples=("widths",))


def test_loss(net: ForwardNetwork, task: tasks.Task) -> np.ndarray:
    """Per replica: mean over test examples of ½‖y − r_L‖²."""
    out = net.forward(task.x_test).r[-1]
    return (0.5 * ((out - task.y_test) ** 2).sum(-1).mean(-1)).cpu().numpy()


def learn(circuit: Plastic, task: tasks.Task, order: torch.Tensor, cfg: Config
          ) -> dict[str, Any]:
    """One integration over the whole stream; test loss every ``eval_every`` presentations."""
    stream = lambda k: (task.x_train[order[k]], task.y_train[order[k]])  # noqa: E731
    curve = {"presentations": [0], "test_loss": [test_loss(circuit.network, task).tolist()]}

    def on_chunk(k, y, sol):
        curve["presentations"].append(k)
        curve["test_loss"].append(test_loss(circuit.network_of(y), task).tolist())
    start = time.perf_counter()
    result = train(circuit, circuit.initial_state(), stream, period=cfg.period,
                   presentations=cfg.presentations, dt=cfg.dt, method="exp_euler",
                   chunk=cfg.eval_every, on_chunk=on_chunk)
    final = np.array(curve["test_loss"][-1])
    diverged = result.diverged.numpy()
    return {"curve": curve, "final": [None if d else float(v) for v, d in zip(final, diverged)],
            "diverged": diverged.tolist(), "seconds": time.perf_counter() - start,
            "steps": result.stats["steps"]}


def run(config: Any, out: str | Path) -> dict[str, Any]:
    cfg = load(config)
    out = output_dir(out, "out")              # writable, checked before any work
    with intra_op_threads(cfg.threads):       # a context manager: a bare call set nothing
        return _run(cfg, out)


def _run(cfg: Config, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    task = tasks.teacher_regression(cfg.n_train, cfg.n_test, widths=list(cfg.widths),
                                    activation=cfg.activation, seed=cfg.seed)
    net = ForwardNetwork(list(cfg.widths), cfg.activation, scale=cfg.init_scale,
                         seed=cfg.seed + 100)
    order = minibatch_order(cfg.n_train, cfg.batch, -(-cfg.presentations * cfg.batch
                                                       // cfg.n_train), cfg.seed)
    x0, y0 = task.x_train[order[0]], task.y_train[order[0]]
    swept = {cfg.axis: cfg.grid}
    eta = swept.pop("eta", cfg.eta)
    family = Settling(CIRCUITS[cfg.circuit], **cfg.circuit_args, **swept)
    plastic = Plastic(family, net, x0, y0, eta=eta, theta=cfg.theta, gate=cfg.gate)
    # the slowest time constant of each replica's linearised circuit on the first minibatch,
    # at the initial weights: a presentation shorter than a few of these never settles
    abscissa = analyse_circuit(family.build(plastic.network, x0, y0)).spectral_abscissa
    slowest = [float(-1 / a) if a < 0 else None for a in abscissa.tolist()]
    sim = learn(plastic, task, order, cfg)
    closed = None
    if cfg.circuit == "di":
        closed = learn(Plastic(ClosedForm("ndi", **cfg.circuit_args, **swept), net, x0, y0,
                               eta=eta), task, order, cfg)
    bp = learn(Plastic(ClosedForm("backprop"), net, x0, y0,
                       eta=cfg.backprop_eta or cfg.eta), task, order, cfg)
    summary = {
        "circuit": cfg.circuit, "axis": cfg.axis, "values": cfg.grid,
        "final_test_loss": sim["final"], "diverged": sim["diverged"],
        "closed_form_final_loss": None if closed is None else closed["final"],
        "backprop_final_loss": bp["final"][0],
        "initial_test_loss": float(test_loss(net, task)[0]),
        "best": _best(cfg.grid, sim["final"]),
        "slowest_time_constant": slowest, "period": cfg.period, "gate": cfg.gate,
        "presentations": cfg.presentations, "replicas": len(cfg.grid),
        "seconds": sim["seconds"], "steps": sim["steps"],
        "seconds_per_replica_presentation": sim["seconds"] / (len(cfg.grid) * cfg.presentations),
        "curves": {"simulated": sim["curve"], "backprop": bp["curve"],
                   **({} if closed is None else {"closed_form": closed["curve"]})},
        "config": {k: v for k, v in vars(cfg).items() if k != "grid"},
    }
    final_figure(out / "final_loss.png", summary)
    curves_figure(out / "learning_curves.png", summary)
    (out / "summary.json").write_text(__import__("json").dumps(jsonable(summary), indent=2))
    return summary


def _best(values, losses) -> dict[str, float] | None:
    ok = [(l, v) for v, l in zip(values, losses) if l is not None]
    if not ok:
        return None
    loss, value = min(ok)
    return {"value": value, "final_test_loss": loss}


def final_figure(path: Path, s: Mapping[str, Any]) -> None:
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True,
                                 gridspec_kw={"height_ratios": [2, 1]})
    v = np.array(s["values"])
    sim = np.array([np.nan if l is None else l for l in s["final_test_loss"]])
    ax.plot(v, sim, "o-", label=f"{s['circuit']} simulated")
    if s["closed_form_final_loss"] is not None:
        cf = np.array([np.nan if l is None else l for l in s["closed_form_final_loss"]])
        ax.plot(v, cf, "s--", mfc="none", label="closed form (NDI)")
    div = np.array(s["diverged"])
    if div.any():
        ax.plot(v[div], np.full(div.sum(), np.nanmax(sim) if np.isfinite(sim).any() else 1.0),
                "rx", ms=9, label="diverged")
    ax.axhline(s["backprop_final_loss"], color="k", lw=1, label="backprop")
    ax.axhline(s["initial_test_loss"], color="grey", ls=":", lw=1, label="initial")
    ax.set(xscale="log", yscale="log",
           ylabel=f"test loss after {s['presentations']} minibatches",
           title=f"{s['replicas']} networks trained in one integration")
    ax.legend(fontsize=8)
    slow = np.array([np.nan if t is None else t for t in s["slowest_time_constant"]])
    bx.plot(v, slow, "o-", color="C2", label="slowest time constant −1/λ_max (initial weights)")
    bx.axhline(s["period"], color="k", ls="--", lw=1, label="presentation period")
    bx.set(xscale="log", yscale="log", xlabel=s["axis"], ylabel="time")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_figure(path: Path, s: Mapping[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    c = s["curves"]["simulated"]
    losses = np.array(c["test_loss"], dtype=float)          # [evaluations, S]
    colours = plt.cm.viridis(np.linspace(0, 1, losses.shape[1]))
    for j in range(losses.shape[1]):
        ax.plot(c["presentations"], losses[:, j], color=colours[j], lw=1)
    b = s["curves"]["backprop"]
    ax.plot(b["presentations"], np.array(b["test_loss"])[:, 0], "k--", lw=1.5, label="backprop")
    sm = plt.cm.ScalarMappable(cmap="viridis", norm=matplotlib.colors.LogNorm(
        min(s["values"]), max(s["values"])))
    fig.colorbar(sm, ax=ax, label=s["axis"])
    ax.set(yscale="log", xlabel="minibatches presented", ylabel="test loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(s: Mapping[str, Any]) -> str:
    lines = [f"{s['replicas']} {s['circuit']} networks over {s['axis']} in one integration: "
             f"{s['seconds']:.1f} s ({s['steps']} steps)",
             f"initial test loss {s['initial_test_loss']:.4g}, backprop "
             f"{s['backprop_final_loss']:.4g}; presentation period {s['period']}"]
    for j, v in enumerate(s["values"]):
        cf = s["closed_form_final_loss"]
        lines.append(f"  {s['axis']} = {v:<10.3g} simulated "
                     + ("diverged" if s["diverged"][j] else f"{s['final_test_loss'][j]:.4g}")
                     + ("" if cf is None or cf[j] is None else f"   closed form {cf[j]:.4g}")
                     + ("" if s["slowest_time_constant"][j] is None else
                        f"   slowest time constant {s['slowest_time_constant'][j]:.3g}"))
    return "\n".join(lines)


def passed(s: Mapping[str, Any]) -> bool:
    """The sweep's own checks: no replica diverged unflagged (no NaN reaches the summary), the
    closed form (where there is one) and backprop improve on the initial weights, and the best
    simulated replica at least halves the initial test loss."""
    init = s["initial_test_loss"]
    finals = [l for l in s["final_test_loss"] if l is not None]
    closed_ok = s["closed_form_final_loss"] is None or all(
        l is not None and l < init for l in s["closed_form_final_loss"])
    return bool(finals) and all(math.isfinite(l) for l in finals) and closed_ok \
        and s["backprop_final_loss"] < init and min(finals) < 0.5 * init


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.train_sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None,
                        help="YAML config merged over configs/train_sweep.yaml")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    run_cli(parser, argv, lambda args: load(args.config), run, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
