"""Train the credit-assignment methods on one task, fully in continuous time (the method table).

    python -m demos.train --config configs/digits.yaml --out DIR [--resume] [--stop-after N]

Every method of :mod:`circuits.registry` (``methods:`` in the config, settings per method under
``method:``, :class:`~demos.method_config.MethodSpec`) is *one* integration
(:func:`solvers.train`): the weights are state, a drive shows minibatch k during ``[k·period,
(k+1)·period)``, and the seeds are the replica axis S (FA's random feedback is drawn per replica
too). Each method's ``period`` and ``dt`` were chosen by measuring how long its credit
populations take to settle (see the config's comments).

After every epoch the test accuracy (argmax, per replica) is recorded; every
``training.checkpoint_every`` examples the state, divergence flags, history and wall time are
written atomically to ``DIR/checkpoints/<task>_<method>.pt`` (with a checksum:
:mod:`solvers.checkpoint`). ``--resume`` continues every method from its last checkpoint and ends
bit-for-bit where an uninterrupted run ends (the minibatch order is a function of seed and
position; the chunk grid does not depend on where it was resumed); every checkpoint is verified
before any training, a method the interrupted run had not reached starts afresh (said on
stderr), and ``--resume`` with no checkpoint in DIR at all is an error.

The config is merged over its task's shipped config (``configs/<task>.yaml``,
:func:`demos.method_config.load`), so a partial config changes only what it names.

Writes ``DIR/summary.json`` (``{"runs": [{task, method, seed, test_accuracy, seconds, ...}]}``,
one entry per method × seed; ``seconds`` is the integration's wall time *per epoch for all seeds
together*), ``DIR/table.md`` (:func:`demos.method_table.table`) and ``DIR/<task>.png`` (test
accuracy against epochs per method, mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from circuits.registry import LABELS, METHODS, learning_circuit
from solvers import checkpoint
from solvers import train as integrate
from workbench import plots

from .config import (Config, check_int, intra_op_threads, jsonable, no_checkpoint, output_dir,
                     resume_checkpoint)
from .method_config import MethodSpec, Training, load, load_task, network, spec, table_name
from .method_table import table
from .reports import write_summary

REFERENCE = "backprop"
__all__ = ["METHODS", "LABELS", "MethodSpec", "Training", "load", "load_task", "network", "spec",
           "table", "Setup", "build", "accuracy", "schedule", "restore", "run_method", "Plan",
           "prepare", "has_checkpoint", "run", "final_weights", "main"]

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


def build(cfg: Config, task, method: str) -> Setup:
    """The learning circuit of ``method`` on ``task`` with S = ``training.seeds`` replicas."""
    tr, s = Training(**cfg["training"]), spec(cfg, method)
    order = task.minibatch_order(tr.batch, tr.epochs, tr.order_seed)
    stream = functools.partial(task.minibatch, order)
    circuit = learning_circuit(method, network(cfg, task, s.output_activation), *stream(0),
                               eta=s.eta, gate=s.gate, theta=s.theta, period=s.period,
                               form=s.form, anchor=s.target_leak, circuit=s.circuit,
                               gate_args=s.gate_args,
                               feedback=s.feedback if method == "iterated_dtp" else None,
                               loss=None if method == "local_decoders" else tr.loss,
                               flow=s.flow, reset=s.reset)
    return Setup(circuit, circuit.initial_state(), stream, circuit.outputs, s, order.shape[0],
                 task.x_train.shape[0] // tr.batch)


def accuracy(setup: Setup, y: Mapping[str, torch.Tensor], task) -> np.ndarray:
    """Per-replica test accuracy ``[S]`` (argmax of the output)."""
    with torch.no_grad():
        return task.accuracy(setup.predict(y, task.x_test)).cpu().numpy()


# -- one method, checkpointed -----------------------------------------------------------------

class Stopped(KeyboardInterrupt):
    """``--stop-after``: the run stopped itself after a checkpoint (as Ctrl-C would)."""


SAVED = ("k", "y", "diverged", "seconds", "steps", "history")      # a checkpoint, with config


def checkpoint_path(out: Path, task: str, method: str) -> Path:
    return out / "checkpoints" / f"{task}_{method}.pt"


def schedule(cfg: Config, task, method: str) -> tuple[int, int]:
    """``(every, chunk)``: presentations between checkpoints, and the chunk of the integration
    (between checkpoints and evaluations). A ``relinearise_every`` that does not divide the
    chunk is an error naming it."""
    tr, s = Training(**cfg["training"]), spec(cfg, method)
    every = max(1, tr.checkpoint_every // tr.batch)
    chunk = math.gcd(task.x_train.shape[0] // tr.batch, every)
    if s.integrator == "exp_partitioned" and chunk % s.relinearise_every:
        raise ValueError(f"method.{method}.relinearise_every: received {s.relinearise_every}, "
                         f"expected a divisor of {chunk} presentations (the chunk between "
                         "checkpoints and evaluations: a resumed run must relinearise where "
                         "the uninterrupted one did)")
    return every, chunk


def restore(path: Path, cfg: Config, setup: Setup, method: str, chunk: int) -> dict[str, Any]:
    """The run saved at ``path``: its checksum verified (:func:`solvers.checkpoint.load`),
    written with ``cfg`` for ``method``, its state shaped like ``setup``'s, at a chunk boundary;
    else a :class:`~solvers.checkpoint.CheckpointError` naming the file and what is wrong."""
    saved = resume_checkpoint(path, cfg, required=SAVED)
    if saved.get("method", method) != method:
        raise checkpoint.CheckpointError(
            f"checkpoint {str(path)!r}: written for method {saved['method']!r}, expected "
            f"{method!r}; run without --resume to start afresh")
    P = setup.presentations
    k = checkpoint.check_count(path, "k", saved["k"], P)
    if k % chunk and k != P:
        raise checkpoint.CheckpointError(
            f"checkpoint {str(path)!r}: k is {k}, expected a multiple of the chunk ({chunk} "
            f"presentations) or {P}; run without --resume to start afresh")
    checkpoint.check_state(path, "y", saved["y"], setup.y0)
    S = next(iter(setup.y0.values())).shape[0]
    if saved["diverged"] is not None:
        checkpoint.check_state(path, "diverged", saved["diverged"],
                               torch.zeros(S, dtype=torch.bool))
    history = saved["history"]
    if not isinstance(history, Mapping) or not {"epoch", "test_accuracy"} <= set(history) \
            or not all(isinstance(history[key], list) for key in ("epoch", "test_accuracy")):
        raise checkpoint.CheckpointError(
            f"checkpoint {str(path)!r}: history is {type(history).__name__}, expected a mapping "
            "with lists 'epoch' and 'test_accuracy'; run without --resume to start afresh")
    for key, kind in (("seconds", (int, float)), ("steps", int)):
        if isinstance(saved[key], bool) or not isinstance(saved[key], kind):
            raise checkpoint.CheckpointError(
                f"checkpoint {str(path)!r}: {key} is {saved[key]!r}, expected a number; run "
                "without --resume to start afresh")
    return {key: saved[key] for key in SAVED}


def run_method(cfg: Config, task, method: str, out: Path, *, resume: bool = False,
               stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``method`` (S seeds at once) in one integration, checkpointing on the way.
    ``resume``: from its checkpoint if there is one (verified by :func:`restore`), else from
    the start, saying so. Returns ``{"history", "seconds", "diverged", "y", ...}``."""
    tr, setup = Training(**cfg["training"]), build(cfg, task, method)
    s, P, per_epoch = setup.spec, setup.presentations, setup.per_epoch
    every, chunk = schedule(cfg, task, method)
    path = checkpoint_path(out, cfg["task"], method)
    if resume and path.is_file():
        state = restore(path, cfg, setup, method, chunk)
    else:
        if resume:
            print(f"--resume: no checkpoint for {method} at {path} (the interrupted run had not "
                  "reached it); starting it from presentation 0", file=sys.stderr)
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

