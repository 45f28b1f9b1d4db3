"""Train the credit-assignment methods on one task, fully in continuous time (the method table).

    python -m demos.train --config configs/digits.yaml --out DIR [--resume] [--stop-after N]

Every method is *one* integration (:func:`solvers.train`): the weights are state, a drive shows
minibatch k during ``[k·period, (k+1)·period)``, and the circuit's own dynamics (settling credit
populations, targets, predictions) run on from one minibatch to the next. The seeds are the
replica axis S of that one integration (``ForwardNetwork(widths, seed=[0, 1, 2])``), so all
seeds of a method train together; FA's random feedback is drawn per replica too.

Methods (``methods:`` in the config, settings per method under ``method:``) are the learning
circuits of :mod:`circuits.registry` (``METHODS``: backprop, FA, PBP, NDI, DI, SDI, DFC, PC as
Fa-Z-IL and as Z-IL, iterated DTP, DDTP-linear, local decoders).

Each method's ``period`` (the time a minibatch is shown) and ``dt`` (Euler step) were chosen by
measuring how long its credit populations take to settle (see the config's comments). After
every epoch the test accuracy (argmax of the output, per replica) is recorded; every
``training.checkpoint_every`` examples the state, the divergence flags, the history and the
wall time so far are written to ``DIR/checkpoints/<task>_<method>.pt`` (atomically).
Interrupted (Ctrl-C), a rerun with ``--resume`` continues every method from its last checkpoint
(methods already finished are read back) and ends bit-for-bit where an uninterrupted run ends:
the minibatch order is a pure function of the seed and the position, and the chunk grid of the
integration does not depend on where it was resumed.

Writes ``DIR/summary.json`` (``{"runs": [{task, method, seed, test_accuracy, seconds, ...}]}``,
one entry per method × seed; ``seconds`` is the integration's wall time *per epoch for all
seeds together*, the same on every seed's row), ``DIR/table.md`` and ``DIR/<task>.png`` (test
accuracy against epochs per method, mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from circuits import ArrivalGate, FeedbackLearning, ForwardNetwork
from circuits.registry import CIRCUIT_ARGS, LABELS, METHODS, learning_circuit
from solvers import checkpoint, minibatch_order
from solvers import train as integrate

from . import datasets
from .config import Config, Schema, Section, intra_op_threads, jsonable, load_config

TASKS = {"digits": datasets.digits, "mnist1d": datasets.mnist1d}
REFERENCE = "backprop"


# -- configuration ----------------------------------------------------------------------------

def _int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: received {value!r}, expected an integer ≥ {minimum}")


def _number(name: str, value: Any, *, positive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name}: received {value!r}, expected a finite number "
                         f"{'> 0' if positive else '≥ 0'}")


@dataclass(frozen=True)
class Training:
    """epochs: passes over the training set.  batch: B examples per presentation (each epoch's
    remainder dropped: B is part of the state's shape).  seeds: replicas S (network seeds
    0..S-1).  order_seed: the minibatch order.  checkpoint_every: examples between
    checkpoints (rounded down to whole minibatches, at least one)."""

    epochs: int = 5
    batch: int = 32
    seeds: int = 3
    order_seed: int = 0
    checkpoint_every: int = 1024

    def __post_init__(self):
        for name in ("epochs", "batch", "seeds", "checkpoint_every"):
            _int(f"training.{name}", getattr(self, name), 1)
        _int("training.order_seed", self.order_seed, 0)


@dataclass(frozen=True)
class MethodSpec:
    """How one method is integrated.

    eta: learning rate η per unit time.  period: time each minibatch is shown.  dt: the
    step.  integrator: a fixed-step method of :func:`solvers.solve` (``euler``, ``rk4`` ...).
    gate: ``settled`` or ``always`` (:class:`circuits.Plastic`; ignored by ``pc`` and
    ``local_decoders``, which gate themselves).  theta: the settle gate's rate threshold.
    teacher_from: when in each period the teacher appears (``pc``: the free phase before it).
    output_activation: of the network (``pc`` needs ``linear``, ``local_decoders`` with
    ``bce`` ``sigmoid``).  form: the target methods' weight change (``dtp1``, ``dtp``,
    ``local_loss``).  target_leak: λ, the target methods' hidden targets leak towards the
    forward pass at this rate (``anchor`` of :class:`circuits.TargetPropagation`).  circuit: keyword arguments of the
    method's circuit (e.g. DI's ``alpha``, ``k_i``).  gate_args: :class:`circuits.ArrivalGate`'s
    (``pc``).  feedback: ``iterated_dtp``'s decoder learning (:class:`demos.train_tp.Feedback`)."""

    eta: float = 0.1
    period: float = 1.0
    dt: float = 1.0
    integrator: str = "euler"
    gate: str = "always"
    theta: float = 0.05
    teacher_from: float = 0.0
    output_activation: str = "linear"
    form: str = "dtp1"
    target_leak: float = 0.0
    relinearise_every: int = 1
    circuit: dict = field(default_factory=dict)
    gate_args: dict = field(default_factory=dict)
    feedback: dict = field(default_factory=dict)

    def check(self, method: str) -> None:
        where = f"method.{method}"
        for name in ("eta", "period", "dt", "theta"):
            _number(f"{where}.{name}", getattr(self, name))
        _number(f"{where}.teacher_from", self.teacher_from, positive=False)
        _number(f"{where}.target_leak", self.target_leak, positive=False)
        steps = self.period / self.dt
        if abs(steps - round(steps)) > 1e-9 * steps:
            raise ValueError(f"{where}.dt: received {self.dt!r}, expected a divisor of period = "
                             f"{self.period!r} (whole steps per minibatch, so no step straddles "
                             "a switch of minibatch)")
        if self.teacher_from >= self.period:
            raise ValueError(f"{where}.teacher_from: received {self.teacher_from!r}, expected a "
                             f"number in [0, period = {self.period!r})")
        if self.gate not in ("settled", "always"):
            raise ValueError(f"{where}.gate: received {self.gate!r}, expected 'settled' or "
                             "'always'")
        if self.form not in ("dtp1", "dtp", "local_loss"):
            raise ValueError(f"{where}.form: received {self.form!r}, expected 'dtp1', 'dtp' or "
                             "'local_loss'")
        from solvers.methods import METHODS as STEPPERS
        from solvers.training import TRAINING_METHODS
        if self.integrator not in (*STEPPERS, *TRAINING_METHODS):
            raise ValueError(f"{where}.integrator: received {self.integrator!r}, expected a "
                             f"fixed-step method, one of "
                             f"{sorted(STEPPERS) + list(TRAINING_METHODS)}")
        for name in ("circuit", "gate_args", "feedback"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"{where}.{name}: received {getattr(self, name)!r}, expected "
                                 "a mapping of keyword arguments")
        target, exclude = CIRCUIT_ARGS[method]
        _check_keys(f"{where}.circuit", self.circuit, target, exclude)
        if self.gate_args:
            if method != "pc":
                raise ValueError(f"{where}.gate_args: received {dict(self.gate_args)!r}, "
                                 "expected none (only pc has an ArrivalGate)")
            _check_keys(f"{where}.gate_args", self.gate_args, ArrivalGate, ())
        if self.feedback:
            if method != "iterated_dtp":
                raise ValueError(f"{where}.feedback: received {dict(self.feedback)!r}, "
                                 "expected none (only iterated_dtp learns decoders)")
            _check_keys(f"{where}.feedback", self.feedback, FeedbackLearning, ())


