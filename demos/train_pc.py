"""Training with the gate in charge: Fa-Z-IL trains a small MLP in continuous time, against
backprop on the same data (SPEC §3).

    python -m demos.train_pc --out DIR [--config configs/train_pc.yaml] [--resume]

:func:`solvers.train` shows the minibatches of a small task (:mod:`workbench.tasks`) to a plastic
:class:`~circuits.PredictiveCoding` circuit with the autonomous :class:`~circuits.ArrivalGate`,
in two phases each: ``predict``, the input alone until the circuit settles at the feed-forward
pass (Z-IL's C1, every gate armed); then ``learn``, the teacher clamping the output for ``L + 1``
Euler steps of ``dt = τ_x`` (C3). No clock: each error neuron's gate opens by itself on the step
after feedback first reaches it (C2 emerges), so ``ΔW_ℓ = η δ_ℓ r_{ℓ-1}ᵀ``, backprop's update.
The baseline is autograd SGD on ``½‖y − a_L‖²`` (:mod:`demos.baselines`) from the same weights,
η and minibatches. Gate activity is measured from the recorded states (the first
``traced_presentations`` at every step, then every ``record_every``-th predict step: a hidden
gate that fired stays > 0 for the rest of the phase, so a sampled maximum of 0 means none fired).

Writes ``DIR/summary.json``, ``DIR/accuracy.png``, ``DIR/gates.png`` and ``DIR/checkpoint.pt``
(every ``checkpoint_every`` presentations, atomically, with a checksum: :mod:`solvers.checkpoint`);
``--resume`` continues from it to the same numbers as an uninterrupted run (the minibatch order
is a function of seed and position); the checkpoint is verified before any training, and
``--resume`` with no checkpoint in DIR is an error.
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
from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from circuits import ArrivalGate, ForwardNetwork, PredictiveCoding, gates
from solvers import Phase, Solution, State, checkpoint
from solvers import train as integrate
from workbench import plots, tasks

from .baselines import circuit_parameters, network_parameters, relative_divergence, sgd_step
from .config import (Config, Schema, Section, check_int, check_number, check_widths,
                     intra_op_threads, jsonable, load_config, no_checkpoint, output_dir,
                     phase_from_config, read_yaml, resume_checkpoint)
from .reports import fa_z_il as report
from .reports import write_summary

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train_pc.yaml"
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class Training:
    """The ``training`` section: epochs, batch B (:meth:`workbench.tasks.Task.minibatch_order`),
    eta (η of both learners), seed (of the minibatch order), eval_every / checkpoint_every
    (presentations between test evaluations / checkpoints)."""

    epochs: int = 5
    batch: int = 32
    eta: float = 0.5
    seed: int = 0
    eval_every: int = 4
    checkpoint_every: int = 16

    def __post_init__(self):
        for name in ("epochs", "batch", "eval_every", "checkpoint_every"):
            check_int(f"training.{name}", getattr(self, name), 1)
        check_int("training.seed", self.seed, 0)
        check_number("training.eta", self.eta, positive=True)


PHASE = Section(Phase, exclude=("name", "teacher", "save_every"))
SCHEMA = Schema(sections={
    **{name: Section(fn, exclude=("dtype",)) for name, fn in tasks.TASKS.items()},
    "network": Section(ForwardNetwork, exclude=("weights", "biases", "replicas")),
    "circuit": Section(PredictiveCoding, exclude=("network", "x", "target", "eta", "plasticity")),
    "gate": Section(ArrivalGate), "predict": PHASE, "learn": PHASE, "training": Section(Training),
}, demo={"task": "gaussian_mixture", "traced_presentations": 2, "record_every": 10,
         "tolerance_pp": 1.0, "threads": 1})     # meanings: configs/train_pc.yaml


def load(config: str | Path | Mapping[str, Any] | None = None) -> Config:
    """The training config: ``config`` (path, mapping or None) over ``configs/train_pc.yaml``."""
    config = load_config(config, SCHEMA, defaults=read_yaml(DEFAULT_CONFIG))
    if config["task"] not in tasks.TASKS:
        raise ValueError(f"config key 'task': received {config['task']!r}, expected one of "
                         f"{sorted(tasks.TASKS)} (the section holding its arguments)")
    check_int("config key 'traced_presentations'", config["traced_presentations"], 0)
    check_int("config key 'record_every'", config["record_every"], 1)
    check_number("config key 'tolerance_pp'", config["tolerance_pp"], positive=False)
    if config["threads"] is not None:
        check_int("config key 'threads'", config["threads"], 1)
    return config


@dataclass
class Setup:
    """Everything a run builds from its config; ``order [P, B]``: each presentation's
    training-set indices."""

    task: tasks.Task
    network: ForwardNetwork
    circuit: PredictiveCoding
    phases: tuple[Phase, Phase]
    training: Training
    order: torch.Tensor

    presentations = property(lambda self: self.order.shape[0])
    per_epoch = property(lambda self: self.task.x_train.shape[0] // self.training.batch)


def build(config: Config) -> Setup:
    """Task, network, circuit, phases (``learn.duration: null`` is ``L + 1`` steps, enough for
    the wave to reach layer 1) and minibatch order from a validated config."""
    net_args = dict(config["network"])
    task = tasks.make_task(config["task"], **config.get(config["task"], {}),
                           dtype=net_args.get("dtype", torch.float64))
    check_widths("network.widths", net_args.get("widths"), task.inputs, task.classes)
    net, tr = ForwardNetwork(**net_args), Training(**config["training"])
    order = task.minibatch_order(tr.batch, tr.epochs, tr.seed)
    circuit = PredictiveCoding(net, task.x_train[order[0]], None, eta=tr.eta,
                               plasticity=ArrivalGate(**config["gate"]), **config["circuit"])
    phases = (phase_from_config("predict", config["predict"], teacher=False),
              phase_from_config("learn", config["learn"], teacher=True, default_steps=net.L + 1))
    if phases[1].duration < net.L * phases[1].dt * (1 - 1e-9):
        raise ValueError(f"learn.duration: received {phases[1].duration!r}, expected ≥ L·dt = "
                         f"{net.L * phases[1].dt:g} (the error wave needs L = {net.L} steps to "
                         "reach layer 1) or null for L + 1 steps")
    return Setup(task, net, circuit, phases, tr, order)


# -- training: a run is its checkpoint {presentation, state, baseline, history, seconds} ------

def evaluate(setup: Setup, current: dict[str, Any], record: bool = False) -> dict[str, float]:
    """Test accuracy of both learners (argmax of ``outputs``) and their weight divergence now;
    ``record``: appended to the history's evaluation log."""
    net, base, p = setup.network, current["baseline"], current["presentation"]
    theta = circuit_parameters(current["state"], net.L, net.biases is not None)

    def accuracy(th: State) -> float:
        return float(setup.task.accuracy(setup.circuit.outputs(th, setup.task.x_test)[0]))
    now = {"fa_z_il": accuracy(theta), "backprop": accuracy(base),
           "divergence": relative_divergence(theta, base, network_parameters(net))}
    if record:
        for key, value in {"presentation": p, "epoch": p / setup.per_epoch, **now}.items():
            current["history"]["eval"][key].append(None if math.isnan(value) else value)
    return now


