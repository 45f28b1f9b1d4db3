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
written atomically to ``DIR/checkpoints/<task>_<method>.pt``. ``--resume`` continues every
method from its last checkpoint and ends bit-for-bit where an uninterrupted run ends (the
minibatch order is a function of seed and position; the chunk grid does not depend on where
it was resumed).

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

from . import plots
from .config import Config, check_int, intra_op_threads, jsonable, resume_checkpoint
from .method_config import MethodSpec, Training, load, load_task, network, spec
from .method_table import table
from .reports import write_summary

REFERENCE = "backprop"
__all__ = ["METHODS", "LABELS", "MethodSpec", "Training", "load", "load_task", "network", "spec",
           "table", "Setup", "build", "accuracy", "run_method", "run", "final_weights", "main"]

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
                               feedback=s.feedback if method == "iterated_dtp" else None)
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
    write_summary(out, summary)
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