def _check_keys(where: str, given: Mapping[str, Any], target: Callable[..., Any],
                exclude: tuple[str, ...]) -> None:
    valid = Section(target, exclude).valid_keys()
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (keyword arguments of "
                         f"{getattr(target, '__qualname__', target)}); valid keys: {valid}")


SCHEMA = Schema(sections={
    "digits": Section(datasets.digits, exclude=("dtype",)),
    "mnist1d": Section(datasets.mnist1d, exclude=("dtype",)),
    "network": Section(ForwardNetwork, exclude=("widths", "weights", "biases", "replicas",
                                                 "seed", "output_activation")),
    "training": Section(Training),
}, demo={
    "task": "digits",
    "hidden": [32],
    "methods": list(METHODS),
    "method": {},
    "threads": 1,
})


def load(config: str | Path | Mapping[str, Any] | None) -> Config:
    """A validated config (``config``: a YAML path, a mapping or None for the defaults)."""
    cfg = load_config(config, SCHEMA)
    for section in ("network", "training"):
        cfg.setdefault(section, {})
    if cfg["task"] not in TASKS:
        raise ValueError(f"config key 'task': received {cfg['task']!r}, expected one of "
                         f"{list(TASKS)}")
    hidden = cfg["hidden"]
    if not isinstance(hidden, list) or not hidden or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in hidden):
        raise ValueError(f"config key 'hidden': received {hidden!r}, expected a non-empty list "
                         "of positive hidden widths, e.g. [32]")
    methods = cfg["methods"]
    if not isinstance(methods, list) or not methods or any(m not in METHODS for m in methods) \
            or len(set(methods)) != len(methods):
        raise ValueError(f"config key 'methods': received {methods!r}, expected a non-empty "
                         f"list of distinct names drawn from {list(METHODS)}")
    specs = cfg["method"]
    if not isinstance(specs, Mapping):
        raise ValueError(f"config key 'method': received {specs!r}, expected a mapping from "
                         "method names to their settings")
    unknown = sorted(set(specs) - set(METHODS))
    if unknown:
        raise ValueError(f"config key 'method': unknown methods {unknown}; valid methods: "
                         f"{list(METHODS)}")
    for m in methods:
        spec(cfg, m)
    Training(**cfg["training"])
    _int("config key 'threads'", cfg["threads"], 1)
    return cfg


