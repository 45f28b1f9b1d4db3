"""Train the credit-assignment methods on one task, fully in continuous time (the method table).

    python -m demos.train --config configs/digits.yaml --out DIR [--resume] [--stop-after N]

Every method of :mod:`circuits.registry` (``methods:`` in the config, settings per method under
``method:``: :class:`MethodSpec`) is *one* integration (:func:`solvers.train`): the weights are
state, a drive shows minibatch k during ``[k·period, (k+1)·period)``, and the circuit's own
dynamics (settling credit populations, targets, predictions) run on from one minibatch to the
next. The seeds are the replica axis S of that integration (``ForwardNetwork(widths, seed=[0, 1,
2])``; FA's random feedback is drawn per replica too). Each method's ``period`` and ``dt`` were
chosen by measuring how long its credit populations take to settle (see the config's comments).

After every epoch the test accuracy (argmax of the output, per replica) is recorded; every
``training.checkpoint_every`` examples the state, the divergence flags, the history and the wall
time so far are written to ``DIR/checkpoints/<task>_<method>.pt`` (atomically). Interrupted
(Ctrl-C), a rerun with ``--resume`` continues every method from its last checkpoint (finished
ones are read back) and ends bit-for-bit where an uninterrupted run ends: the minibatch order is
a pure function of the seed and the position, and the chunk grid of the integration does not
depend on where it was resumed.

Writes ``DIR/summary.json`` (``{"runs": [{task, method, seed, test_accuracy, seconds, ...}]}``,
one entry per method × seed; ``seconds`` is the integration's wall time *per epoch for all seeds
together*, the same on every seed's row), ``DIR/table.md`` (:func:`demos.method_table.table`)
and ``DIR/<task>.png`` (test accuracy against epochs per method, mean ± std over seeds).
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

from . import datasets, plots
from .config import (Config, Schema, Section, check_int, check_keywords, check_number,
                     dataclass_config, intra_op_threads, jsonable, load_config, resume_checkpoint)
from .method_table import table         # re-exported, as are METHODS and LABELS

TASKS = {"digits": datasets.digits, "mnist1d": datasets.mnist1d}
REFERENCE = "backprop"


# -- configuration ----------------------------------------------------------------------------

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
            check_int(f"training.{name}", getattr(self, name), 1)
        check_int("training.order_seed", self.order_seed, 0)


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
    forward pass at this rate (``anchor`` of :class:`circuits.TargetPropagation`).
    relinearise_every: presentations between Jacobians of ``exp_partitioned``.  circuit:
    keyword arguments of the method's circuit (e.g. DI's ``alpha``, ``k_i``).  gate_args:
    :class:`circuits.ArrivalGate`'s (``pc``).  feedback: ``iterated_dtp``'s decoder learning
    (:class:`circuits.FeedbackLearning`)."""

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
        for name in ("eta", "period", "dt", "theta", "teacher_from", "target_leak"):
            check_number(f"{where}.{name}", getattr(self, name),
                         positive=name not in ("teacher_from", "target_leak"))
        check_int(f"{where}.relinearise_every", self.relinearise_every, 1)
        steps = self.period / self.dt
        if abs(steps - round(steps)) > 1e-9 * steps:
            raise ValueError(f"{where}.dt: received {self.dt!r}, expected a divisor of period = "
                             f"{self.period!r} (whole steps per minibatch, so no step straddles "
                             "a switch of minibatch)")
        if self.teacher_from >= self.period:
            raise ValueError(f"{where}.teacher_from: received {self.teacher_from!r}, expected a "
                             f"number in [0, period = {self.period!r})")
        for name, valid in (("gate", ("settled", "always")), ("form", ("dtp1", "dtp",
                                                                         "local_loss"))):
            if getattr(self, name) not in valid:
                raise ValueError(f"{where}.{name}: received {getattr(self, name)!r}, expected "
                                 f"one of {list(valid)}")
        from solvers.methods import METHODS as STEPPERS
        from solvers import TRAINING_METHODS
        if self.integrator not in (*STEPPERS, *TRAINING_METHODS):
            raise ValueError(f"{where}.integrator: received {self.integrator!r}, expected a "
                             f"fixed-step method, one of "
                             f"{sorted(STEPPERS) + list(TRAINING_METHODS)}")
        for name, (owner, target, exclude) in {
                "circuit": (method, *CIRCUIT_ARGS[method]), "gate_args": ("pc", ArrivalGate, ()),
                "feedback": ("iterated_dtp", FeedbackLearning, ())}.items():
            given = getattr(self, name)
            if not isinstance(given, Mapping):
                raise ValueError(f"{where}.{name}: received {given!r}, expected a mapping of "
                                 "keyword arguments")
            if given and method != owner:
                raise ValueError(f"{where}.{name}: received {dict(given)!r}, expected none "
                                 f"(only {owner} takes {name}: {target.__qualname__}'s "
                                 "keyword arguments)")
            check_keywords(f"{where}.{name}", given, target, exclude)


