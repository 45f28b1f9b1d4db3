"""Reproducing Song et al. (2020): predictive coding that *is* backprop, and what breaks it.

    python -m demos.reproduce_song2020 --out DIR [--seed 0] [--batch 16]
                                                 [--widths 16 32 32 32 10] [--eta 0.1]

Song, Lukasiewicz, Xu & Bogacz (2020), "Can the brain do backpropagation? Exact implementation
of backpropagation in predictive coding networks", NeurIPS 33 (SPEC §3). Z-IL reproduces
backprop's weight update exactly when (C1) inference starts at the feed-forward pass, (C2) layer
ℓ learns only at inference step L − ℓ, and (C3) the inference rate γ = dt/τ_x is 1; Fa-Z-IL
replaces the clock of C2 by a gate each error neuron opens by itself when feedback arrives, and
C1 by a settle in prediction mode (:class:`circuits.ArrivalGate`).

On one seeded tanh network and one batch (``x ~ N(0, I)``, one-hot targets, float64) each row
measures the L1 distance over all weights between a protocol's weight change and backprop's
update, also relative to the update's size. Z-IL (``z_il_float64``, ``z_il_float32``) and
``fa_z_il`` are exact to rounding; Z-IL with C3, C1 or C2 broken (``gamma_0.99999``,
``perturbed_start``, ``all_layers_together``) is visibly off; inference learning (``il*``:
relax, then update) nears backprop only as the output variance σ²_L grows; the naive gates (on
the first change of the error, Song et al.'s φ, or on the derivative-weighted drive) are exact
for tanh, not for ReLU (dead units change late, through the bottom-up prediction), where
``fa_z_il_relu`` stays exact. Then the reviewers' question: settled on one input and shown a new
one alone, does a gate open with no teacher there? The unordered gates do, the ordered feedback
gate stays shut (why: :mod:`circuits.gates`). Writes ``DIR/summary.json`` and the figures
``error_wave.png`` (Z-IL's error wave; Fa-Z-IL's gates opening once per layer, a naive one late
on ReLU), ``prediction_gate.png`` (the gates on the new input) and ``divergence.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from circuits import (ArrivalGate, ForwardNetwork, Plasticity, PredictiveCoding, Schedule,
                      backprop_updates, gates, update_divergence)
from circuits.predictive_coding import dead_units, error_wave, z_il_circuit
from solvers import Solution, solve
from workbench.plots import (error_wave_figure, gate_settle_figure, grouped_log_bars_figure,
                             text_table)

from .config import (check_int, check_layer_widths, check_number, check_numbers,
                     dataclass_config, dataclass_flags, intra_op_threads, run_cli)

CLOCK_START = -0.5      # Z-IL's clock centred on the step times (why: z_il_circuit)


@dataclasses.dataclass(frozen=True)
class Config:
    """The demo's parameters (the first seven also command-line flags)."""

    seed: int = 0                       # the tanh network and the batch
    relu_seed: int = 1                  # the ReLU network of the naive-gate rows
    batch: int = 16                     # B
    widths: tuple[int, ...] = (16, 32, 32, 32, 10)
    eta: float = 0.1                    # η
    gamma: float = 0.99999              # the broken inference rate of the C3 row
    # noise std on the hidden values (C1 row): the size of the hidden credit the wave carries
    # (RMS of δ_1..δ_3 is 0.03-0.10 here), so the start is off by as much as the signal.
    perturbation: float = 0.1
    output_variances: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)   # σ²_L of the IL rows
    settle_dt: float = 0.1              # Euler step of every relaxation
    settle_t1: float = 1000.0           # give-up time of every relaxation
    atol: float = 1e-14                 # steady-state test of every relaxation
    rtol: float = 1e-12

    def __post_init__(self):
        check_layer_widths("widths", self.widths, layers=2)
        check_int("batch", self.batch, 1)
        for name in ("eta", "gamma", "settle_dt", "settle_t1"):
            check_number(name, getattr(self, name), positive=True)
        for name in ("perturbation", "atol", "rtol"):
            check_number(name, getattr(self, name), positive=False)
        check_numbers("output_variances", self.output_variances)


def load(config: Config | Mapping[str, Any] | None = None) -> Config:
    """``config`` as a :class:`Config` (None: the defaults; a mapping: overrides of them)."""
    return dataclass_config(Config, config, ("widths", "output_variances"))


class Problem(NamedTuple):
    """A network and a batch ``(x, y)``: what every protocol learns on."""

    net: ForwardNetwork
    x: torch.Tensor
    y: torch.Tensor
    eta: float
    L: int