def observed(circuit: PredictiveCoding, sol: Solution, x: torch.Tensor, target) -> State:
    """The circuit's observations (``gate_ℓ``, ``eps_ℓ`` ... ``[T, S, B, n_ℓ]``) along a phase,
    under that phase's drive, up to its stop (later points repeat the frozen state; one after a
    stop between points holds it)."""
    keep = int((sol.ts <= sol.t_stop[0] + 1e-9).sum())
    if keep < len(sol.ts) and float(sol.ts[keep - 1]) < float(sol.t_stop[0]) - 1e-9:
        keep += 1
    circuit.present(x, target)
    return circuit.observe({k: v[:keep] for k, v in sol.ys.items()})


def restore(setup: Setup, config: Config, out: Path) -> dict[str, Any]:
    """The run saved in ``out/checkpoint.pt``: its checksum verified
    (:func:`solvers.checkpoint.load`), written with ``config``, its state and baseline shaped
    like ``setup``'s. No checkpoint there, or an unusable one, is a
    :class:`~solvers.checkpoint.CheckpointError` naming the file and what is wrong."""
    path = out / CHECKPOINT
    if not path.is_file():
        raise no_checkpoint(out, CHECKPOINT)
    saved = resume_checkpoint(path, config,
                              required=("presentation", "state", "baseline", "history",
                                        "seconds"))
    if not isinstance(saved["baseline"], Mapping) or "W_1" not in saved["baseline"]:
        raise checkpoint.CheckpointError(
            f"--resume: the checkpoint {str(path)!r} holds the baseline in the layout of an "
            "earlier version ({'weights', 'biases'}); expected one written by this version: run "
            "without --resume to start afresh")
    checkpoint.check_count(path, "presentation", saved["presentation"], setup.presentations)
    checkpoint.check_state(path, "state", saved["state"], setup.circuit.initial_state())
    checkpoint.check_state(path, "baseline", saved["baseline"],
                           network_parameters(setup.network))
    history = saved["history"]
    if not isinstance(history, Mapping) or \
            not {"eval", "predict", "learn", "traces"} <= set(history):
        raise checkpoint.CheckpointError(
            f"checkpoint {str(path)!r}: history is not a mapping holding 'eval', 'predict', "
            "'learn' and 'traces'; run without --resume to start afresh")
    if isinstance(saved["seconds"], bool) or not isinstance(saved["seconds"], (int, float)):
        raise checkpoint.CheckpointError(
            f"checkpoint {str(path)!r}: seconds is {saved['seconds']!r}, expected a number; run "
            "without --resume to start afresh")
    return saved


