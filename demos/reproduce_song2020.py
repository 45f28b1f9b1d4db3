"""Reproducing Song et al. (2020): predictive coding that *is* backprop, and what breaks it.

    python -m demos.reproduce_song2020 --out DIR [--seed 0] [--batch 16]
                                                 [--widths 16 32 32 32 10] [--eta 0.1]

Song, Lukasiewicz, Xu & Bogacz (2020), "Can the brain do backpropagation? Exact implementation
of backpropagation in predictive coding networks", NeurIPS 33 (SPEC §3). Z-IL reproduces
backprop's weight update exactly when (C1) inference starts at the feed-forward pass, (C2) layer
ℓ learns only at inference step L − ℓ, and (C3) the inference rate γ = dt/τ_x is 1; Fa-Z-IL
replaces the clock of C2 by a gate each error neuron opens by itself when feedback arrives, and
C1 by a settle in prediction mode (:class:`circuits.ArrivalGate`).

One seeded tanh network (default widths 16-32-32-32-10, L = 4), one batch of B inputs
``x ~ N(0, I)`` with one-hot targets of random classes, learning rate η, float64. Each *row*
runs one protocol on it and measures the L1 distance, over all weights (not biases), between
the circuit's weight change and backprop's update (:func:`circuits.backprop_updates`), also
relative to the L1 size of backprop's update (``total_update_l1``):

* ``z_il_float64``, ``z_il_float32``: Z-IL, exact to rounding;
* ``fa_z_il``: the autonomous gate after a prediction-mode settle, exact to rounding;
* ``gamma_0.99999``, ``perturbed_start``, ``all_layers_together``: Z-IL with C3, C1 or C2
  broken, each visibly off;
* ``il``, ``il_sigma2_L_{1,10,100,1000}``: inference learning (relax, then update), which only
  approaches backprop as the output variance σ²_L (the teacher's weakness) grows;
* ``naive_gate_{error,drive}_{relu,tanh}``, ``fa_z_il_relu``: gating on the first change of the
  error (Song et al.'s φ) or on the derivative-weighted drive instead of on feedback arrival is
  exact for tanh but not for ReLU, whose dead units change later through the bottom-up
  prediction. ReLU rows learn on a ReLU network of the same widths (its own seed) and are
  compared with its own backprop update (``total_update_l1_relu``).

The prediction-settle check answers the paper's reviewers: after settling on one input, a new
input is shown alone and the circuit settles again; does a gate open (and the weights move)
although no teacher is there? The unordered feedback gate and φ open on the new input's wave and
move the weights by more than a whole update. The ordered feedback gate stays shut: the new
input's change reaches each neuron's error before the feedback from above does, and its
hysteresis (arrival above 100 θ, quiet below θ) ignores the threshold-level flicker of errors
and feedback fading out at the end of the settle (without it, a few neurons opened there on
signals of size θ and moved the weights by ~1e-10 of an update).

Writes ``DIR/summary.json``::

    {"total_update_l1": float, "total_update_l1_relu": float,
     "divergence": {ROW: float}, "relative_divergence": {ROW: float},
     "network": {...}, "prediction_settle_gate": {GATE: {"max_gate", "weight_change_l1"}}, ...}

and the figures ``DIR/error_wave.png`` (Z-IL's error wave moving down one layer per step, the
Fa-Z-IL gates opening once per layer, the naive gate opening late on ReLU),
``DIR/prediction_gate.png`` (gate activity during the prediction-mode settle) and
``DIR/divergence.png`` (the relative divergence of every row, log scale).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from circuits import (ArrivalGate, ForwardNetwork, Plasticity, PredictiveCoding,  # noqa: E402
                      Schedule, Signals, backprop_updates, update_divergence)
from circuits.credit import backprop  # noqa: E402
from solvers import Solution, solve  # noqa: E402

from .config import dataclass_config, intra_op_threads, run_cli  # noqa: E402
from .plots import layer_colour  # noqa: E402

Update = list[tuple[torch.Tensor, torch.Tensor | None]]

# The clock's windows are centred on the nominal step times k·τ_x (start = −τ_x/2). With
# γ = dt/τ_x = 1 this gates exactly the same Euler steps as start = 0; with γ = 0.99999 the
# k-th step falls at 0.99999·k·τ_x, just before k·τ_x, and a window starting at k·τ_x would give
# that step to layer L − k + 1 (layer L would learn twice, layer 1 never). Centring keeps C2
# intact — one update per layer, at its own step — so the γ row breaks C3 alone.
CLOCK_START = -0.5


@dataclass(frozen=True)
class Config:
    """The demo's parameters (every one also a command-line flag)."""

    seed: int = 0                       # the tanh network and the batch
    relu_seed: int = 1                  # the ReLU network of the naive-gate rows
    batch: int = 16                     # B
    widths: tuple[int, ...] = (16, 32, 32, 32, 10)
    eta: float = 0.1                    # η
    gamma: float = 0.99999              # the broken inference rate of the C3 row
    # std of the noise on the hidden values (C1 row): 0.1 is the size of the hidden credit the
    # wave must carry (RMS of δ_1..δ_3 is 0.03-0.10 here), so the start is off by about as much
    # as the signal, not by a rounding-level amount.
    perturbation: float = 0.1
    output_variances: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)   # σ²_L of the IL rows
    settle_dt: float = 0.1              # Euler step of every relaxation
    settle_t1: float = 1000.0           # give-up time of every relaxation
    atol: float = 1e-14                 # steady-state test of every relaxation
    rtol: float = 1e-12

    def __post_init__(self):
        if len(self.widths) < 3 or any(int(n) != n or n < 1 for n in self.widths):
            raise ValueError(f"widths: received {list(self.widths)!r}, expected at least three "
                             "positive integers [n_0, ..., n_L] (L ≥ 2)")
        if int(self.batch) != self.batch or self.batch < 1:
            raise ValueError(f"batch: received {self.batch!r}, expected an integer ≥ 1")
        for name in ("eta", "gamma", "settle_dt", "settle_t1"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: received {v!r}, expected a finite number > 0")
        if not (math.isfinite(self.perturbation) and self.perturbation >= 0):
            raise ValueError(f"perturbation: received {self.perturbation!r}, expected ≥ 0")


def load(config: Config | Mapping[str, Any] | None = None) -> Config:
    """``config`` as a :class:`Config` (None: the defaults; a mapping: overrides of them)."""
    return dataclass_config(Config, config, ("widths", "output_variances"))


# -- the problem: one network, one batch ------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """A network and a batch ``(x, y)``: what every protocol learns on."""

    net: ForwardNetwork
    x: torch.Tensor
    y: torch.Tensor
    eta: float

    @property
    def L(self) -> int:
        return self.net.L

    def backprop_update(self) -> Update:
        return backprop_updates(self.net, self.x, self.y, self.eta)

    def deltas(self) -> list[torch.Tensor]:
        """Backprop's δ_ℓ, ℓ = 1..L, ``[S, B, n_ℓ]``."""
        fwd = self.net.forward(self.x)
        return backprop(self.net, fwd, self.net.output_like(self.y) - fwd.a[-1])

    def examples_with_a_dead_layer(self) -> int:
        """Examples for which some hidden layer has φ' = 0 on every unit: feedback to the
        layers below is then exactly zero, and a feedback-arrival gate fires late there."""
        dphi = self.net.forward(self.x).dphi[:-1]
        dead = torch.stack([(d == 0).all(-1) for d in dphi]).any(0)
        return int(dead.sum())

    def dead_unit_fraction(self) -> float:
        dphi = self.net.forward(self.x).dphi[:-1]
        return float(sum((d == 0).sum() for d in dphi) / sum(d.numel() for d in dphi))


def batch(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """``x ~ N(0, I)`` ``[B, n_0]`` and one-hot targets of uniformly random classes."""
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.batch, cfg.widths[0], generator=g, dtype=torch.float64)
    classes = torch.randint(cfg.widths[-1], (cfg.batch,), generator=g)
    return x, torch.nn.functional.one_hot(classes, cfg.widths[-1]).to(torch.float64)


def problem(cfg: Config, activation: str = "tanh", seed: int | None = None,
            dtype: torch.dtype = torch.float64) -> Problem:
    net = ForwardNetwork(list(cfg.widths), activation, seed=cfg.seed if seed is None else seed,
                         dtype=dtype)
    x, y = batch(cfg)
    return Problem(net, x.to(dtype), y.to(dtype), cfg.eta)


# -- the protocols: each returns the circuit's weight change ----------------------------------

@dataclass
class Learned:
    """A protocol's weight change (per layer ``(ΔW, Δb)``) and the solutions of its phases
    (the learning phase, when there is one, recorded every step through ``observe``)."""

    change: Update
    phases: dict[str, Solution] = field(default_factory=dict)


def relax(circuit: PredictiveCoding, y0: Mapping[str, torch.Tensor], cfg: Config,
          observe: Callable | None = None) -> Solution:
    """Integrate until the circuit settles (it must: Fa-Z-IL's C1 and IL's update both assume
    the fixed point); with ``observe``, record ``observe(y)`` every step."""
    sol = solve(circuit, y0, 0.0, cfg.settle_t1, dt=cfg.settle_dt, atol=cfg.atol, rtol=cfg.rtol,
                save_every=None if observe is None else 1, observe=observe, progress=False)
    status = sol.status_names()
    if set(status) != {"converged"}:
        raise RuntimeError(f"relaxation: {status} at t = {sol.t_stop.tolist()}, expected "
                           f"converged (raise settle_t1 = {cfg.settle_t1:g} or the tolerances)")
    return sol


def learning_phase(circuit: PredictiveCoding, y0: Mapping[str, torch.Tensor], steps: int,
                   dt: float = 1.0) -> Solution:
    """``steps`` Euler steps of ``dt`` with the teacher present, every step recorded."""
    return solve(circuit, y0, 0.0, steps * dt, dt=dt, method="euler", steady_state=False,
                 save_every=1, observe=circuit.observe, progress=False)


def z_il(p: Problem, *, schedule: Callable[..., Schedule] = Schedule.z_il, gamma: float = 1.0,
         perturbation: float = 0.0, seed: int = 0) -> Learned:
    """Z-IL: from the feed-forward pass (C1; ``perturbation`` breaks it), clamp the target and
    take L Euler steps of γ = dt/τ_x (C3) under the clocked ``schedule`` (C2)."""
    # η/γ: the weight rate is per τ_x, so a step of γτ_x applies γη εfᵀ; rescaling keeps the
    # size of each update at η and leaves only the incomplete inference step to differ.
    c = PredictiveCoding(p.net, p.x, p.y, eta=p.eta / gamma,
                         plasticity=schedule(p.L, start=CLOCK_START))
    y0 = c.initial_state(perturbation, seed)
    learn = learning_phase(c, y0, p.L, dt=gamma)
    return Learned(c.weight_changes(y0, learn.y1), {"learn": learn})


def fa_z_il(p: Problem, cfg: Config, *, gate: Plasticity | None = None,
            steps: int | None = None) -> Learned:
    """Fa-Z-IL: settle with the input alone (C1 without a reset), present the target and take
    ``steps`` (default 2L) Euler steps of τ_x with plasticity gated by ``gate`` (default: the
    ordered feedback-arrival gate) instead of a clock."""
    c = PredictiveCoding(p.net, p.x, None, eta=p.eta,
                         plasticity=ArrivalGate() if gate is None else gate)
    rest = relax(c, c.initial_state(), cfg)
    c.present(target=p.y)
    learn = learning_phase(c, rest.y1, 2 * p.L if steps is None else steps)
    return Learned(c.weight_changes(rest.y1, learn.y1), {"settle": rest, "learn": learn})


def inference_learning(p: Problem, cfg: Config, *, output_variances: Sequence[float] = (1.0,)
                       ) -> Learned:
    """IL: clamp the target, relax to equilibrium with fixed weights, then update by
    ``σ²_L η ε_ℓ f(x_{ℓ-1})ᵀ`` (hidden variances 1; σ²_L is the teacher's weakness). One
    replica per output variance, relaxed in one batch."""
    S = len(output_variances)
    c = PredictiveCoding(p.net.expand(S), p.x, p.y, eta=p.eta,
                         variances=[1.0] * (p.L - 1) + [[float(v) for v in output_variances]])
    rest = relax(c, c.initial_state(), cfg)
    return Learned(c.il_updates(rest.y1), {"settle": rest})


@dataclass(frozen=True)
class Row:
    """Rows of the table: a protocol whose replicas are named ``names`` (usually one), and the
    problem whose backprop update they must match."""

    names: tuple[str, ...]
    reference: Problem
    learn: Callable[[], Learned]


def rows(cfg: Config, tanh: Problem, tanh32: Problem, relu: Problem) -> list[Row]:
    """Every row, named as in ``summary["divergence"]``."""
    L = tanh.L
    gates = 3 * L          # long enough for a naive gate's late openings to happen
    il_variances = (1.0, *cfg.output_variances)          # "il" is σ²_L = 1
    table = [
        Row(("z_il_float64",), tanh, partial(z_il, tanh)),
        Row(("z_il_float32",), tanh, partial(z_il, tanh32)),
        Row(("fa_z_il",), tanh, partial(fa_z_il, tanh, cfg)),
        Row((f"gamma_{cfg.gamma:g}",), tanh, partial(z_il, tanh, gamma=cfg.gamma)),
        Row(("perturbed_start",), tanh, partial(z_il, tanh, perturbation=cfg.perturbation,
                                                seed=cfg.seed)),
        Row(("all_layers_together",), tanh, partial(z_il, tanh, schedule=Schedule.together)),
        Row(("il", *(f"il_sigma2_L_{v:g}" for v in cfg.output_variances)), tanh,
            partial(inference_learning, tanh, cfg, output_variances=il_variances)),
    ]
    for name, p in (("relu", relu), ("tanh", tanh)):
        for signal in ("error", "drive"):
            table.append(Row((f"naive_gate_{signal}_{name}",), p,
                             partial(fa_z_il, p, cfg, gate=ArrivalGate(signal), steps=gates)))
    table.append(Row(("fa_z_il_relu",), relu, partial(fa_z_il, relu, cfg, steps=gates)))
    return table


def divergence(change: Update, reference: Update) -> tuple[list[float], list[float]]:
    """Per replica of ``change``: the L1 distance over all weights to ``reference`` (one
    replica), and the same relative to the L1 size of ``reference``."""
    dist, size = update_divergence(change, reference, biases=False)
    return dist.tolist(), (dist / size).tolist()


def update_l1(update: Update) -> float:
    return float(sum(dW.abs().sum() for dW, _ in update))


def clock_openings(schedule: Schedule, step_times: Sequence[float]) -> list[int]:
    """How many of the Euler steps (vector field evaluated at ``step_times``) each layer's
    clocked gate is open for: C2 asks for exactly one per layer."""
    one = torch.ones((), dtype=torch.float64)
    L = len(schedule.steps)
    signals = Signals(errors=[one] * L, teacher=one, tau_x=one)
    counts = [0] * L
    for t in step_times:
        gates, _ = schedule.gates(t, {}, signals)
        counts = [n + int(g) for n, g in zip(counts, gates)]
    return counts


# -- the prediction-mode settle after a new input ---------------------------------------------

PREDICTION_GATES: dict[str, Callable[[], ArrivalGate]] = {
    "feedback_ordered": ArrivalGate,
    "feedback_unordered": partial(ArrivalGate, ordered=False),
    "error": partial(ArrivalGate, "error"),
}


def new_input(cfg: Config) -> torch.Tensor:
    """The second input of the prediction-settle check (a batch of its own seed)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    return torch.randn(cfg.batch, cfg.widths[0], generator=g, dtype=torch.float64)


def prediction_settle(p: Problem, x_new: torch.Tensor, gate: Plasticity, cfg: Config
                      ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Settle on ``p.x`` in prediction mode, show ``x_new`` alone and settle again.

    Returns the second settle's ``max_gate`` (largest gate of any neuron at any step),
    ``weight_change_l1`` (also ``weight_change_relative`` to backprop's update),
    ``first_opening_time`` (−1: no gate ever opened), ``signal_at_first_opening`` (the largest
    max(|ε|, |feedback|) of the neurons whose gate is open then, 0 if none: a wave is O(δ), the
    tail of the settle is at the gate's threshold θ) and ``settle_time``; and its traces:
    times ``t``, ``[T, L]`` the largest gate of each layer (``gate``), ``[T]`` the largest |ε|
    of the circuit (``error``)."""
    c = PredictiveCoding(p.net, p.x, None, eta=p.eta, plasticity=gate)
    rest = relax(c, c.initial_state(), cfg)
    c.present(x_new)

    def largest(y):            # record a few numbers per layer, not the whole state
        obs = c.observe(y)
        gate, signal, error = [], [], []
        for l in range(1, p.L + 1):
            g, e = obs[f"gate_{l}"].abs(), obs[f"eps_{l}"].abs()
            size = e if l == p.L else torch.maximum(e, obs[f"fb_{l}"].abs())
            gate.append(g.flatten(-2).amax(-1))
            signal.append(torch.where(g > 0, size, 0.0).flatten(-2).amax(-1))
            error.append(e.flatten(-2).amax(-1))
        return {"gate": torch.stack(gate, -1), "signal": torch.stack(signal, -1),
                "error": torch.stack(error, -1).amax(-1, keepdim=True)}

    sol = relax(c, rest.y1, cfg, observe=largest)
    gates, errors = sol.ys["gate"][:, 0], sol.ys["error"][:, 0, 0]
    opened = (gates > 0).any(1).nonzero()
    first = int(opened[0]) if len(opened) else None
    moved = update_l1(c.weight_changes(rest.y1, sol.y1))
    result = {"max_gate": float(gates.max()), "weight_change_l1": moved,
              "weight_change_relative": moved / update_l1(p.backprop_update()),
              "first_opening_time": -1.0 if first is None else float(sol.ts[first]),
              "signal_at_first_opening": 0.0 if first is None
              else float(sol.ys["signal"][first].max()),
              "settle_time": float(sol.t_stop[0])}
    traces = {"t": sol.ts.cpu().numpy(), "gate": gates.cpu().numpy(),
              "error": errors.cpu().numpy()}
    return result, traces


# -- figures ----------------------------------------------------------------------------------

def open_fraction(learn: Solution, L: int) -> np.ndarray:
    """``[T, L]``: fraction of each layer's error neurons (all examples) whose gate is open."""
    return np.stack([(learn.ys[f"gate_{l}"][:, 0] > 0.5).double().mean((1, 2)).cpu().numpy()
                     for l in range(1, L + 1)], 1)


def error_wave_figure(path: Path, zil: Learned, deltas: Sequence[torch.Tensor],
                      fa: Learned, naive: Learned, naive_name: str, L: int) -> Path:
    """(a) ‖ε_ℓ‖/‖δ_ℓ‖ per Z-IL step with the clock's gate marked; (b) Fa-Z-IL's gates
    opening; (c) a naive gate on ReLU opening late."""
    fig, axes = plt.subplots(1, 3, figsize=(14.5, 4.2), layout="constrained")
    ax = axes[0]
    learn = zil.phases["learn"]
    steps = np.arange(len(learn.ts))
    for l in range(1, L + 1):
        eps = learn.ys[f"eps_{l}"][:, 0].flatten(1).norm(dim=1)
        ratio = (eps / deltas[l - 1][0].norm()).cpu().numpy()
        colour = layer_colour(l)
        ax.plot(steps, ratio, "o-", color=colour, lw=1.4, ms=4, label=f"ε_{l}")
        ax.plot([L - l], [ratio[L - l]], marker="*", ms=15, color=colour, mec="k", mew=0.6)
    ax.plot([], [], "*", color="0.6", mec="k", ms=12, label="W_ℓ learns (clock, C2)")
    ax.set_xlabel("inference step k (t/τ_x after the clamp)")
    ax.set_xticks(steps)
    ax.set_ylabel("‖ε_ℓ(k)‖ / ‖δ_ℓ‖ (backprop)")
    ax.set_title("(a) Z-IL: the error wave moves down one layer per step", fontsize="medium")
    for ax, learned, title in ((axes[1], fa, "(b) Fa-Z-IL (tanh): feedback-arrival gate"),
                               (axes[2], naive, f"(c) {naive_name}: opens late")):
        frac = open_fraction(learned.phases["learn"], L)
        k = np.arange(frac.shape[0])
        for l in range(1, L + 1):
            ax.plot(k, frac[:, l - 1], "o-", color=layer_colour(l), lw=1.4, ms=4,
                    alpha=0.85, label=f"gate_{l}")
            ax.axvline(L - l, color=layer_colour(l), ls=":", lw=1.0)
        ax.set_xlabel("step k after the target is shown (dotted: k = L − ℓ)")
        ax.set_xticks(k[::2] if len(k) > 9 else k)
        ax.set_ylabel("fraction of layer's error neurons\nwith gate open")
        ax.set_ylim(-0.03, 1.05)
        ax.set_title(title, fontsize="medium")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def prediction_gate_figure(path: Path, traces: Mapping[str, Mapping[str, np.ndarray]],
                           results: Mapping[str, Mapping[str, float]], L: int) -> Path:
    """One panel per gate: the largest gate of each layer after a new input (no teacher), and
    on a log axis the largest |ε| of the circuit with the gate's threshold θ."""
    theta = 256 * torch.finfo(torch.float64).eps          # ArrivalGate's default θ
    fig, axes = plt.subplots(len(traces), 1, sharex=True, squeeze=False,
                             figsize=(9.5, 1.2 + 2.3 * len(traces)), layout="constrained")
    for ax, (name, tr) in zip(axes[:, 0], traces.items()):
        keep = (tr["t"] > 0) & (tr["t"] <= results[name]["settle_time"])
        t = tr["t"][keep]
        for l in range(1, L + 1):
            ax.plot(t, tr["gate"][keep, l - 1], color=layer_colour(l), lw=1.3,
                    label=f"gate_{l}")
        err = ax.twinx()
        err.plot(t, tr["error"][keep], color="0.45", ls="--", lw=1.0, label="max |ε|")
        err.axhline(theta, color="0.45", ls=":", lw=1.0, label="θ")
        err.set_yscale("log")
        err.set_ylabel("max |ε| (log)", color="0.35")
        r = results[name]
        opened = ("never opened" if r["first_opening_time"] < 0 else
                  f"first opened at t = {r['first_opening_time']:.3g} on a signal of "
                  f"{r['signal_at_first_opening']:.2g}")
        ax.set_title(f"{name}: max gate {r['max_gate']:.3g}, {opened}; weights moved "
                     f"{r['weight_change_l1']:.2g} (L1)", fontsize="medium", loc="left")
        ax.set_ylabel("largest gate\nof the layer")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()[0] + err.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.09, 1.0),
                  fontsize="small", frameon=False)
    axes[-1, 0].set_xlabel("time t after the new input (units of τ_x, log scale), "
                           "prediction mode: no teacher")
    fig.suptitle("Does the plasticity gate open while the circuit settles on a new input?",
                 fontsize="medium")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