SCHEMA = Schema(sections={
    "digits": Section(datasets.digits, exclude=("dtype",)),
    "mnist1d": Section(datasets.mnist1d, exclude=("dtype",)),
    "network": Section(ForwardNetwork, exclude=("widths", "weights", "biases", "replicas",
                                                 "seed", "output_activation")),
    "training": Section(Training),
}, demo={"task": "digits", "hidden": [32], "methods": list(METHODS), "method": {}, "threads": 1})


def load(config: str | Path | Mapping[str, Any] | None) -> Config:
    """A validated config (``config``: a YAML path, a mapping or None for the defaults)."""
    cfg = load_config(config, SCHEMA)
    for section in ("network", "training"):
        cfg.setdefault(section, {})
    if cfg["task"] not in TASKS:
        raise ValueError(f"config key 'task': received {cfg['task']!r}, expected one of "
                         f"{list(TASKS)}")
    hidden, methods, specs = cfg["hidden"], cfg["methods"], cfg["method"]
    if not isinstance(hidden, list) or not hidden or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in hidden):
        raise ValueError(f"config key 'hidden': received {hidden!r}, expected a non-empty list "
                         "of positive hidden widths, e.g. [32]")
    if not isinstance(methods, list) or not methods or any(m not in METHODS for m in methods) \
            or len(set(methods)) != len(methods):
        raise ValueError(f"config key 'methods': received {methods!r}, expected a non-empty "
                         f"list of distinct names drawn from {list(METHODS)}")
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
    check_int("config key 'threads'", cfg["threads"], 1)
    return cfg


def spec(cfg: Config, method: str) -> MethodSpec:
    """The method's settings (``method.<name>`` in the config over the defaults), checked."""
    try:
        s = dataclass_config(MethodSpec, cfg["method"].get(method))
    except (TypeError, ValueError) as err:       # not a mapping, or unknown keys
        raise ValueError(f"method.{method}: {str(err).removeprefix('config: ')}") from None
    s.check(method)
    return s


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
    widths = [task.inputs, *cfg["hidden"], task.classes]
    return ForwardNetwork(widths, seed=list(range(Training(**cfg["training"]).seeds)),
                          output_activation=output_activation, **cfg["network"])