def problem(cfg: Config, activation: str = "tanh", seed: int | None = None,
            dtype: torch.dtype = torch.float64) -> Problem:
    """The network and ``x ~ N(0, I)`` ``[B, n_0]`` with one-hot targets of random classes."""
    net = ForwardNetwork(list(cfg.widths), activation, seed=cfg.seed if seed is None else seed,
                         dtype=dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.batch, cfg.widths[0], generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(cfg.widths[-1], (cfg.batch,), generator=g),
                                    cfg.widths[-1])
    return Problem(net, x.to(dtype), y.to(dtype), cfg.eta, net.L)


Learned = tuple[list, dict[str, Solution]]      # a protocol's (ΔW_ℓ, Δb_ℓ) and {phase: solution}


def relax(c: PredictiveCoding, y0, cfg: Config, observe: Callable | None = None) -> Solution:
    """Integrate until the circuit settles (it must: Fa-Z-IL's C1 and IL's update assume the
    fixed point); with ``observe``, record ``observe(y)`` every step."""
    sol = solve(c, y0, 0.0, cfg.settle_t1, dt=cfg.settle_dt, atol=cfg.atol, rtol=cfg.rtol,
                save_every=None if observe is None else 1, observe=observe, progress=False)
    if set(sol.status_names()) != {"converged"}:
        raise RuntimeError(f"relaxation: {sol.status_names()} at t = {sol.t_stop.tolist()}, "
                           f"expected converged (raise settle_t1 = {cfg.settle_t1:g} or atol)")
    return sol


def learning_phase(c: PredictiveCoding, y0, steps: int, dt: float = 1.0) -> Solution:
    """``steps`` Euler steps of ``dt`` with the teacher present, every step observed."""
    return solve(c, y0, 0.0, steps * dt, dt=dt, method="euler", steady_state=False,
                 save_every=1, observe=c.observe, progress=False)


def z_il(p: Problem, *, schedule=Schedule.z_il, gamma: float = 1.0, perturbation: float = 0.0,
         seed: int = 0) -> Learned:
    """From the feed-forward pass (C1; ``perturbation`` breaks it), L Euler steps of
    γ = dt/τ_x (C3) under the clocked ``schedule`` (C2)."""
    c = z_il_circuit(p.net, p.x, p.y, p.eta, gamma=gamma, schedule=schedule, start=CLOCK_START)
    y0 = c.initial_state(perturbation, seed)
    learn = learning_phase(c, y0, p.L, dt=gamma)
    return c.weight_changes(y0, learn.y1), {"learn": learn}


def fa_z_il(p: Problem, cfg: Config, *, gate: Plasticity = ArrivalGate(), steps: int = 0
            ) -> Learned:
    """Settle with the input alone (C1 without a reset), then the target for ``steps``
    (0: 2L) steps of τ_x gated by ``gate`` (default: the ordered feedback-arrival gate)."""
    c = PredictiveCoding(p.net, p.x, None, eta=p.eta, plasticity=gate)
    rest = relax(c, c.initial_state(), cfg)
    c.present(target=p.y)
    learn = learning_phase(c, rest.y1, steps or 2 * p.L)
    return c.weight_changes(rest.y1, learn.y1), {"settle": rest, "learn": learn}


def inference_learning(p: Problem, cfg: Config, output_variances: Sequence[float]) -> Learned:
    """IL: relax with the target clamped, then ``σ²_L η ε_ℓ f(x_{ℓ-1})ᵀ``; one replica per
    output variance σ²_L (hidden variances 1), relaxed in one batch."""
    c = PredictiveCoding(p.net.expand(len(output_variances)), p.x, p.y, eta=p.eta,
                         variances=[1.0] * (p.L - 1) + [[float(v) for v in output_variances]])
    rest = relax(c, c.initial_state(), cfg)
    return c.il_updates(rest.y1), {"settle": rest}