GROUPS = (("z_il_float", "tab:green"), ("fa_z_il", "tab:green"), ("gamma_", "tab:red"),
          ("perturbed", "tab:red"), ("all_layers", "tab:red"), ("il", "tab:blue"),
          ("naive", "tab:orange"))


def divergence_figure(path: Path, relative: Mapping[str, float]) -> Path:
    names = list(relative)
    floor = 1e-17             # an exact zero has no place on a log axis
    values = [max(relative[n], floor) for n in names]
    colours = [next((c for prefix, c in GROUPS if n.startswith(prefix)), "0.5") for n in names]
    fig, ax = plt.subplots(figsize=(8.5, 0.3 * len(names) + 1.4), layout="constrained")
    ax.barh(names, values, color=colours, left=floor)
    for label, colour in (("exact (Z-IL, Fa-Z-IL)", "tab:green"),
                          ("Z-IL with C1, C2 or C3 broken", "tab:red"),
                          ("inference learning", "tab:blue"), ("naive gates", "tab:orange")):
        ax.barh([names[0]], [0], color=colour, label=label)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("L1 divergence from backprop's update / L1 size of the update")
    ax.set_title("Song et al. (2020): which protocols are backprop", fontsize="medium")
    ax.grid(alpha=0.3, axis="x")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the demo ---------------------------------------------------------------------------------