def build(cfg: Config, task, method: str) -> Setup:
    """The learning circuit of ``method`` on ``task`` with S = ``training.seeds`` replicas."""
    tr, s = Training(**cfg["training"]), spec(cfg, method)
    n = task.x_train.shape[0]
    if tr.batch > n:
        raise ValueError(f"training.batch: received {tr.batch}, expected at most the {n} "
                         "training examples")
    order = minibatch_order(n, tr.batch, tr.epochs, tr.order_seed)

    def stream(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return task.x_train[order[k]], task.y_train[order[k]]
    circuit = learning_circuit(method, network(cfg, task, s.output_activation), *stream(0),
                               eta=s.eta, gate=s.gate, theta=s.theta, period=s.period,
                               form=s.form, anchor=s.target_leak, circuit=s.circuit,
                               gate_args=s.gate_args,
                               feedback=s.feedback if method == "iterated_dtp" else None)
    return Setup(circuit, circuit.initial_state(), stream, circuit.outputs, s, order.shape[0],
                 n // tr.batch)


def accuracy(setup: Setup, y: Mapping[str, torch.Tensor], task) -> np.ndarray:
    """Per-replica test accuracy ``[S]`` (argmax of the output)."""
    with torch.no_grad():
        out = setup.predict(y, task.x_test)
    hits = out.argmax(-1) == task.labels_test.to(out.device)
    return hits.to(torch.float64).mean(-1).cpu().numpy()


# -- one method, checkpointed -----------------------------------------------------------------

class Stopped(KeyboardInterrupt):
    """``--stop-after``: the run stopped itself after a checkpoint (as Ctrl-C would)."""


SAVED = ("k", "y", "diverged", "seconds", "steps", "history")      # a checkpoint, with config


def checkpoint_path(out: Path, task: str, method: str) -> Path:
    return out / "checkpoints" / f"{task}_{method}.pt"


def run_method(cfg: Config, task, method: str, out: Path, *, resume: bool = False,
               stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``method`` (S seeds at once) in one integration, checkpointing on the way.
    Returns ``{"history", "seconds", "diverged", "y", ...}``."""
    tr, setup = Training(**cfg["training"]), build(cfg, task, method)
    s, P, per_epoch = setup.spec, setup.presentations, setup.per_epoch
    every = max(1, tr.checkpoint_every // tr.batch)
    chunk = math.gcd(per_epoch, every)
    if s.integrator == "exp_partitioned" and chunk % s.relinearise_every:
        raise ValueError(f"method.{method}.relinearise_every: received {s.relinearise_every}, "
                         f"expected a divisor of {chunk} presentations (the chunk between "
                         "checkpoints and evaluations: a resumed run must relinearise where "
                         "the uninterrupted one did)")
    path = checkpoint_path(out, cfg["task"], method)
    if resume and path.is_file():
        saved = resume_checkpoint(path, cfg, required=SAVED)
        state = {k: saved[k] for k in SAVED}
    else:
        state = {"k": 0, "y": setup.y0, "diverged": None, "seconds": 0.0, "steps": 0,
                 "history": {"epoch": [0.0], "test_accuracy": [accuracy(setup, setup.y0, task)
                                                               .tolist()]}}
    steps0, config, clock = state["steps"], jsonable(cfg), time.perf_counter()

    def on_chunk(k: int, y, sol) -> None:
        nonlocal clock
        state["seconds"] += time.perf_counter() - clock
        state["steps"] = steps0 + int(sol.stats["steps"])   # train() counts from `start` on
        if k % per_epoch == 0:
            state["history"]["epoch"].append(k / per_epoch)
            state["history"]["test_accuracy"].append(accuracy(setup, y, task).tolist())
        if k % every == 0 or k == P:
            checkpoint.save(path, {"config": config, "method": method, "k": k, "y": y,
                                   "diverged": sol.stats["diverged"].clone(),
                                   **{key: state[key] for key in ("seconds", "steps",
                                                                  "history")}})
        if stop_after is not None and k >= stop_after and k < P:
            # like Ctrl-C: whatever was done since the last checkpoint is lost
            raise Stopped(f"stopped after {k} presentations (--stop-after {stop_after})")
        clock = time.perf_counter()

    y, diverged = state["y"], state["diverged"]
    if state["k"] < P:
        kw = dict(period=s.period, dt=s.dt, method=s.integrator, teacher_from=s.teacher_from,
                  relinearise_every=s.relinearise_every)
        # warm-up, untimed and discarded: one presentation pays the one-off costs (first
        # evaluation, torch.func's imports at a first linearisation)
        integrate(setup.circuit, y, setup.stream, presentations=1, progress=False, **kw)
        clock = time.perf_counter()
        result = integrate(setup.circuit, y, setup.stream, presentations=P, chunk=chunk,
                           start=state["k"], diverged=diverged, on_chunk=on_chunk,
                           progress=progress and None, **kw)
        y, diverged = result.y, result.diverged
        if progress:
            print(f"  {cfg['task']} {method}: {P} presentations in {state['seconds']:.1f} s",
                  file=sys.stderr)
    return {"y": y, "history": state["history"], "seconds": state["seconds"],
            "steps": state["steps"], "diverged": diverged.tolist(), "presentations": P,
            "per_epoch": per_epoch, "epochs": tr.epochs, "spec": dataclasses.asdict(s)}


# -- the run: summary, table, figure ----------------------------------------------------------

def runs_of(task_name: str, method: str, res: Mapping[str, Any], bp_seconds: float | None
            ) -> list[dict[str, Any]]:
    """One summary row per seed (``seconds``: wall time per epoch of the whole integration,
    all seeds together)."""
    acc = np.asarray(res["history"]["test_accuracy"], dtype=float)     # [evaluations, S]
    per_epoch_s = res["seconds"] / res["epochs"]
    return [{"task": task_name, "method": method, "seed": seed,
             "test_accuracy": float(acc[-1, seed]), "seconds": per_epoch_s,
             "seconds_per_epoch": per_epoch_s, "seconds_total": res["seconds"],
             "ratio_to_backprop": (per_epoch_s / bp_seconds if bp_seconds else None),
             "diverged": bool(res["diverged"][seed]), "epochs": res["epochs"],
             "initial_test_accuracy": float(acc[0, seed]),
             "curve": {"epoch": res["history"]["epoch"], "test_accuracy": acc[:, seed].tolist()},
             "settings": {k: res["spec"][k] for k in ("eta", "period", "dt", "gate",
                                                       "integrator")},
             "steps": res["steps"]} for seed in range(acc.shape[1])]


def run(config: str | Path | Mapping[str, Any] | None, out: str | Path, *,
        resume: bool = False, stop_after: int | None = None,
        progress: bool = True) -> dict[str, Any]:
    """Train every configured method on the task; write summary.json, table.md and the
    figure into ``out``. Returns the summary."""
    cfg = load(config)
    if stop_after is not None:
        check_int("--stop-after", stop_after, 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with intra_op_threads(cfg["threads"]):
        task = load_task(cfg)
        results = {m: run_method(cfg, task, m, out, resume=resume, stop_after=stop_after,
                                 progress=progress) for m in cfg["methods"]}
    bp = results.get(REFERENCE)
    bp_seconds = bp["seconds"] / bp["epochs"] if bp else None
    runs = [r for m, res in results.items() for r in runs_of(cfg["task"], m, res, bp_seconds)]
    widths = [task.inputs, *cfg["hidden"], task.classes]
    summary = jsonable({"runs": runs, "task": cfg["task"], "chance": task.chance,
                        "widths": widths, "seconds": time.perf_counter() - start,
                        "config": cfg})
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    (out / "table.md").write_text(table(runs, {cfg["task"]: task.chance}))
    plots.seed_curves_figure(out / f"{cfg['task']}.png", {
        LABELS.get(m, m): (res["history"]["epoch"], res["history"]["test_accuracy"])
        for m, res in results.items()}, title=f"{task.name} {widths} (mean ± std over seeds)")
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