def runs_of(task_name: str, method: str, res: Mapping[str, Any], bp_seconds: float | None,
            table: str | None = None) -> list[dict[str, Any]]:
    """One summary row per seed (``seconds``: wall time per epoch of the whole integration,
    all seeds together; ``table``: the config's table name, default the task)."""
    acc = np.asarray(res["history"]["test_accuracy"], dtype=float)     # [evaluations, S]
    per_epoch_s = res["seconds"] / res["epochs"]
    return [{"task": task_name, "table": table or task_name, "method": method, "seed": seed,
             "test_accuracy": float(acc[-1, seed]), "seconds": per_epoch_s,
             "seconds_per_epoch": per_epoch_s, "seconds_total": res["seconds"],
             "ratio_to_backprop": (per_epoch_s / bp_seconds if bp_seconds else None),
             "diverged": bool(res["diverged"][seed]), "epochs": res["epochs"],
             "initial_test_accuracy": float(acc[0, seed]),
             "curve": {"epoch": res["history"]["epoch"], "test_accuracy": acc[:, seed].tolist()},
             "settings": {k: res["spec"][k] for k in ("eta", "period", "dt", "gate",
                                                       "integrator", "flow", "reset")
                          if k in res["spec"]},
             "steps": res["steps"]} for seed in range(acc.shape[1])]