def spec(cfg: Config, method: str) -> MethodSpec:
    """The method's settings (``method.<name>`` in the config over the defaults), checked."""
    try:
        s = dataclass_spec(cfg["method"].get(method) or {})
    except (TypeError, ValueError) as err:
        raise ValueError(f"method.{method}: {err}") from None
    s.check(method)
    return s


def dataclass_spec(given: Mapping[str, Any]) -> MethodSpec:
    if not isinstance(given, Mapping):
        raise ValueError(f"received {given!r}, expected a mapping of settings")
    known = [f.name for f in dataclasses.fields(MethodSpec)]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown keys {unknown}; valid keys: {known}")
    return MethodSpec(**given)


# -- building a method ------------------------------------------------------------------------

@dataclass
class Setup:
    """What a method's run needs: the circuit, its initial state, the stream of minibatches and
    how to read test predictions ``[S, M, n_L]`` off a state."""

    circuit: Any
    y0: dict[str, torch.Tensor]
    stream: Callable[[int], tuple[torch.Tensor, torch.Tensor]]
    predict: Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]
    spec: MethodSpec
    presentations: int
    per_epoch: int


def load_task(cfg: Config):
    dtype = cfg["network"].get("dtype", torch.float64)
    return TASKS[cfg["task"]](**cfg.get(cfg["task"], {}), dtype=dtype)


def network(cfg: Config, task, output_activation: str) -> ForwardNetwork:
    tr = Training(**cfg["training"])
    widths = [task.inputs, *cfg["hidden"], task.classes]
    return ForwardNetwork(widths, seed=list(range(tr.seeds)),
                          output_activation=output_activation, **cfg["network"])


