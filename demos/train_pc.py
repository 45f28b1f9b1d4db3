"""Training with the gate in charge: Fa-Z-IL trains a small MLP in continuous time, against
backprop on the same data (SPEC §3).

    python -m demos.train_pc --out DIR [--config configs/train_pc.yaml] [--resume]

A :class:`~circuits.PredictiveCoding` circuit with plastic weights and the autonomous
:class:`~circuits.ArrivalGate` is shown minibatches of a small synthetic task
(:mod:`demos.tasks`) one after another with :func:`solvers.train` (in phases). Each presentation is
two phases of one continuous integration, and the circuit's state (values, weights, gate timers)
runs on from one presentation to the next; nothing is re-initialised:

* ``predict``: the input alone (output free), Euler with a small step until the circuit settles
  (tight tolerances, so every hidden error ends far below the gate's quiet threshold θ, and
  every gate is armed). This *is* Z-IL's condition C1: the prediction fixed point is the
  feed-forward pass.
* ``learn``: the teacher clamps the output, Euler with ``dt = τ_x`` (C3) for ``L + 1`` steps.
  No clock says when a layer learns: each error neuron's gate opens by itself on the step after
  feedback (above the arrival threshold hθ) first reaches it (C2 emerges), so
  ``ΔW_ℓ = η δ_ℓ r_{ℓ-1}ᵀ``, backprop's update.

The baseline is SGD on ``½‖y − a_L‖²`` averaged over the batch (torch autograd) from the same
initial weights, with the same η and the same minibatches in the same order. Both are evaluated
on the test set every ``eval_every`` presentations (argmax of the forward pass; the circuit's
weights are read from its state). Gate activity is measured from the recorded states: during
``predict`` the largest gate value (every step for the first ``traced_presentations``, then
every ``record_every`` steps and the final state; a hidden gate that fired stays > 0 for the
rest of the phase, its pending state shrinking by ``1 − dt/τ_x`` a step, so a sampled maximum
of exactly 0 means it never fired), during ``learn`` on how many steps each unit's gate was
open, for every unit and example of every layer.

Writes ``DIR/summary.json``, ``DIR/accuracy.png`` (test accuracy of both and their weight
divergence against presentations), ``DIR/gates.png`` (errors and open gates per layer through the
first presentations, both phases shaded, then per-presentation gate counts) and
``DIR/checkpoint.pt`` every ``checkpoint_every`` presentations (state, baseline, position,
history; written atomically). ``--resume`` continues from the checkpoint and ends with the same
numbers as an uninterrupted run (the minibatch order is a function of the seed and the position).
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
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from circuits import ArrivalGate, ForwardNetwork, PredictiveCoding  # noqa: E402
from solvers import ADAPTIVE, Phase, Solution, checkpoint, get_method  # noqa: E402
from solvers import train as integrate  # noqa: E402
from solvers.stream import minibatch_order  # noqa: E402,F401  (re-exported for older scripts)

from . import tasks  # noqa: E402
from .config import (Config, Schema, Section, intra_op_threads, jsonable, load_config,  # noqa: E402
                     read_yaml)
from .plots import layer_colour  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train_pc.yaml"
CHECKPOINT = "checkpoint.pt"
State = dict[str, torch.Tensor]


# -- configuration ----------------------------------------------------------------------------

def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: received {value!r}, expected an integer ≥ {minimum}")


def _check_number(name: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}: received {value!r}, expected a finite number "
                         f"{'> 0' if positive else '≥ 0'}")


@dataclass(frozen=True)
class Training:
    """How both learners are trained (the config's ``training`` section).

    epochs: passes over the training set.  batch: B, examples per presentation (the last
    ``N mod B`` examples of each shuffled epoch are dropped: B is part of the state's shape).
    eta: η, shared by the circuit and the SGD baseline.  seed: the minibatch order.
    eval_every / checkpoint_every: presentations between test evaluations / checkpoints.
    """

    epochs: int = 5
    batch: int = 32
    eta: float = 0.5
    seed: int = 0
    eval_every: int = 4
    checkpoint_every: int = 16

    def __post_init__(self):
        for name in ("epochs", "batch", "eval_every", "checkpoint_every"):
            _check_int(f"training.{name}", getattr(self, name), 1)
        _check_int("training.seed", self.seed, 0)
        _check_number("training.eta", self.eta, positive=True)


def _phase_section() -> Section:
    return Section(Phase, exclude=("name", "teacher", "save_every"))


SCHEMA = Schema(sections={
    **{name: Section(fn, exclude=("dtype",)) for name, fn in tasks.TASKS.items()},
    "network": Section(ForwardNetwork, exclude=("weights", "biases", "replicas")),
    "circuit": Section(PredictiveCoding, exclude=("network", "x", "target", "eta",
                                                   "plasticity")),
    "gate": Section(ArrivalGate),
    "predict": _phase_section(),
    "learn": _phase_section(),
    "training": Section(Training),
}, demo={
    "task": "gaussian_mixture",      # which task section builds the data
    "traced_presentations": 2,       # presentations recorded at every step for gates.png
    "record_every": 10,              # predict-phase steps between recorded states afterwards
    "tolerance_pp": 1.0,             # accuracy gap (percentage points) that counts as a match
    "threads": 1,                    # torch intra-op threads while training (None: unchanged)
})


def load(config: str | Path | Mapping[str, Any] | None = None) -> Config:
    """The training config: ``config`` (path, mapping or None) over ``configs/train_pc.yaml``."""
    config = load_config(config, SCHEMA, defaults=read_yaml(DEFAULT_CONFIG))
    if config["task"] not in tasks.TASKS:
        raise ValueError(f"config key 'task': received {config['task']!r}, expected one of "
                         f"{sorted(tasks.TASKS)} (the section holding its arguments)")
    _check_int("config key 'traced_presentations'", config["traced_presentations"], 0)
    _check_int("config key 'record_every'", config["record_every"], 1)
    _check_number("config key 'tolerance_pp'", config["tolerance_pp"], positive=False)
    if config["threads"] is not None:
        _check_int("config key 'threads'", config["threads"], 1)
    return config


# -- the setup --------------------------------------------------------------------------------

@dataclass
class Parameters:
    """Weights ``W_ℓ [n_ℓ, n_{ℓ-1}]`` and biases ``b_ℓ [n_ℓ]`` (None without biases) of one
    network, ℓ = 1..L."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor] | None

    def tensors(self) -> list[torch.Tensor]:
        return self.weights + (self.biases or [])


@dataclass
class Setup:
    """Everything a run builds from its config."""

    task: tasks.Task
    network: ForwardNetwork
    circuit: PredictiveCoding
    predict: Phase
    learn: Phase
    training: Training
    order: torch.Tensor            # [P, B] training-set indices of each presentation

    @property
    def presentations(self) -> int:
        return self.order.shape[0]

    @property
    def per_epoch(self) -> int:
        return self.task.x_train.shape[0] // self.training.batch


def phases(config: Config, layers: int) -> tuple[Phase, Phase]:
    """The predict phase (input alone) and the learn phase (teacher clamped); the learn
    phase's ``duration: null`` means ``L + 1`` steps, enough for the wave to reach layer 1."""
    predict = Phase("predict", teacher=False, **config["predict"])
    learn_args = dict(config["learn"])
    dt = learn_args.get("dt")
    if learn_args.get("duration") is None and isinstance(dt, (int, float)):
        learn_args["duration"] = (layers + 1) * dt
    learn = Phase("learn", teacher=True, **learn_args)
    for phase in (predict, learn):
        if phase.method not in ADAPTIVE:
            try:
                get_method(phase.method)
            except ValueError as err:
                raise ValueError(f"{phase.name}.{err}") from None
    if learn.duration < layers * learn.dt * (1 - 1e-9):
        raise ValueError(f"learn.duration: received {learn.duration!r}, expected ≥ L·dt = "
                         f"{layers * learn.dt:g} (the error wave needs L = {layers} steps to "
                         "reach layer 1) or null for L + 1 steps")
    return predict, learn


def build(config: Config) -> Setup:
    """Task, network, circuit, phases and minibatch order from a validated config."""
    net_args = dict(config["network"])
    dtype = net_args.get("dtype", torch.float64)
    task = tasks.make_task(config["task"], **config.get(config["task"], {}), dtype=dtype)
    widths = net_args.get("widths")
    if isinstance(widths, (list, tuple)) and widths and \
            (widths[0] != task.inputs or widths[-1] != task.classes):
        raise ValueError(f"network.widths: received {list(widths)}, expected first width "
                         f"{task.inputs} (the task's inputs) and last width {task.classes} "
                         f"(its classes), e.g. [{task.inputs}, 16, 16, {task.classes}]")
    net = ForwardNetwork(**net_args)
    training = Training(**config["training"])
    n = task.x_train.shape[0]
    if training.batch > n:
        raise ValueError(f"training.batch: received {training.batch}, expected at most the "
                         f"{n} training examples")
    order = minibatch_order(n, training.batch, training.epochs, training.seed)
    circuit = PredictiveCoding(net, task.x_train[order[0]], None, eta=training.eta,
                               plasticity=ArrivalGate(**config["gate"]), **config["circuit"])
    predict, learn = phases(config, net.L)
    return Setup(task, net, circuit, predict, learn, training, order)


# -- the mathematics of the comparison --------------------------------------------------------

def output(params: Parameters, phi: Callable[[torch.Tensor], torch.Tensor],
           x: torch.Tensor) -> torch.Tensor:
    """``a_L [N, n_L]`` for ``x [N, n_0]``: ``a_ℓ = W_ℓ φ(a_{ℓ-1}) + b_ℓ`` (φ(a_0) = x),
    linear output."""
    a = x
    for l, W in enumerate(params.weights):
        r = a if l == 0 else phi(a)
        a = r @ W.T + (0 if params.biases is None else params.biases[l])
    return a


def accuracy(params: Parameters, phi, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``labels [N]`` equal to the argmax of the output."""
    return float((output(params, phi, x).argmax(-1) == labels).to(torch.float64).mean())


def squared_error(params: Parameters, phi, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_B ½‖y − a_L‖²``, the loss whose δ_L = y − a_L the clamped output error holds."""
    return 0.5 * (y - output(params, phi, x)).pow(2).sum(-1).mean()


def sgd_step(params: Parameters, phi, x: torch.Tensor, y: torch.Tensor,
             eta: float) -> Parameters:
    """One step of backprop: ``θ ← θ − η ∇_θ mean_B ½‖y − a_L‖²`` (torch autograd)."""
    leaves = Parameters([W.detach().requires_grad_() for W in params.weights],
                        None if params.biases is None else
                        [b.detach().requires_grad_() for b in params.biases])
    grads = torch.autograd.grad(squared_error(leaves, phi, x, y), leaves.tensors())
    stepped = [p.detach() - eta * g for p, g in zip(leaves.tensors(), grads)]
    L = len(params.weights)
    return Parameters(stepped[:L], None if params.biases is None else stepped[L:])


def network_parameters(net: ForwardNetwork) -> Parameters:
    """The network's initial parameters (replica 0)."""
    return Parameters([W[0].clone() for W in net.weights],
                      None if net.biases is None else [b[0, 0].clone() for b in net.biases])


def circuit_parameters(y: Mapping[str, torch.Tensor], layers: int, biases: bool) -> Parameters:
    """The circuit's current parameters, read from its state (replica 0)."""
    return Parameters([y[f"W_{l}"][0] for l in range(1, layers + 1)],
                      [y[f"b_{l}"][0, 0] for l in range(1, layers + 1)] if biases else None)


def l1_distance(a: Parameters, b: Parameters) -> float:
    """``Σ |a − b|`` over every weight and bias."""
    return float(sum((p - q).abs().sum() for p, q in zip(a.tensors(), b.tensors())))


def relative_divergence(circuit: Parameters, baseline: Parameters, initial: Parameters) -> float:
    """``‖θ_circuit − θ_bp‖₁ / ‖θ_bp − θ_0‖₁``: how far apart the learners ended, relative to how
    far backprop moved (NaN before any move)."""
    moved = l1_distance(baseline, initial)
    return l1_distance(circuit, baseline) / moved if moved > 0 else math.nan


# -- gate activity, from the recorded states ---------------------------------------------------

def observed(circuit: PredictiveCoding, sol: Solution, x: torch.Tensor,
             target: torch.Tensor | None) -> State:
    """The circuit's observations (``gate_ℓ``, ``eps_ℓ`` ... ``[T, S, B, n_ℓ]``) along a recorded
    phase, under the drive of that phase (the input, and the teacher or not), up to the
    phase's stop: points recorded after an early stop repeat the frozen state."""
    keep = int((sol.ts <= sol.t_stop[0] + 1e-9).sum())
    if keep < len(sol.ts) and float(sol.ts[keep - 1]) < float(sol.t_stop[0]) - 1e-9:
        keep += 1                        # the stop fell between recorded points: the next
    circuit.present(x, target)           # point holds the frozen final state
    return circuit.observe({k: v[:keep] for k, v in sol.ys.items()})


def per_layer(obs: State, name: str, layers: int, reduce: Callable[[torch.Tensor], torch.Tensor]
              ) -> torch.Tensor:
    """``[T, L]``: ``reduce`` over each layer's units and examples of ``{name}_ℓ [T, S, B, n]``."""
    return torch.stack([reduce(obs[f"{name}_{l}"].flatten(1)) for l in range(1, layers + 1)], 1)


def predict_statistics(obs: State, sol: Solution, layers: int) -> dict[str, Any]:
    """Largest gate value (any layer, unit, example, recorded step), settle time, status, and
    the largest hidden |ε| left at the end (how well C1 holds)."""
    gates = per_layer(obs, "gate", layers, lambda v: v.abs().amax(1))
    errors = per_layer(obs, "eps", layers, lambda v: v.abs().amax(1))
    return {"max_gate": float(gates.max()),
            "settle_time": float(sol.t_stop[0] - sol.ts[0]),
            "status": sol.status_names()[0],
            "hidden_error_left": float(errors[-1, :-1].max()) if layers > 1 else 0.0}


def learn_statistics(obs: State, sol: Solution, layers: int) -> dict[str, Any]:
    """Per layer: on how many Euler steps each unit's gate was open (min / mean / max over the
    layer's units and examples), at which steps any gate was open, and the largest gate value.
    The gate at recorded point i is the one step i used."""
    steps = int(sol.stats["steps"])
    out: dict[str, Any] = {"open_steps_min": [], "open_steps_mean": [], "open_steps_max": [],
                           "open_at": [], "max_gate": 0.0}
    for l in range(1, layers + 1):
        g = obs[f"gate_{l}"][:steps]                           # [steps, S, B, n]
        open_steps = (g > 0).sum(0).to(torch.float64)          # per unit and example
        out["open_steps_min"].append(float(open_steps.min()))
        out["open_steps_mean"].append(float(open_steps.mean()))
        out["open_steps_max"].append(float(open_steps.max()))
        out["open_at"].append((g.flatten(1) > 0).any(1).nonzero().flatten().tolist())
        out["max_gate"] = max(out["max_gate"], float(g.abs().max()))
    return out


def phase_trace(obs: State, sol: Solution, layers: int) -> dict[str, list]:
    """For gates.png: time since the phase began, and per layer the fraction of units × examples
    whose gate is open and the largest |ε_ℓ|."""
    keep = obs["gate_1"].shape[0]
    return {"t": (sol.ts[:keep] - sol.ts[0]).tolist(),
            "open_fraction": per_layer(obs, "gate", layers,
                                       lambda v: (v > 0).to(v.dtype).mean(1)).tolist(),
            "max_error": per_layer(obs, "eps", layers, lambda v: v.abs().amax(1)).tolist(),
            "dt": float(sol.stats["dt"])}


# -- checkpoints ------------------------------------------------------------------------------

def config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Keys (``section.key`` or top-level) whose values differ between two JSON-able configs."""
    out = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += [f"{name}.{k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        elif x != y:
            out.append(name)
    return out


def load_checkpoint(path: Path, config: Config) -> dict[str, Any]:
    """The checkpoint at ``path``, checked to come from the same config."""
    payload = checkpoint.load(path, required=("config",))
    differ = config_differences(payload["config"], jsonable(config))
    if differ:
        raise ValueError(f"--resume: the checkpoint {str(path)!r} was written with a different "
                         f"config (differing keys: {differ}); expected the same config, or "
                         "run without --resume to start afresh")
    return payload


# -- training ---------------------------------------------------------------------------------

def empty_history() -> dict[str, Any]:
    return {"eval": {"presentation": [], "epoch": [], "fa_z_il": [], "backprop": [],
                     "divergence": []},
            "predict": [], "learn": [], "traces": []}


@dataclass
class TrainingRun:
    """Where a training run stands: the circuit's state, the baseline's parameters, the
    presentations done, the history, the wall time spent so far."""

    state: State
    baseline: Parameters
    presentation: int
    history: dict[str, Any]
    seconds: float = 0.0


def evaluate(setup: Setup, current: TrainingRun, initial: Parameters) -> dict[str, float]:
    """Test accuracy of both learners and their relative weight divergence now."""
    phi = setup.network.hidden_activation.phi
    theta = circuit_parameters(current.state, setup.network.L, setup.network.biases is not None)
    x, labels = setup.task.x_test, setup.task.labels_test
    return {"fa_z_il": accuracy(theta, phi, x, labels),
            "backprop": accuracy(current.baseline, phi, x, labels),
            "divergence": relative_divergence(theta, current.baseline, initial)}


def record_evaluation(setup: Setup, current: TrainingRun, initial: Parameters) -> None:
    entry = evaluate(setup, current, initial)
    log = current.history["eval"]
    log["presentation"].append(current.presentation)
    log["epoch"].append(current.presentation / setup.per_epoch)
    for key, value in entry.items():
        log[key].append(None if math.isnan(value) else value)


def checkpoint_payload(config: Config, current: TrainingRun) -> dict[str, Any]:
    return {"config": jsonable(config), "presentation": current.presentation,
            "state": dict(current.state), "baseline": {"weights": current.baseline.weights,
                                                   "biases": current.baseline.biases},
            "history": current.history, "seconds": current.seconds}


def minibatch(setup: Setup, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [B, n_0], y [B, K])`` shown at presentation ``p``."""
    idx = setup.order[p]
    return setup.task.x_train[idx], setup.task.y_train[idx]


def train(setup: Setup, current: TrainingRun, config: Config, out: Path, stop: int,
          progress: bool | None = None) -> None:
    """Present minibatches ``current.presentation .. stop-1`` (:func:`solvers.train` in
    phases: the predict phase stops when the circuit has settled); after
    each, step the baseline on the same minibatch, measure the gates, and evaluate / checkpoint
    on schedule. The first ``traced_presentations`` record every step, the rest every
    ``record_every`` predict steps."""
    initial = network_parameters(setup.network)
    phi = setup.network.hidden_activation.phi
    L, tr = setup.network.L, setup.training
    traced = config["traced_presentations"]
    total = setup.presentations
    started = time.perf_counter()
    seconds_before = current.seconds
    bar = tqdm(total=stop, initial=current.presentation, unit="presentation", desc="Fa-Z-IL",
               disable=None if progress is None else not progress, leave=False)

    def on_presentation(k: int, y: State, sols: Sequence[Solution], start: int,
                        trace: bool) -> None:
        p = start + k
        x, target = setup.task.x_train[setup.order[p]], setup.task.y_train[setup.order[p]]
        current.state, current.presentation = y, p + 1
        current.baseline = sgd_step(current.baseline, phi, x, target, tr.eta)
        pred = observed(setup.circuit, sols[0], x, None)
        learn = observed(setup.circuit, sols[1], x, target)   # leaves the drive as it was
        current.history["predict"].append(predict_statistics(pred, sols[0], L))
        current.history["learn"].append(learn_statistics(learn, sols[1], L))
        if trace:
            current.history["traces"].append({"predict": phase_trace(pred, sols[0], L),
                                          "learn": phase_trace(learn, sols[1], L)})
        if current.presentation % tr.eval_every == 0 or current.presentation == total:
            record_evaluation(setup, current, initial)
            log = current.history["eval"]
            bar.set_postfix(fa_z_il=f"{log['fa_z_il'][-1]:.3f}",
                            backprop=f"{log['backprop'][-1]:.3f}")
        current.seconds = seconds_before + time.perf_counter() - started
        if current.presentation % tr.checkpoint_every == 0 or current.presentation in (stop, total):
            checkpoint.save(out / CHECKPOINT, checkpoint_payload(config, current))
        bar.update(1)

    def present_span(start: int, end: int, every: int, trace: bool) -> None:
        chosen = [dataclasses.replace(setup.predict, save_every=every),
                  dataclasses.replace(setup.learn, save_every=1)]
        integrate(setup.circuit, current.state, lambda k: minibatch(setup, k),
                  phases=chosen, start=start, presentations=end,
                  on_presentation=lambda k, y, sols: on_presentation(k, y, sols, 0, trace),
                  progress=False)

    first, rest = min(stop, traced), max(current.presentation, traced)
    if current.presentation < first:
        present_span(current.presentation, first, 1, True)
    if rest < stop:
        present_span(rest, stop, config["record_every"], False)
    bar.close()


def start_or_resume(setup: Setup, config: Config, out: Path, resume: bool) -> TrainingRun:
    """A fresh run (the feed-forward pass of the first minibatch, gates disarmed, the
    network's weights for both learners), or the one saved in ``out/checkpoint.pt``."""
    path = out / CHECKPOINT
    if resume and path.is_file():
        payload = load_checkpoint(path, config)
        b = payload["baseline"]
        return TrainingRun(payload["state"], Parameters(b["weights"], b["biases"]),
                   payload["presentation"], payload["history"], payload["seconds"])
    if resume:
        print(f"--resume: no checkpoint at {path}; starting from presentation 0",
              file=sys.stderr)
    current = TrainingRun(setup.circuit.initial_state(), network_parameters(setup.network), 0,
              empty_history())
    record_evaluation(setup, current, network_parameters(setup.network))
    return current


# -- summary ----------------------------------------------------------------------------------

def gate_summary(history: Mapping[str, Any], layers: int) -> dict[str, Any]:
    """Gate activity over every presentation so far."""
    pred, learn = history["predict"], history["learn"]
    if not pred:
        return {}
    per_layer_learn = {
        str(l): {"open_steps_min": min(e["open_steps_min"][l - 1] for e in learn),
                 "open_steps_max": max(e["open_steps_max"][l - 1] for e in learn),
                 "open_at_steps": sorted({s for e in learn for s in e["open_at"][l - 1]})}
        for l in range(1, layers + 1)}
    return {
        "max_gate_during_prediction": max(e["max_gate"] for e in pred),
        "max_gate_during_learning": max(e["max_gate"] for e in learn),
        "every_gate_opened_on_exactly_one_step": all(
            v["open_steps_min"] == 1 and v["open_steps_max"] == 1
            for v in per_layer_learn.values()),
        "learn_gates_per_layer": per_layer_learn,
        "prediction_settle_time": {"min": min(e["settle_time"] for e in pred),
                                   "max": max(e["settle_time"] for e in pred)},
        "prediction_all_converged": all(e["status"] == "converged" for e in pred),
        "max_hidden_error_after_prediction": max(e["hidden_error_left"] for e in pred),
    }


def gate_thresholds(gate: ArrivalGate, dtype: torch.dtype) -> dict[str, float]:
    """θ (a signal below it is quiet) and hθ (a signal above it has arrived)."""
    theta, high = gate.thresholds(dtype)
    return {"gate_quiet_threshold": theta, "gate_arrival_threshold": high}


def summarise(setup: Setup, current: TrainingRun, config: Config, seconds_this_run: float
              ) -> dict[str, Any]:
    now = evaluate(setup, current, network_parameters(setup.network))
    gap = abs(now["fa_z_il"] - now["backprop"]) * 100
    task, net, tr = setup.task, setup.network, setup.training
    return {
        "fa_z_il_test_accuracy": now["fa_z_il"],
        "backprop_test_accuracy": now["backprop"],
        "accuracy_gap_pp": gap,
        "within_1pp": bool(gap <= config["tolerance_pp"]),
        "tolerance_pp": config["tolerance_pp"],
        "final_weight_divergence_relative": None if math.isnan(now["divergence"])
        else now["divergence"],
        "presentations": current.presentation,
        "presentations_planned": setup.presentations,
        "complete": current.presentation == setup.presentations,
        "epochs": current.presentation / setup.per_epoch,
        "seconds": current.seconds,
        "seconds_this_run": seconds_this_run,
        "max_gate_during_prediction": None,         # replaced once a presentation is done
        **gate_summary(current.history, net.L),
        **gate_thresholds(setup.circuit.plasticity, net.dtype),
        "task": {"name": task.name, "classes": task.classes, "train": task.x_train.shape[0],
                 "test": task.x_test.shape[0], "chance_accuracy": task.chance},
        "network": {"widths": net.widths, "activation": net.hidden_activation.name,
                    "dtype": jsonable(net.dtype)},
        "batch": tr.batch, "eta": tr.eta,
        "history": {"eval": current.history["eval"],
                    "predict": current.history["predict"], "learn": current.history["learn"]},
        "figures": ["accuracy.png", "gates.png"],
        "config": jsonable(config),
    }


def passed(summary: Mapping[str, Any]) -> bool:
    """The demo's own checks: accuracies within tolerance, no gate during prediction."""
    return bool(summary.get("within_1pp") and summary.get("max_gate_during_prediction") == 0)


# -- figures ----------------------------------------------------------------------------------

PHASE_COLOURS = {"predict": "#dbe9f6", "learn": "#fde2c8"}


def accuracy_figure(path: Path, summary: Mapping[str, Any], per_epoch: int) -> None:
    """Test accuracy of both learners against presentations (epochs on top), and the relative
    L1 distance between their weights."""
    log = summary["history"]["eval"]
    p = np.asarray(log["presentation"], dtype=float)
    fig, (ax, bx) = plt.subplots(2, 1, sharex=True, figsize=(8, 6.5), layout="constrained",
                                 height_ratios=(2, 1))
    ax.plot(p, 100 * np.asarray(log["backprop"]), color="tab:blue", lw=3, alpha=0.5,
            label=f"backprop (SGD): {100 * summary['backprop_test_accuracy']:.1f}%")
    ax.plot(p, 100 * np.asarray(log["fa_z_il"]), color="tab:red", ls="--", marker=".",
            label=f"Fa-Z-IL (gated PC): {100 * summary['fa_z_il_test_accuracy']:.1f}%")
    ax.axhline(100 * summary["task"]["chance_accuracy"], color="0.5", ls=":", lw=1,
               label="chance")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right", frameon=False)
    ax.grid(alpha=0.3)
    top = ax.secondary_xaxis("top", functions=(lambda v: v / per_epoch,
                                               lambda v: v * per_epoch))
    top.set_xlabel("epochs")
    div = np.asarray([np.nan if v is None else v for v in log["divergence"]], dtype=float)
    ok = np.isfinite(div) & (div > 0)
    if ok.any():
        bx.semilogy(p[ok], div[ok], color="tab:purple", marker=".")
    bx.set_ylabel("‖θ_PC − θ_bp‖₁ /\n‖θ_bp − θ_0‖₁")
    bx.set_xlabel("presentations (minibatches)")
    bx.grid(alpha=0.3)
    fig.suptitle(f"{summary['task']['name']}: {summary['network']['widths']} "
                 f"{summary['network']['activation']}, B = {summary['batch']}, "
                 f"η = {summary['eta']:g}; gap {summary['accuracy_gap_pp']:.2f} pp",
                 fontsize="medium")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _raster(ax, trace: Mapping[str, Any], layers: int) -> None:
    """Fraction of open gates per layer (rows) over the phase's time (columns)."""
    t = np.asarray(trace["t"], dtype=float)
    edges = np.append(t, t[-1] + trace["dt"])
    frac = np.asarray(trace["open_fraction"], dtype=float).reshape(len(t), layers)
    ax.pcolormesh(edges, np.arange(layers + 1) + 0.5, frac.T, vmin=0, vmax=1, cmap="Greys",
                  shading="flat")
    ax.set_yticks(range(1, layers + 1))


def gates_figure(path: Path, history: Mapping[str, Any], layers: int,
                 thresholds: tuple[float, float]) -> None:
    """Top: the first presentations, each as its predict and learn phase (shaded): the largest
    |ε_ℓ| per layer (log), and a raster of the fraction of open gates per layer. Bottom: per
    presentation, on how many steps each unit's gate opened during learning (min/max over
    units and examples) and the largest gate value during prediction."""
    traces = history["traces"]
    cols = [(i, ph) for i in range(len(traces)) for ph in ("predict", "learn")]
    ratios = [3 if ph == "predict" else 1 for _, ph in cols] or [1]
    fig = plt.figure(figsize=(3 + 2.6 * max(len(traces), 1) * 1.4, 8.5), layout="constrained")
    grid = fig.add_gridspec(4, max(len(cols), 1), width_ratios=ratios,
                            height_ratios=(1.3, 0.8, 1, 1))
    for c, (i, ph) in enumerate(cols):
        trace = traces[i][ph]
        t = np.asarray(trace["t"], dtype=float)
        err = np.asarray(trace["max_error"], dtype=float).reshape(len(t), layers)
        ax = fig.add_subplot(grid[0, c])
        for l in range(layers):
            shown = np.where(err[:, l] > 0, err[:, l], np.nan)      # exactly 0: off the log axis
            ax.semilogy(t, shown, color=layer_colour(l + 1), drawstyle="steps-post",
                        label=f"layer {l + 1}")
        ax.axhline(thresholds[0], color="k", ls=":", lw=1, label="quiet below θ")
        ax.axhline(thresholds[1], color="k", ls="--", lw=1, label="arrival above hθ")
        if not np.isfinite(np.where(err > 0, err, np.nan)).any():
            ax.text(0.5, 0.5, "every ε exactly 0", transform=ax.transAxes, ha="center",
                    fontsize="small")
        ax.set_facecolor(PHASE_COLOURS[ph])
        ax.set_title(f"#{i + 1} {ph}" + (f": input alone, dt = {trace['dt']:g}"
                                          if ph == "predict" else ""), fontsize="small")
        if c == 0:
            ax.set_ylabel("max |ε_ℓ|")
        if c == len(cols) - 1:
            ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1),
                      frameon=False)
        rx = fig.add_subplot(grid[1, c], sharex=ax)
        _raster(rx, trace, layers)
        if not np.asarray(trace["open_fraction"]).any():
            rx.text(0.5, 0.5, "every gate shut", transform=rx.transAxes, ha="center",
                    fontsize="small")
        rx.set_xlabel("time since phase began (τ_x)" if ph == "predict" else "step")
        if c == 0:
            rx.set_ylabel("open gates\n(layer)")
    pred, learn = history["predict"], history["learn"]
    k = np.arange(1, len(pred) + 1)
    ax = fig.add_subplot(grid[2, :])
    for l in range(layers):
        lo = np.asarray([e["open_steps_min"][l] for e in learn], dtype=float)
        hi = np.asarray([e["open_steps_max"][l] for e in learn], dtype=float)
        ax.fill_between(k, lo - 0.02 * (l + 1), hi + 0.02 * (l + 1), step="mid",
                        color=layer_colour(l + 1), alpha=0.35)
        ax.step(k, [e["open_steps_mean"][l] for e in learn], where="mid",
                color=layer_colour(l + 1), label=f"layer {l + 1}: steps open per unit "
                                                 "(mean; band min–max)")
    ax.step(k, [e["max_gate"] for e in pred], where="mid", color="k", ls="--",
            label="max gate during prediction")
    ax.set_ylabel("gate openings")
    ax.set_ylim(-0.1, max(1.5, ax.get_ylim()[1]))
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.grid(alpha=0.3)
    bx = fig.add_subplot(grid[3, :], sharex=ax)
    bx.plot(k, [e["settle_time"] for e in pred], color="tab:blue", marker=".",
            label="prediction settle time")
    bx.set_ylabel("settle time (τ_x)")
    cx = bx.twinx()
    left = np.asarray([e["hidden_error_left"] for e in pred], dtype=float)
    cx.semilogy(k, np.where(left > 0, left, np.nan), color="tab:green", marker=".",
                label="max hidden |ε| left")
    cx.axhline(thresholds[0], color="k", ls=":", lw=1)
    cx.set_ylabel("hidden |ε| left", color="tab:green")
    bx.set_xlabel("presentation")
    bx.grid(alpha=0.3)
    fig.legend(*[sum(v, []) for v in zip(bx.get_legend_handles_labels(),
                                         cx.get_legend_handles_labels())],
               fontsize="x-small", loc="lower right", frameon=False)
    fig.suptitle("Fa-Z-IL: the arrival gate alone decides when synapses change",
                 fontsize="medium")
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the demo ---------------------------------------------------------------------------------

def run(config: str | Path | Mapping[str, Any] | None, out: str | Path, *,
        resume: bool = False, stop_after: int | None = None,
        progress: bool | None = None) -> dict[str, Any]:
    """Train into ``out``; ``config`` is a YAML path, a mapping or None, merged over
    ``configs/train_pc.yaml``. ``resume`` continues from ``out/checkpoint.pt``; ``stop_after``
    stops (with a checkpoint) once that many presentations are done in total. Returns the
    summary (also written to ``out/summary.json``)."""
    config = load(config)
    if stop_after is not None:
        _check_int("stop_after", stop_after, 0)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with intra_op_threads(config["threads"]):
        setup = build(config)
        current = start_or_resume(setup, config, out, resume)
        stop = setup.presentations if stop_after is None \
            else min(stop_after, setup.presentations)
        if current.presentation < stop:
            train(setup, current, config, out, stop, progress)
        summary = summarise(setup, current, config, time.perf_counter() - started)
    accuracy_figure(out / "accuracy.png", summary, setup.per_epoch)
    gates_figure(out / "gates.png", current.history, setup.network.L,
                 (summary["gate_quiet_threshold"], summary["gate_arrival_threshold"]))
    summary = jsonable(summary)
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    return summary


def report(summary: Mapping[str, Any]) -> str:
    """A few lines: accuracies, gap, weight divergence, gate activity, time."""
    t, n = summary["task"], summary["network"]
    div = summary["final_weight_divergence_relative"]
    lines = [
        f"task {t['name']}: {t['classes']} classes, {t['train']} train / {t['test']} test "
        f"(chance {100 * t['chance_accuracy']:.1f}%); network {n['widths']} {n['activation']}, "
        f"B = {summary['batch']}, η = {summary['eta']:g}",
        f"after {summary['presentations']} presentations ({summary['epochs']:g} epochs"
        + ("" if summary["complete"] else f", of {summary['presentations_planned']} planned")
        + f"): test accuracy Fa-Z-IL {100 * summary['fa_z_il_test_accuracy']:.2f}%, "
        f"backprop {100 * summary['backprop_test_accuracy']:.2f}% "
        f"(gap {summary['accuracy_gap_pp']:.2f} pp, "
        f"{'within' if summary['within_1pp'] else 'NOT within'} "
        f"{summary['tolerance_pp']:g} pp)",
        "weights: ‖θ_PC − θ_bp‖₁ / ‖θ_bp − θ_0‖₁ = "
        + ("—" if div is None else f"{div:.2e}"),
    ]
    if summary.get("learn_gates_per_layer"):
        opened = ", ".join(f"layer {l} at step {', '.join(map(str, v['open_at_steps']))}"
                           for l, v in sorted(summary["learn_gates_per_layer"].items(),
                                              key=lambda kv: -int(kv[0])))
        once = summary["every_gate_opened_on_exactly_one_step"]
        settle = summary["prediction_settle_time"]
        lines += [
            f"gate: max during prediction {summary['max_gate_during_prediction']:g}; during "
            f"learning {'every' if once else 'NOT every'} unit's gate opened on exactly one "
            f"step ({opened})",
            f"prediction settles in t = {settle['min']:g}–{settle['max']:g} τ_x "
            f"({'all' if summary['prediction_all_converged'] else 'NOT all'} converged), "
            f"hidden |ε| left ≤ {summary['max_hidden_error_after_prediction']:.1e} "
            f"(quiet below θ = {summary['gate_quiet_threshold']:.1e}, arrival above "
            f"hθ = {summary['gate_arrival_threshold']:.1e})"]
    lines.append(f"{summary['seconds']:.1f} s")
    return "\n".join(lines)


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
    try:
        config = load(args.config)
        build(config)                    # every section checked before training starts
    except (OSError, ValueError, TypeError) as err:
        parser.error(str(err))
    summary = run(config, args.out, resume=args.resume, stop_after=args.stop_after)
    print(report(summary))
    print(f"figures and summary.json in {args.out}")
    return 0 if passed(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