@dataclass
class Plan:
    """A run checked and ready: the config, the task, the output folder and the options."""

    cfg: Config
    task: Any
    out: Path
    resume: bool
    stop_after: int | None


def prepare(config: str | Path | Mapping[str, Any] | None, out: str | Path, *,
            resume: bool = False, stop_after: int | None = None, out_name: str = "out"
            ) -> Plan:
    """Everything checked before any training: the config, ``stop_after``, the output folder
    (writable; ``out_name`` names it in errors), every method's schedule and, with ``resume``,
    that ``out`` holds a checkpoint of at least one configured method and that every one there
    is sound (:func:`restore`). Errors are ``ValueError`` (checkpoint problems:
    :class:`solvers.checkpoint.CheckpointError`) naming what is wrong."""
    cfg = load(config)
    if stop_after is not None:
        check_int("--stop-after", stop_after, 1)
    out = output_dir(out, out_name)
    with intra_op_threads(cfg["threads"]):
        task = load_task(cfg)
        chunks = {m: schedule(cfg, task, m)[1] for m in cfg["methods"]}
        if resume:
            paths = {m: checkpoint_path(out, cfg["task"], m) for m in cfg["methods"]}
            if not any(p.is_file() for p in paths.values()):
                raise no_checkpoint(out / "checkpoints", f"{cfg['task']}_<method>.pt for one of "
                                    f"{cfg['methods']}")
            for m, p in paths.items():
                if p.is_file():
                    restore(p, cfg, build(cfg, task, m), m, chunks[m])
    return Plan(cfg, task, out, resume, stop_after)


def has_checkpoint(config: str | Path | Mapping[str, Any] | None, out: str | Path) -> bool:
    """Whether ``out`` holds a checkpoint of one of the config's methods."""
    cfg = load(config)
    return any(checkpoint_path(Path(out), cfg["task"], m).is_file() for m in cfg["methods"])


def run(config: str | Path | Mapping[str, Any] | None, out: str | Path, *,
        resume: bool = False, stop_after: int | None = None,
        progress: bool = True) -> dict[str, Any]:
    """Train every configured method on the task; write summary.json, table.md and the
    figure into ``out``. Returns the summary. Everything is checked first (:func:`prepare`);
    ``resume`` with no checkpoint in ``out`` is a
    :class:`~solvers.checkpoint.CheckpointError`."""
    plan = config if isinstance(config, Plan) else prepare(
        config, out, resume=resume, stop_after=stop_after)
    cfg, task, out, resume, stop_after = plan.cfg, plan.task, plan.out, plan.resume, \
        plan.stop_after
    start = time.perf_counter()
    with intra_op_threads(cfg["threads"]):
        results = {m: run_method(cfg, task, m, out, resume=resume, stop_after=stop_after,
                                 progress=progress) for m in cfg["methods"]}
    bp = results.get(REFERENCE)
    bp_seconds = bp["seconds"] / bp["epochs"] if bp else None
    name = table_name(cfg)
    runs = [r for m, res in results.items()
            for r in runs_of(cfg["task"], m, res, bp_seconds, name)]
    widths = [task.inputs, *cfg["hidden"], task.classes]
    summary = jsonable({"runs": runs, "task": cfg["task"], "chance": task.chance,
                        "widths": widths, "seconds": time.perf_counter() - start,
                        "config": cfg})
    write_summary(out, summary)
    (out / "table.md").write_text(table(runs, {name: task.chance}))
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
    try:                                 # every check before any training: usage errors
        plan = prepare(args.config, args.out, resume=args.resume, stop_after=args.stop_after,
                       out_name="--out")
    except (OSError, ValueError, TypeError) as err:
        parser.error(str(err))
    try:
        summary = run(plan, args.out, progress=not args.no_progress)
    except KeyboardInterrupt as err:
        print(f"interrupted ({err or 'Ctrl-C'}); rerun with --resume to continue from the last "
              f"checkpoint in {args.out}/checkpoints", file=sys.stderr)
        return 130
    print(Path(args.out, "table.md").read_text())
    print(f"total {summary['seconds']:.1f} s; summary.json, table.md and figure in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