def start_or_resume(setup: Setup, config: Config, out: Path, resume: bool) -> dict[str, Any]:
    """A fresh run (the circuit's initial state: the feed-forward pass of the first minibatch,
    gates disarmed; the network's θ for the baseline), or (``resume``) the one in
    ``out/checkpoint.pt`` (:func:`restore`: none there is an error)."""
    if resume:
        return restore(setup, config, out)
    current = {"presentation": 0, "state": setup.circuit.initial_state(),
               "baseline": network_parameters(setup.network), "seconds": 0.0, "history": {
                   "eval": {k: [] for k in ("presentation", "epoch", "fa_z_il", "backprop",
                                            "divergence")},
                   "predict": [], "learn": [], "traces": []}}
    evaluate(setup, current, record=True)
    return current


def train(setup: Setup, current: dict[str, Any], config: Config, out: Path, stop: int,
          progress: bool | None = None) -> None:
    """Presentations ``current["presentation"] .. stop-1`` (:func:`solvers.train` in phases);
    after each, step the baseline on the same minibatch, measure the gates, evaluate and
    checkpoint on schedule. The first ``traced_presentations`` record every step."""
    L, tr, hist, traced = setup.network.L, setup.training, current["history"], \
        config["traced_presentations"]
    started, before = time.perf_counter(), current["seconds"]
    bar = tqdm(total=stop, initial=current["presentation"], unit="presentation",
               desc="Fa-Z-IL", disable=None if progress is None else not progress, leave=False)

    batch = functools.partial(setup.task.minibatch, setup.order)

    def on_presentation(p: int, y: State, sols: list[Solution]) -> None:
        (x, target), done = batch(p), p + 1
        current.update(state=y, presentation=done, baseline=sgd_step(
            current["baseline"], setup.network.hidden_activation.phi, x, target, tr.eta))
        obs = [observed(setup.circuit, s, x, target if ph.teacher else None)
               for s, ph in zip(sols, setup.phases)]
        hist["predict"].append(gates.settle_statistics(
            obs[0], L, float(sols[0].t_stop[0] - sols[0].ts[0]), sols[0].status_names()[0]))
        hist["learn"].append(gates.opening_statistics(obs[1], L, int(sols[1].stats["steps"])))
        if p < traced:                   # every step recorded: for gates.png
            hist["traces"].append({ph.name: {"t": (s.ts[:len(o["gate_1"])] - s.ts[0]).tolist(),
                                             **gates.gate_trace(o, L), "dt": float(s.stats["dt"])}
                                   for ph, s, o in zip(setup.phases, sols, obs)})
        if done % tr.eval_every == 0 or done == setup.presentations:
            evaluate(setup, current, record=True)
            bar.set_postfix(fa_z_il=hist["eval"]["fa_z_il"][-1],
                            backprop=hist["eval"]["backprop"][-1])
        current["seconds"] = before + time.perf_counter() - started
        if done % tr.checkpoint_every == 0 or done in (stop, setup.presentations):
            checkpoint.save(out / CHECKPOINT, {**current, "config": jsonable(config)})
        bar.update(1)

    first = current["presentation"]
    for start, end, every in ((first, min(stop, traced), 1),
                              (max(first, traced), stop, config["record_every"])):
        if start < end:
            integrate(setup.circuit, current["state"], batch, start=start, presentations=end,
                      phases=[dataclasses.replace(ph, save_every=1 if ph.teacher else every)
                              for ph in setup.phases],
                      on_presentation=on_presentation, progress=False)
    bar.close()