def run(config: Config | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Run every row and the prediction-settle check into ``out``; ``config`` is None (the
    defaults), a :class:`Config` or a mapping of its fields. Returns the summary (also written
    to ``out/summary.json``)."""
    cfg = load(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with intra_op_threads(1):
        summary = _run(cfg, out)
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    return summary


def _run(cfg: Config, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    tanh = problem(cfg)
    relu = problem(cfg, "relu", seed=cfg.relu_seed)
    tanh32 = problem(cfg, dtype=torch.float32)
    references = {id(p): p.backprop_update() for p in (tanh, relu)}

    learned: dict[str, Learned] = {}
    absolute, relative, settles = {}, {}, {}
    for row in rows(cfg, tanh, tanh32, relu):
        got = row.learn()
        dist, rel = divergence(got.change, references[id(row.reference)])
        status = got.phases["settle"].status_names() if "settle" in got.phases else None
        for s, name in enumerate(row.names):
            learned[name], absolute[name], relative[name] = got, dist[s], rel[s]
            if status is not None:
                settles[name] = status[s]

    gamma_steps = [k * cfg.gamma for k in range(tanh.L)]
    x_new = new_input(cfg)
    prediction, traces = {}, {}
    for name, gate in PREDICTION_GATES.items():
        prediction[name], traces[name] = prediction_settle(tanh, x_new, gate(), cfg)

    figures = [
        error_wave_figure(out / "error_wave.png", learned["z_il_float64"], tanh.deltas(),
                          learned["fa_z_il"], learned["naive_gate_error_relu"],
                          "naive φ = error gate on ReLU", tanh.L),
        prediction_gate_figure(out / "prediction_gate.png", traces, prediction, tanh.L),
        divergence_figure(out / "divergence.png", relative),
    ]
    summary: dict[str, Any] = {
        "total_update_l1": update_l1(references[id(tanh)]),
        "total_update_l1_relu": update_l1(references[id(relu)]),
        "divergence": absolute,
        "relative_divergence": relative,
        "network": {"widths": list(cfg.widths), "L": tanh.L, "activation": "tanh",
                    "batch": cfg.batch, "eta": cfg.eta, "dtype": "float64", "seed": cfg.seed,
                    "relu_seed": cfg.relu_seed,
                    "relu_dead_unit_fraction": relu.dead_unit_fraction()},
        "relu_examples_with_a_dead_layer": relu.examples_with_a_dead_layer(),
        "gamma_clock": {"gamma": cfg.gamma, "clock_start": CLOCK_START,
                        "openings_per_layer": clock_openings(
                            Schedule.z_il(tanh.L, start=CLOCK_START), gamma_steps),
                        "openings_per_layer_if_start_0": clock_openings(
                            Schedule.z_il(tanh.L), gamma_steps)},
        "settle_status": settles,
        "prediction_settle_gate": prediction,
        "figures": [f.name for f in figures],
        "config": {k: list(v) if isinstance(v, tuple) else v
                   for k, v in dataclasses.asdict(cfg).items()},
        "seconds": time.perf_counter() - start,
    }
    return summary


EXACT_ROWS = ("z_il_float64", "fa_z_il")


def passed(summary: Mapping[str, Any]) -> bool:
    """The paper's claims held: Z-IL and Fa-Z-IL exact to float64 rounding, the ordered gate
    shut while settling without a teacher, and no ReLU example with a dead layer."""
    rel = summary["relative_divergence"]
    ordered = summary["prediction_settle_gate"]["feedback_ordered"]
    return (all(rel[n] <= 1e-10 for n in EXACT_ROWS)
            and ordered["max_gate"] == 0
            and summary["relu_examples_with_a_dead_layer"] == 0)


def report(summary: Mapping[str, Any]) -> str:
    """The divergence table and the prediction-settle gates."""
    rows_ = [("row", "L1 divergence", "relative")]
    for name, d in summary["divergence"].items():
        rows_.append((name, f"{d:.3e}", f"{summary['relative_divergence'][name]:.3e}"))
    widths = [max(len(r[i]) for r in rows_) for i in range(3)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in rows_]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"backprop's update: L1 {summary['total_update_l1']:.4g} (tanh), "
                 f"{summary['total_update_l1_relu']:.4g} (ReLU; rows *_relu are relative to it)")
    dead = summary["relu_examples_with_a_dead_layer"]
    if dead:
        lines.append(f"WARNING: {dead} ReLU example(s) with an entirely dead hidden layer: "
                     "feedback below it is zero and Fa-Z-IL's gate fires late there")
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
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m demos.reproduce_song2020",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the tanh network and the batch")
    parser.add_argument("--relu-seed", type=int, default=defaults.relu_seed,
                        help="seed of the ReLU network (naive-gate rows)")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="examples B")
    parser.add_argument("--widths", type=int, nargs="+", default=list(defaults.widths),
                        help="n_0 ... n_L")
    parser.add_argument("--eta", type=float, default=defaults.eta, help="learning rate η")
    parser.add_argument("--gamma", type=float, default=defaults.gamma,
                        help="inference rate of the broken-C3 row")
    parser.add_argument("--perturbation", type=float, default=defaults.perturbation,
                        help="noise std on the hidden values of the broken-C1 row")

    def make_config(args):
        return Config(seed=args.seed, relu_seed=args.relu_seed, batch=args.batch,
                      widths=tuple(args.widths), eta=args.eta, gamma=args.gamma,
                      perturbation=args.perturbation)

    return run_cli(parser, argv, make_config, run, report)


if __name__ == "__main__":
    sys.exit(0 if passed(main()) else 1)