def rows(cfg: Config, tanh: Problem, tanh32: Problem, relu: Problem) -> list[tuple]:
    """Every row: its replicas' names, the problem whose update they must match, the protocol."""
    late = 3 * tanh.L          # long enough for a naive gate's late openings to happen
    return [(("z_il_float64",), tanh, partial(z_il, tanh)),
            (("z_il_float32",), tanh, partial(z_il, tanh32)),
            (("fa_z_il",), tanh, partial(fa_z_il, tanh, cfg)),
            ((f"gamma_{cfg.gamma:g}",), tanh, partial(z_il, tanh, gamma=cfg.gamma)),
            (("perturbed_start",), tanh, partial(z_il, tanh, perturbation=cfg.perturbation,
                                                 seed=cfg.seed)),
            (("all_layers_together",), tanh, partial(z_il, tanh, schedule=Schedule.together)),
            (("il", *(f"il_sigma2_L_{v:g}" for v in cfg.output_variances)), tanh,
             partial(inference_learning, tanh, cfg, (1.0, *cfg.output_variances)))] + [
        ((f"naive_gate_{signal}_{name}",), p,
         partial(fa_z_il, p, cfg, gate=ArrivalGate(signal), steps=late))
        for name, p in (("relu", relu), ("tanh", tanh)) for signal in ("error", "drive")] + [
        (("fa_z_il_relu",), relu, partial(fa_z_il, relu, cfg, steps=late))]


def l1(update) -> float:
    return float(update_divergence(update, update)[1].sum())


PREDICTION_GATES: dict[str, Callable[[], ArrivalGate]] = {
    "feedback_ordered": ArrivalGate, "feedback_unordered": partial(ArrivalGate, ordered=False),
    "error": partial(ArrivalGate, "error")}