# -- summary, figures, report -----------------------------------------------------------------

def summarise(setup: Setup, current: Mapping[str, Any], config: Config,
              seconds_this_run: float) -> dict[str, Any]:
    now, (task, net, tr) = evaluate(setup, current), (setup.task, setup.network, setup.training)
    gap, done, hist = abs(now["fa_z_il"] - now["backprop"]) * 100, current["presentation"], \
        current["history"]
    theta, high = setup.circuit.plasticity.thresholds(net.dtype)
    return {
        "fa_z_il_test_accuracy": now["fa_z_il"], "backprop_test_accuracy": now["backprop"],
        "accuracy_gap_pp": gap, "within_1pp": bool(gap <= config["tolerance_pp"]),
        "tolerance_pp": config["tolerance_pp"],
        "final_weight_divergence_relative": None if math.isnan(now["divergence"])
        else now["divergence"],
        "presentations": done, "presentations_planned": setup.presentations,
        "complete": done == setup.presentations, "epochs": done / setup.per_epoch,
        "seconds": current["seconds"], "seconds_this_run": seconds_this_run,
        "max_gate_during_prediction": None,         # replaced once a presentation is done
        **gates.arrival_gate_activity(hist["predict"], hist["learn"], net.L),
        "gate_quiet_threshold": theta, "gate_arrival_threshold": high,
        "task": {"name": task.name, "classes": task.classes, "train": task.x_train.shape[0],
                 "test": task.x_test.shape[0], "chance_accuracy": task.chance},
        "network": {"widths": net.widths, "activation": net.hidden_activation.name,
                    "dtype": jsonable(net.dtype)},
        "batch": tr.batch, "eta": tr.eta,
        "history": {k: hist[k] for k in ("eval", "predict", "learn")},
        "figures": ["accuracy.png", "gates.png"], "config": jsonable(config)}


def passed(summary: Mapping[str, Any]) -> bool:
    """The demo's own checks: accuracies within tolerance, no gate during prediction."""
    return bool(summary.get("within_1pp") and summary.get("max_gate_during_prediction") == 0)


def run(config: str | Path | Mapping[str, Any] | None, out: str | Path, *,
        resume: bool = False, stop_after: int | None = None,
        progress: bool | None = None) -> dict[str, Any]:
    """Train into ``out`` (``config``: a YAML path, mapping or None, over the default);
    ``resume`` from ``out/checkpoint.pt``; ``stop_after`` (with a checkpoint) that many
    presentations in total. Returns the summary (also ``out/summary.json``)."""
    config = load(config)
    if stop_after is not None:
        check_int("stop_after", stop_after, 0)
    out = output_dir(out, "out")
    started = time.perf_counter()
    with intra_op_threads(config["threads"]):
        setup = build(config)
        current = start_or_resume(setup, config, out, resume)
        stop = min(setup.presentations, setup.presentations if stop_after is None
                   else stop_after)
        if current["presentation"] < stop:
            train(setup, current, config, out, stop, progress)
        summary = summarise(setup, current, config, time.perf_counter() - started)
    plots.fa_z_il_figures(out, summary, current["history"], setup.per_epoch,
                          setup.network.L)
    summary = jsonable(summary)
    write_summary(out, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.train_pc", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML config merged over configs/train_pc.yaml (default: that file)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue from OUT/{CHECKPOINT} (same config)")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="stop, with a checkpoint, once N presentations are done in total")
    args = parser.parse_args(argv)
    try:                                 # every check before any training: usage errors
        config = load(args.config)
        if args.stop_after is not None:
            check_int("--stop-after", args.stop_after, 0)
        with intra_op_threads(config["threads"]):
            setup = build(config)        # every section checked before training starts
            out = output_dir(args.out, "--out")
            if args.resume:
                restore(setup, config, out)
    except (OSError, ValueError, TypeError) as err:
        parser.error(str(err))
    summary = run(config, out, resume=args.resume, stop_after=args.stop_after)
    print(report(summary))
    print(f"figures and summary.json in {args.out}")
    return 0 if passed(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