def build(cfg: Config, task, method: str) -> Setup:
    """The learning circuit of ``method`` on ``task`` with S = ``training.seeds`` replicas."""
    tr, s = Training(**cfg["training"]), spec(cfg, method)
    n = task.x_train.shape[0]
    if tr.batch > n:
        raise ValueError(f"training.batch: received {tr.batch}, expected at most the {n} "
                         "training examples")
    order = minibatch_order(n, tr.batch, tr.epochs, tr.order_seed)
    x_train, y_train = task.x_train, task.y_train

    def stream(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return x_train[order[k]], y_train[order[k]]
    net = network(cfg, task, s.output_activation)
    x0, t0 = stream(0)
    circuit = learning_circuit(method, net, x0, t0, eta=s.eta, gate=s.gate, theta=s.theta,
                               period=s.period, form=s.form, anchor=s.target_leak,
                               circuit=s.circuit, gate_args=s.gate_args,
                               feedback=s.feedback if method == "iterated_dtp" else None)
    predict = circuit.outputs
    return Setup(circuit, circuit.initial_state(), stream, predict, s, order.shape[0],
                 n // tr.batch)


def accuracy(setup: Setup, y: Mapping[str, torch.Tensor], task) -> np.ndarray:
    """Per-replica test accuracy ``[S]`` (argmax of the output)."""
    with torch.no_grad():
        out = setup.predict(y, task.x_test)
    hits = out.argmax(-1) == task.labels_test.to(out.device)
    return hits.to(torch.float64).mean(-1).cpu().numpy()


# -- checkpoints ------------------------------------------------------------------------------

class Stopped(KeyboardInterrupt):
    """``--stop-after``: the run stopped itself after a checkpoint (as Ctrl-C would)."""


def checkpoint_path(out: Path, task: str, method: str) -> Path:
    return out / "checkpoints" / f"{task}_{method}.pt"


def load_checkpoint(path: Path, cfg: Config, method: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    payload = checkpoint.load(path, required=("config", "k", "y", "diverged", "seconds",
                                              "steps", "history"))
    if payload.get("config") != json.loads(json.dumps(jsonable(cfg))):
        raise ValueError(f"--resume: the checkpoint {str(path)!r} was written with a different "
                         "config; expected the same config, or run without --resume to start "
                         "afresh")
    return payload


# -- one method -------------------------------------------------------------------------------

def run_method(cfg: Config, task, method: str, out: Path, *, resume: bool = False,
               stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``method`` (S seeds at once) in one integration, checkpointing on the way.
    Returns ``{"history", "seconds", "diverged", "y", ...}``."""
    tr = Training(**cfg["training"])
    setup = build(cfg, task, method)
    s, P, per_epoch = setup.spec, setup.presentations, setup.per_epoch
    every = max(1, tr.checkpoint_every // tr.batch)
    chunk = math.gcd(per_epoch, every)
    if s.integrator == "exp_partitioned" and chunk % s.relinearise_every:
        raise ValueError(f"method.{method}.relinearise_every: received {s.relinearise_every}, "
                         f"expected a divisor of {chunk} presentations (the chunk between "
                         "checkpoints and evaluations: a resumed run must relinearise where "
                         "the uninterrupted one did)")
    path = checkpoint_path(out, cfg["task"], method)
    saved = load_checkpoint(path, cfg, method) if resume else None
    if saved is None:
        state = {"k": 0, "y": setup.y0, "diverged": None, "seconds": 0.0, "steps": 0,
                 "history": {"epoch": [0.0], "test_accuracy": [accuracy(setup, setup.y0, task)
                                                               .tolist()]}}
    else:
        state = {k: saved[k] for k in ("k", "y", "diverged", "seconds", "steps", "history")}
    config_json = json.loads(json.dumps(jsonable(cfg)))
    clock = {"t": time.perf_counter()}

    def write_checkpoint(k: int, y, flags) -> None:
        checkpoint.save(path, {"config": config_json, "method": method, "k": k, "y": y,
                               "diverged": flags, "seconds": state["seconds"],
                               "steps": state["steps"], "history": state["history"]})

    def on_chunk(k: int, y, sol) -> None:
        now = time.perf_counter()
        state["seconds"] += now - clock["t"]
        state["steps"] = steps0 + int(sol.stats["steps"])
        flags["f"] = sol.stats["diverged"]
        if k % per_epoch == 0:
            state["history"]["epoch"].append(k / per_epoch)
            state["history"]["test_accuracy"].append(accuracy(setup, y, task).tolist())
        if k % every == 0 or k == P:
            write_checkpoint(k, y, flags["f"].clone())
        if stop_after is not None and k >= stop_after and k < P:
            # like Ctrl-C: whatever was done since the last checkpoint is lost
            raise Stopped(f"stopped after {k} presentations (--stop-after {stop_after})")
        clock["t"] = time.perf_counter()

    steps0 = state["steps"]              # train() reports its own totals from `start` on
    flags = {"f": (torch.zeros(next(iter(state["y"].values())).shape[0], dtype=torch.bool)
                   if state["diverged"] is None else state["diverged"].clone())}

    if state["k"] < P:
        desc = f"{cfg['task']} {method}"
        setup.circuit.vector_field(state["k"] * s.period, dict(state["y"]))   # warm-up, untimed
        clock["t"] = time.perf_counter()
        result = integrate(setup.circuit, state["y"], setup.stream, period=s.period,
                           presentations=P, dt=s.dt, method=s.integrator, chunk=chunk,
                           start=state["k"], teacher_from=s.teacher_from,
                           diverged=state["diverged"], on_chunk=on_chunk,
                           relinearise_every=s.relinearise_every,
                           progress=progress and None)
        y, diverged = result.y, result.diverged
        if progress:
            print(f"  {desc}: {P} presentations in {state['seconds']:.1f} s", file=sys.stderr)
    else:
        y, diverged = state["y"], state["diverged"]
    return {"y": y, "history": state["history"], "seconds": state["seconds"],
            "steps": state["steps"], "diverged": diverged.tolist(), "presentations": P,
            "per_epoch": per_epoch, "epochs": tr.epochs, "spec": dataclasses.asdict(s)}


# -- summary, table, figure -------------------------------------------------------------------

def runs_of(task_name: str, method: str, res: Mapping[str, Any], bp_seconds: float | None
            ) -> list[dict[str, Any]]:
    """One summary row per seed (``seconds``: wall time per epoch of the whole integration,
    all seeds together)."""
    acc = np.asarray(res["history"]["test_accuracy"], dtype=float)     # [evaluations, S]
    per_epoch_s = res["seconds"] / res["epochs"]
    rows = []
    for seed in range(acc.shape[1]):
        rows.append({"task": task_name, "method": method, "seed": seed,
                     "test_accuracy": float(acc[-1, seed]), "seconds": per_epoch_s,
                     "seconds_per_epoch": per_epoch_s, "seconds_total": res["seconds"],
                     "ratio_to_backprop": (per_epoch_s / bp_seconds if bp_seconds else None),
                     "diverged": bool(res["diverged"][seed]), "epochs": res["epochs"],
                     "initial_test_accuracy": float(acc[0, seed]),
                     "curve": {"epoch": res["history"]["epoch"],
                               "test_accuracy": acc[:, seed].tolist()},
                     "settings": {k: res["spec"][k] for k in
                                  ("eta", "period", "dt", "gate", "integrator")},
                     "steps": res["steps"]})
    return rows


def table(runs: list[Mapping[str, Any]], chance: Mapping[str, float] | None = None) -> str:
    """The markdown table: accuracy mean ± std over seeds, seconds per epoch (whole
    integration, all seeds at once) and its ratio to backprop's."""
    lines = ["| task | method | test accuracy (mean ± std over seeds) | seeds | "
             "s / epoch (all seeds in one integration) | × backprop | diverged |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    for (task_name, method), rows in groups.items():
        acc = np.array([r["test_accuracy"] for r in rows])
        ratio = rows[0].get("ratio_to_backprop")
        lines.append(f"| {task_name} | {LABELS.get(method, method)} | "
                     f"{100 * acc.mean():.1f} ± {100 * acc.std():.1f} % | {len(rows)} | "
                     f"{rows[0]['seconds']:.2f} | "
                     f"{'—' if ratio is None else f'{ratio:.1f}'} | "
                     f"{sum(bool(r.get('diverged')) for r in rows)} |")
    if chance:
        lines.append("")
        lines.append("Chance (most frequent test class): " + ", ".join(
            f"{t} {100 * c:.1f} %" for t, c in chance.items()) + ".")
    return "\n".join(lines) + "\n"


def figure(path: Path, title: str, results: Mapping[str, Mapping[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for method, res in results.items():
        acc = np.asarray(res["history"]["test_accuracy"], dtype=float)
        ep = np.asarray(res["history"]["epoch"], dtype=float)
        m, s = acc.mean(1), acc.std(1)
        ax.plot(ep, m, marker="o", ms=3, label=LABELS.get(method, method))
        ax.fill_between(ep, m - s, m + s, alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{title} (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config: str | Path | Mapping[str, Any] | None, out: str | Path, *,
        resume: bool = False, stop_after: int | None = None,
        progress: bool = True) -> dict[str, Any]:
    """Train every configured method on the task; write summary.json, table.md and the
    figure into ``out``. Returns the summary."""
    cfg = load(config)
    if stop_after is not None:
        _int("--stop-after", stop_after, 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with intra_op_threads(cfg["threads"]):
        task = load_task(cfg)
        for method in cfg["methods"]:
            results[method] = run_method(cfg, task, method, out, resume=resume,
                                         stop_after=stop_after, progress=progress)
    bp = results.get(REFERENCE)
    bp_seconds = bp["seconds"] / bp["epochs"] if bp else None
    runs = [r for m, res in results.items() for r in runs_of(cfg["task"], m, res, bp_seconds)]
    chance = {cfg["task"]: task.chance}
    summary = {"runs": runs, "task": cfg["task"], "chance": task.chance,
               "widths": [task.inputs, *cfg["hidden"], task.classes],
               "seconds": time.perf_counter() - start, "config": cfg}
    summary = jsonable(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    (out / "table.md").write_text(table(runs, chance))
    figure(out / f"{cfg['task']}.png", f"{task.name} {summary['widths']}", results)
    return summary


def final_weights(out: str | Path, task: str, method: str) -> dict[str, torch.Tensor]:
    """The state a finished run's last checkpoint holds (for comparisons)."""
    return checkpoint.load(checkpoint_path(Path(out), task, method), required=("y",))["y"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/digits.yaml")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--resume", action="store_true",
                        help="continue every method from its last checkpoint in OUT")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="stop (as Ctrl-C would: work since the last checkpoint is lost) at "
                             "the first chunk boundary at or after N presentations of a method")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        load(args.config)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    try:
        summary = run(args.config, args.out, resume=args.resume, stop_after=args.stop_after,
                      progress=not args.no_progress)
    except KeyboardInterrupt as err:
        print(f"interrupted ({err or 'Ctrl-C'}); rerun with --resume to continue from the last "
              f"checkpoint in {args.out}/checkpoints", file=sys.stderr)
        return 130
    print(Path(args.out, "table.md").read_text())
    print(f"total {summary['seconds']:.1f} s; summary.json, table.md and figure in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