def prediction_settle(p: Problem, x_new: torch.Tensor, gate: Plasticity, cfg: Config,
                      update_l1: float) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Settle on ``p.x`` in prediction mode, show ``x_new`` alone and settle again: the second
    settle's gate openings and weight change (relative to backprop's ``update_l1``), and its
    record of :func:`circuits.gates.gate_extremes` at times ``t``."""
    c = PredictiveCoding(p.net, p.x, None, eta=p.eta, plasticity=gate)
    rest = relax(c, c.initial_state(), cfg)
    c.present(x_new)
    sol = relax(c, rest.y1, cfg, observe=lambda y: gates.gate_extremes(c.observe(y), p.L))
    rec = {"t": sol.ts, **{k: v[:, 0] for k, v in sol.ys.items()}}
    first = gates.first_opening(sol.ts, rec["gate"], rec["signal"])
    moved, t = l1(c.weight_changes(rest.y1, sol.y1)), first["first_opening_time"]
    result = {"max_gate": first["max_gate"], "weight_change_l1": moved,
              "weight_change_relative": moved / update_l1,
              "first_opening_time": -1.0 if t is None else t,      # −1: no gate ever opened
              "signal_at_first_opening": first["signal_at_first_opening"],
              "settle_time": float(sol.t_stop[0])}
    return result, rec


def run(config: Config | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Run every row and the prediction-settle check into ``out`` (``config``: None for the
    defaults, a :class:`Config` or a mapping of its fields); the summary, also in summary.json."""
    cfg, out, start = load(config), Path(out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with intra_op_threads(1):
        tanh, relu = problem(cfg), problem(cfg, "relu", seed=cfg.relu_seed)
        references = {id(p): backprop_updates(p.net, p.x, p.y, p.eta) for p in (tanh, relu)}
        learned, absolute, relative, settles = {}, {}, {}, {}
        for names, reference, learn in rows(cfg, tanh, problem(cfg, dtype=torch.float32), relu):
            change, phases = learn()
            dist, size = update_divergence(change, references[id(reference)], biases=False)
            for name, d, r in zip(names, dist.tolist(), (dist / size).tolist()):
                learned[name], absolute[name], relative[name] = phases, d, r
            if "settle" in phases:
                settles.update(zip(names, phases["settle"].status_names()))
        total = l1(references[id(tanh)])
        x_new = torch.randn(cfg.batch, cfg.widths[0], dtype=torch.float64,   # its own seed
                            generator=torch.Generator().manual_seed(cfg.seed + 1))
        prediction, traces = {}, {}
        for name, gate in PREDICTION_GATES.items():
            prediction[name], traces[name] = prediction_settle(tanh, x_new, gate(), cfg, total)
    L, gamma_steps = tanh.L, [k * cfg.gamma for k in range(tanh.L)]
    fractions = {title: np.asarray(gates.gate_trace(learned[row]["learn"].ys, L)["open_fraction"])
                 for title, row in (("Fa-Z-IL (tanh): feedback-arrival gate", "fa_z_il"),
                                    ("naive φ = error gate on ReLU: opens late",
                                     "naive_gate_error_relu"))}
    wave = error_wave(learned["z_il_float64"]["learn"].ys, tanh.net, tanh.x, tanh.y)[:, 0]
    figures = [
        error_wave_figure(out / "error_wave.png", wave.numpy(), fractions),
        gate_settle_figure(out / "prediction_gate.png", traces, prediction,
                           ArrivalGate().thresholds(torch.float64)[0], "Does the plasticity "
                           "gate open while the circuit settles on a new input?"),
        grouped_log_bars_figure(
            out / "divergence.png", relative, GROUPS,
            xlabel="L1 divergence from backprop's update / L1 size of the update",
            title="Song et al. (2020): which protocols are backprop")]
    dead_fraction, dead_examples = dead_units(relu.net, relu.x)
    summary = {
        "total_update_l1": total, "total_update_l1_relu": l1(references[id(relu)]),
        "divergence": absolute, "relative_divergence": relative,
        "network": {"widths": list(cfg.widths), "L": L, "activation": "tanh",
                    "batch": cfg.batch, "eta": cfg.eta, "dtype": "float64", "seed": cfg.seed,
                    "relu_seed": cfg.relu_seed, "relu_dead_unit_fraction": dead_fraction},
        "relu_examples_with_a_dead_layer": dead_examples,
        "gamma_clock": {"gamma": cfg.gamma, "clock_start": CLOCK_START,
                        "openings_per_layer": gates.clock_openings(
                            Schedule.z_il(L, start=CLOCK_START), gamma_steps),
                        "openings_per_layer_if_start_0": gates.clock_openings(
                            Schedule.z_il(L), gamma_steps)},
        "settle_status": settles, "prediction_settle_gate": prediction,
        "figures": [f.name for f in figures],
        "config": {k: list(v) if isinstance(v, tuple) else v
                   for k, v in dataclasses.asdict(cfg).items()},
        "seconds": time.perf_counter() - start}
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    return summary


EXACT, BROKEN = "exact (Z-IL, Fa-Z-IL)", "Z-IL with C1, C2 or C3 broken"
GROUPS = (("z_il_float", "tab:green", EXACT), ("fa_z_il", "tab:green", EXACT),
          ("gamma_", "tab:red", BROKEN), ("perturbed", "tab:red", BROKEN),
          ("all_layers", "tab:red", BROKEN), ("il", "tab:blue", "inference learning"),
          ("naive", "tab:orange", "naive gates"))


def passed(summary: Mapping[str, Any]) -> bool:
    """The paper's claims held: Z-IL and Fa-Z-IL exact to float64 rounding, the ordered gate
    shut while settling without a teacher, and no ReLU example with a dead layer."""
    rel = summary["relative_divergence"]
    return (all(rel[n] <= 1e-10 for n in ("z_il_float64", "fa_z_il"))
            and summary["prediction_settle_gate"]["feedback_ordered"]["max_gate"] == 0
            and summary["relu_examples_with_a_dead_layer"] == 0)


def report(summary: Mapping[str, Any]) -> str:
    """The divergence table and the prediction-settle gates."""
    lines = text_table([("row", "L1 divergence", "relative")] + [
        (name, f"{d:.3e}", f"{summary['relative_divergence'][name]:.3e}")
        for name, d in summary["divergence"].items()])
    lines.append(f"backprop's update: L1 {summary['total_update_l1']:.4g} (tanh), "
                 f"{summary['total_update_l1_relu']:.4g} (ReLU; rows *_relu are relative to it)")
    if summary["relu_examples_with_a_dead_layer"]:
        lines.append(f"WARNING: {summary['relu_examples_with_a_dead_layer']} ReLU example(s) "
                     "with an entirely dead hidden layer: feedback below it is zero and "
                     "Fa-Z-IL's gate fires late there")
    lines.append("prediction-mode settle after a new input (no teacher):")
    for name, r in summary["prediction_settle_gate"].items():
        opened = ("never opened" if r["first_opening_time"] < 0 else
                  f"first opened at t = {r['first_opening_time']:g} on a signal of "
                  f"{r['signal_at_first_opening']:.2g}")
        lines.append(f"  {name:<19} max gate {r['max_gate']:<6.3g} {opened:<44} weights "
                     f"moved {r['weight_change_l1']:.3g} (L1, {r['weight_change_relative']:.2g}"
                     " of an update)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m demos.reproduce_song2020",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    make_config = dataclass_flags(parser, Config, {
        "seed": "seed of the tanh network and the batch",
        "relu_seed": "seed of the ReLU network (naive-gate rows)", "batch": "examples B",
        "widths": "n_0 ... n_L", "eta": "learning rate η",
        "gamma": "inference rate of the broken-C3 row",
        "perturbation": "noise std on the hidden values of the broken-C1 row"})
    return run_cli(parser, argv, make_config, run, report)


if __name__ == "__main__":
    sys.exit(0 if passed(main()) else 1)
