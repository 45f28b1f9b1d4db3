"""Reproducing Podlaski & Machens (2020), Fig. 3: regression learned with dynamic inversion.

    python -m demos.reproduce_podlaski2020 --out DIR [--examples N] [--seed 0]
        [--simulated N] [--settle-method {affine,exp_rosenbrock,implicit_euler,exp_euler}]

Two tasks (SPEC §1, published settings), float64, online learning (one example per update):
**linear**, a linear 30-20-10 network (no biases) learning ``y = T x``, ``T ~ U(−1, 1)``,
``x ~ N(0, I)``; **nonlinear**, a 30-20-10-10 network (tanh hidden, biases) learning a teacher of
the same shape (:func:`workbench.tasks.teacher_regression`, weights ``U(−s, s)``, ``s = 1/√n_in``).

Every learner starts from ``W ~ U(−0.01, 0.01)``, sees the same examples and learns
``ΔW_ℓ = η δ_ℓ r_{ℓ-1}ᵀ``, ``Δb_ℓ = η δ_ℓ`` (η = 1e-2) with its credit δ: ``BP``, ``FA``
(``B_ℓ ~ N(0, 1/n_ℓ)``, or ``U(−s, s)`` with ``fa_scale``), ``PBP`` (``W⁺``), ``NDI`` (DI's
closed-form steady state), and ``DI`` / ``SDI`` *simulated* (layer-wise / single-loop dynamic
inversion, ``B = −Wᵀ``) on every example. NDI, DI and SDI run each α of ``alphas`` as a replica.
Each learner is one :func:`solvers.train` of its learning circuit (:mod:`circuits.registry`);
DI and SDI present every example through two phases: the credit populations settle from rest to
steady state with the weights held (``‖dy/dt‖ ≤ atol + rtol‖y‖``, not a fixed horizon), then
one Euler step of the weights over a unit time is the discrete update.

Settling is stiff: the explicit step is bounded by the fastest mode
(:meth:`DynamicInversion.exp_euler_dt_bound`), the settle time set by the slowest
(``1/(α + σ_min²)``, up to ~10⁴ time units). At a fixed input the circuits are affine in their
state, so they settle by their exact flow (``settle_method = "affine"``, :mod:`solvers.affine`)
on a grid ``t_k = settle_dt (gᵏ − 1)/(g − 1)``, g = 2: ~10–15 steps per example; ``time`` is
the first grid time at which the stopping rule held, ``time_lower`` the one before.
``exp_rosenbrock`` is exact here too; ``implicit_euler`` stretches settle times (it damps slow
modes by ``1/(1 + hλ)``) and would "settle" an unstable loop; ``exp_euler`` steps at
``dt_safety ×`` the bound at each example's weights (``explicit_steps``: what it would take).
Each simulated update is compared with its closed form (NDI for DI) on every example, and
``λ_max = max Re λ(M)`` of the linearised circuit (SPEC §1) is recorded every
``monitor_every`` examples (negative throughout with ``B = −Wᵀ``).

Fewer examples than the paper by default (2000 linear, the paper's count, and 3000 nonlinear
instead of 10⁴–2·10⁴) keep the run at ~2 minutes here; ``--simulated N`` limits DI / SDI to the
first N. Hidden ``‖δ_ℓ‖`` are clipped to ``clip`` (default 10; the authors clip too, value not
given): unclipped, NDI at α = 0.001 inverts the tiny initial W and overflows within ~300
examples. "Reached": the first evaluation with test loss ≤ ``threshold`` (0.1) × the initial
one; ``claims`` says whether DI, NDI and PBP get there in fewer examples than BP and FA. The
paper's linear task has them ahead of BP (~160–180 against 280) but not of FA (~140).

Writes ``DIR/summary.json`` (per task and learner: final test loss, examples to ``threshold``,
settle statistics, DI–NDI angle, λ_max range; ``claims``) and ``learning_curves.png``,
``di_ndi_angle.png``, ``lambda_max.png``, ``settle.png``.
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
from typing import Any, Mapping, Sequence

import torch

from circuits import ForwardNetwork, registry
from circuits.credit import angle, weight_updates
from solvers import Phase, train
from workbench.plots import podlaski2020_figures
from workbench.tasks import teacher_regression

from .config import (check_choice, check_int, check_layer_widths, check_names, check_number,
                     check_number_in, check_numbers, check_optional, dataclass_config,
                     first_at_or_below, intra_op_threads, jsonable, run_cli, summary_stats)

F64 = torch.float64
METHODS = ("BP", "FA", "PBP", "NDI", "DI", "SDI")
PER_ALPHA = ("NDI", "DI", "SDI")
SIMULATED = ("DI", "SDI")
TASKS = ("linear", "nonlinear")
SETTLE_METHODS = ("affine", "exp_rosenbrock", "implicit_euler", "exp_euler")
FRACTIONS = (0.5, 0.3, 0.1, 0.01, 1e-4)     # examples to reach these × the initial test loss


@dataclass(frozen=True)
class Config:
    """The demo's parameters (``examples``, ``seed`` are also command-line flags)."""

    seed: int = 0
    tasks: tuple[str, ...] = TASKS
    linear_examples: int = 2000
    nonlinear_examples: int = 3000
    # the simulated learners (DI, SDI) train on the first this many examples (None: all)
    linear_simulated: int | None = None
    nonlinear_simulated: int | None = None
    n_test: int = 500
    linear_widths: tuple[int, ...] = (30, 20, 10)
    nonlinear_widths: tuple[int, ...] = (30, 20, 10, 10)
    linear_teacher_scale: float = 1.0            # T ~ U(−1, 1)
    nonlinear_teacher_scale: float | None = None  # None: 1/√n_in
    eta: float = 1e-2
    init_scale: float = 0.01                     # W ~ U(−0.01, 0.01)
    alphas: tuple[float, ...] = (0.01, 0.001)
    methods: tuple[str, ...] = METHODS
    fa_scale: float | None = None                # FA's B: None N(0, 1/n_ℓ); s: U(−s, s)
    clip: float | None = 10.0                    # clip ‖δ_ℓ‖ of hidden layers (None: never)
    threshold: float = 0.1                       # "reached": test loss ≤ threshold × initial
    eval_every: int = 20                         # examples between test-loss evaluations
    monitor_every: int = 50                      # examples between λ_max evaluations
    # how DI / SDI are integrated: the exact "affine" flow, "exp_rosenbrock" or "implicit_euler" on the
    # geometric grid t_k = settle_dt (g^k − 1)/(g − 1), g = settle_growth, up to settle_t1; or
    # "exp_euler" at dt = dt_safety × its stability bound (the explicit comparison: ~10⁴ steps)
    settle_method: str = "affine"
    settle_dt: float = 1.0
    settle_growth: float = 2.0
    settle_t1: float = 1e6                       # ≫ the slowest settles (~1e4); short, so
                                                 # that t = k·(settle_t1 + 1) stays exact
    dt_safety: float = 0.8                       # dt = safety × (1 + α)/(α + σ_max²)
    sdi_dt_safety: float = 0.4                   # SDI: the loop has a lag, more margin
    dt_max: float = 200.0
    max_steps: int = 100_000                     # exp_euler: per settle
    atol: float = 1e-14                          # late in training ‖y‖ is tiny: atol must not dominate
    rtol: float = 1e-9                           # the update is then NDI's to ~1e-6 (‖J⁻¹‖ ≲ 1/α)

    def __post_init__(self):
        for name in ("linear_examples", "nonlinear_examples", "n_test", "eval_every",
                     "monitor_every", "max_steps"):
            check_int(name, getattr(self, name), 1)
        for name in ("linear_simulated", "nonlinear_simulated"):   # None: all examples
            check_optional(check_int, name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_choice("settle_method", self.settle_method, SETTLE_METHODS)
        check_number_in("settle_growth", self.settle_growth, 1, what="the step's growth factor")
        check_names("tasks", self.tasks, TASKS)
        check_names("methods", self.methods, METHODS)
        for name in ("linear_widths", "nonlinear_widths"):
            check_layer_widths(name, getattr(self, name), layers=2)
        check_numbers("alphas", self.alphas)
        for name in ("linear_teacher_scale", "eta", "init_scale", "dt_safety", "sdi_dt_safety",
                     "dt_max", "rtol", "settle_dt", "settle_t1"):
            check_number(name, getattr(self, name), positive=True)
        for name in ("nonlinear_teacher_scale", "clip", "fa_scale"):
            check_optional(check_number, name, getattr(self, name), positive=True)
        check_number_in("threshold", self.threshold, 0, 1, open_low=True,
                        what="a fraction of the initial loss")
        check_number("atol", self.atol, positive=False)

    @classmethod
    def quick(cls, **overrides: Any) -> "Config":
        """A few-second version for tests: fewer examples and test points."""
        base = dict(linear_examples=150, nonlinear_examples=60, n_test=200, eval_every=10,
                    monitor_every=5)
        base.update(overrides)
        return cls(**base)


TUPLES = ("tasks", "linear_widths", "nonlinear_widths", "alphas", "methods")


def load(config: Config | Mapping[str, Any] | None = None) -> Config:
    """``config`` as a :class:`Config` (None: the defaults; a mapping: overrides of them)."""
    return dataclass_config(Config, config, TUPLES)


# -- the learners: learning circuits trained by solvers.train ------------------------------------

REGISTRY = {"BP": "backprop", "FA": "feedback_alignment", "PBP": "pseudo_backprop",
            "NDI": "ndi", "DI": "di", "SDI": "sdi"}


def learning_circuit(cfg: Config, method: str, widths: Sequence[int], activation: str,
                     bias: bool, init: ForwardNetwork, fa_feedback: list[torch.Tensor],
                     x: torch.Tensor, y: torch.Tensor):
    """One method's learning circuit (:mod:`circuits.registry`): ``W_ℓ += η δ_ℓ r_{ℓ-1}ᵀ`` (and
    ``b_ℓ += η δ_ℓ``) per example with the method's credit, hidden ``‖δ_ℓ‖`` clipped to
    ``clip``. NDI, DI and SDI run one replica per α; DI and SDI settle from rest at every
    example."""
    kw: dict[str, Any] = {"clip": cfg.clip}
    if method in PER_ALPHA:
        kw["alpha"] = torch.tensor(cfg.alphas, dtype=F64)
    if method == "FA":
        kw["feedback"] = fa_feedback
    net = ForwardNetwork(widths, activation, bias=bias, weights=init.weights,
                         biases=[torch.zeros(1, 1, n, dtype=F64) for n in widths[1:]]
                         if bias else None)
    return registry.learning_circuit(REGISTRY[method], net, x, y, eta=cfg.eta, circuit=kw,
                                     reset="rest" if method in SIMULATED else "none")


def settle_phases(cfg: Config, safety: float) -> list[Phase]:
    """Settle the credit populations (weights held) to steady state, then one Euler step of
    the weights over a unit time: the discrete online update, as integration.

    ``affine`` / ``exp_rosenbrock`` / ``implicit_euler``: the geometric grid with one Jacobian
    per settle (DI and SDI with the linear carry are affine once the forward pass is fixed, so
    the first two are exact); ``exp_euler``: dt = ``safety`` × its stability bound at the
    example's weights (:meth:`~circuits.DynamicInversion.exp_euler_dt_bound`), at most
    ``max_steps`` steps."""
    if cfg.settle_method == "exp_euler":
        def dt(circuit, _):
            return float(torch.clamp(safety * circuit.exp_euler_dt_bound(),
                                     max=cfg.dt_max).min())
        settle = Phase("settle", cfg.settle_t1, dt, teacher=True, steady_state=True,
                       method="exp_euler", atol=cfg.atol, rtol=cfg.rtol, populations="fast",
                       max_steps=cfg.max_steps)
    else:
        settle = Phase("settle", cfg.settle_t1, cfg.settle_dt, teacher=True, steady_state=True,
                       method=cfg.settle_method, atol=cfg.atol, rtol=cfg.rtol,
                       populations="fast", options={"dt_growth": cfg.settle_growth,
                                                    "jacobian_every": None, "check_every": 1})
    return [settle, Phase("update", 1.0, 1.0, teacher=True, populations="weights")]


def settle_record(cfg: Config, circuit, sol, t0: float, safety: float) -> dict[str, Any]:
    """Settle statistics per replica of one settle: ``steps``, ``t`` (the first grid time at
    which the stopping rule held), ``t_lower`` (the grid time before it), and ``explicit_steps``,
    what exponential Euler at ``safety ×`` its stability bound would need for ``t``."""
    dt_explicit = torch.clamp(safety * circuit.exp_euler_dt_bound(), max=cfg.dt_max)
    t_stop, dt = sol.t_stop - t0, float(sol.stats["dt"])
    if cfg.settle_method == "exp_euler":
        steps, t = torch.round(t_stop / dt), t_stop
        t_lower = (t - 10 * dt).clamp_min(0)                # checks every 10 steps
    else:
        # the grid t_k = dt (gᵏ − 1)/(g − 1) (k dt if g = 1); the rule held at y(t_{k−1})
        # (at y(t_k) for the exact flow, which checks the state a step reached)
        g = cfg.settle_growth
        steps = torch.round(t_stop / dt if g == 1 else
                            torch.log1p(t_stop * (g - 1) / dt) / math.log(g))

        def grid(k):
            k = k.clamp_min(0).to(F64)
            return k * dt if g == 1 else dt * (g ** k - 1) / (g - 1)
        lag = 0 if cfg.settle_method == "affine" else 1
        t, t_lower = grid(steps - lag), grid(steps - lag - 1)
    return {"steps": steps, "time": t, "time_lower": t_lower,
            "explicit_steps": torch.ceil(t / dt_explicit), "dt": dt}


def train_learner(cfg: Config, method: str, lc, task, n: int, evaluate_at: set[int],
                  names: list[str], curves: dict, record: dict) -> list[int | None]:
    """Train ``lc`` online on the first ``n`` examples (one :func:`solvers.train`); test losses
    into ``curves`` at ``evaluate_at``, settle statistics of DI / SDI into ``record``. Returns
    the example at which each replica diverged (held and flagged by ``train``), or None."""
    L, x_train, y_train = lc.template.L, task.x_train, task.y_train
    safety = cfg.sdi_dt_safety if method == "SDI" else cfg.dt_safety
    diverged_at: list[int | None] = [None] * lc.S
    last = {"y": lc.initial_state()}

    def evaluate(k: int, y, flags) -> None:
        r = lc.outputs(y, task.x_test)
        loss = 0.5 * ((task.y_test[None] - r) ** 2).sum(-1).mean(-1)
        for name, v in zip(names, torch.where(flags, math.inf, loss).tolist()):
            curves[name]["examples"].append(k)
            curves[name]["test_loss"].append(v)

    def on_chunk(k, y, sol):
        flags = sol.stats["diverged"]
        for s in torch.nonzero(flags).flatten().tolist():
            diverged_at[s] = k - 1 if diverged_at[s] is None else diverged_at[s]
        if k in evaluate_at:
            evaluate(k, y, flags)
        last["y"] = y

    def on_presentation(k, y, sols):
        circuit = lc.bound(last["y"])                 # at the weights before this update
        fast = {name: y[name] for name in lc.fast}
        mine = weight_updates(circuit.forward, circuit.credits(fast))
        theirs = weight_updates(circuit.forward, circuit.credits(circuit.steady_state()))
        record["angle"].append(angle(mine[:L - 1], theirs[:L - 1]).tolist())
        settled = settle_record(cfg, circuit, sols[0], k * period, safety)
        for key in ("steps", "time", "time_lower", "explicit_steps"):
            record[key].append(settled[key].tolist())
        record["dt"].append(settled["dt"])
        record["seconds"] += sols[0].stats["seconds"]
        record["unconverged"] += int((~sols[0].converged).sum())
        if k % cfg.monitor_every == 0 or k == n - 1:
            record["lambda_at"].append(k)
            record["lambda_max"].append(circuit.max_loop_eigenvalue().tolist())

    evaluate(0, last["y"], torch.zeros(lc.S, dtype=torch.bool))
    stream = lambda k: (x_train[k:k + 1], y_train[k:k + 1])     # noqa: E731
    if method in SIMULATED:
        phases = settle_phases(cfg, safety)
        period = sum(ph.duration for ph in phases)
        train(lc, last["y"], stream, phases=phases, presentations=n, on_chunk=on_chunk,
              on_presentation=on_presentation, progress=False)
    else:
        train(lc, last["y"], stream, period=1.0, dt=1.0, presentations=n, on_chunk=on_chunk,
              progress=False)
    return diverged_at


# -- one task --------------------------------------------------------------------------------------

def make_task(cfg: Config, name: str, examples: int):
    linear = name == "linear"
    widths = list(cfg.linear_widths if linear else cfg.nonlinear_widths)
    task = teacher_regression(examples, cfg.n_test,
                              widths=(widths[0], widths[-1]) if linear else tuple(widths),
                              activation="linear" if linear else "tanh",
                              teacher_scale=(cfg.linear_teacher_scale if linear
                                             else cfg.nonlinear_teacher_scale), seed=cfg.seed)
    return task, widths, "linear" if linear else "tanh", not linear


def run_task(cfg: Config, name: str) -> dict[str, Any]:
    start = time.perf_counter()
    examples = cfg.linear_examples if name == "linear" else cfg.nonlinear_examples
    task, widths, activation, bias = make_task(cfg, name, examples)
    init = ForwardNetwork(widths, "linear", bias=False, init="uniform", scale=cfg.init_scale,
                          seed=cfg.seed + 100)
    g = torch.Generator().manual_seed(cfg.seed + 200)
    shapes = list(zip(widths[1:-1], widths[2:]))
    fa_B = ([torch.randn(1, n, m, generator=g, dtype=F64) / m ** 0.5 for n, m in shapes]
            if cfg.fa_scale is None else
            [(torch.rand(1, n, m, generator=g, dtype=F64) * 2 - 1) * cfg.fa_scale
             for n, m in shapes])
    # single-loop DI on a one-hidden-layer net is layer-wise DI (the same equations): skipped
    methods = [m for m in cfg.methods if not (m == "SDI" and len(widths) == 3)]
    simulated = cfg.linear_simulated if name == "linear" else cfg.nonlinear_simulated
    simulated = examples if simulated is None else min(simulated, examples)
    evaluate_at = {k for k in range(examples + 1) if k % cfg.eval_every == 0} | {
        examples, simulated}
    learners, curves = {}, {}
    for m in methods:
        lc = learning_circuit(cfg, m, widths, activation, bias, init, fa_B,
                              task.x_train[:1], task.y_train[:1])
        names = [f"{m} α={a:g}" for a in cfg.alphas] if m in PER_ALPHA else [m]
        curves.update({n: {"examples": [], "test_loss": []} for n in names})
        record = {"angle": [], "steps": [], "time": [], "time_lower": [], "explicit_steps": [],
                  "dt": [], "seconds": 0.0, "unconverged": 0, "lambda_max": [],
                  "lambda_at": []}
        n = simulated if m in SIMULATED else examples
        diverged_at = train_learner(cfg, m, lc, task, n, {k for k in evaluate_at if k <= n},
                                    names, curves, record)
        learners[m] = (names, diverged_at, record)
    summary = summarise_task(cfg, examples, learners, curves, time.perf_counter() - start)
    summary["simulated_examples"] = simulated
    if len(methods) < len(cfg.methods):
        summary["skipped"] = {"SDI": "one hidden layer: single-loop DI is layer-wise DI"}
    return summary


TRACES = ("angle", "steps", "time", "time_lower", "explicit_steps")


def summarise_task(cfg, examples, learners, curves, seconds):
    initial = next(iter(curves.values()))["test_loss"][0]
    level = cfg.threshold * initial
    out: dict[str, Any] = {"examples": examples, "initial_test_loss": initial,
                           "threshold_loss": level, "seconds": seconds, "methods": {},
                           "curves": curves, "traces": {}}
    for method, (names, diverged_at, rec) in learners.items():
        for s, n in enumerate(names):
            at, loss = curves[n]["examples"], curves[n]["test_loss"]
            entry: dict[str, Any] = {
                "final_test_loss": loss[-1], "min_test_loss": min(loss),
                "trained_examples": at[-1], "diverged_at": diverged_at[s],
                "examples_to_threshold": first_at_or_below(at, loss, level),
                "examples_to_fraction": {f"{f:g}": first_at_or_below(at, loss, f * initial)
                                         for f in FRACTIONS}}
            if method in SIMULATED:
                tr = {key: [r[s] for r in rec[key]] for key in TRACES + ("lambda_max",)}
                entry["settle"] = {
                    **{key: summary_stats(tr[key]) for key in TRACES[1:]},
                    "dt": summary_stats(rec["dt"]),
                    "unconverged": rec["unconverged"], "examples": len(tr["steps"]),
                    "method": cfg.settle_method,
                    "dt_growth": 1.0 if cfg.settle_method == "exp_euler" else cfg.settle_growth,
                    "solve_seconds": rec["seconds"]}
                ang = tr["angle"]
                entry["angle_to_closed_form"] = {
                    **summary_stats(ang), "first": ang[0] if ang else None,
                    "reference": "NDI" if method == "DI" else "SDI closed form"}
                entry["lambda_max"] = summary_stats(tr["lambda_max"])
                out["traces"][n] = {**{key: tr[key] for key in TRACES},
                                    "lambda_at": rec["lambda_at"],
                                    "lambda_max": tr["lambda_max"]}
            out["methods"][n] = entry
    out["claims"] = claims(cfg, out["methods"], examples)
    return out
def claims(cfg: Config, methods: Mapping[str, Any], examples: int | None = None
           ) -> dict[str, Any]:
    """Do DI, NDI and PBP reach the threshold in fewer examples than BP and FA?

    The paper (linear task) has DI, NDI and PBP ahead of BP (~160–180 against 280 examples)
    but not of FA (~140, with ``B ~ N(0, 1/n)``); how fast FA is depends on its feedback's
    scale (``fa_scale``), so the two comparisons are reported apart as well as together."""
    def faster(a, b):
        ka, kb = methods[a]["examples_to_threshold"], methods[b]["examples_to_threshold"]
        if ka is None:
            return False
        return kb is None or ka < kb

    fast = [n for n in methods if n.split()[0] in ("DI", "NDI", "PBP")]
    slow = [n for n in methods if n in ("BP", "FA")]
    pairs = {f"{a} < {b}": faster(a, b) for a in fast for b in slow}
    held = all(pairs.values()) if pairs else None
    verdict = ("no comparison (BP/FA or DI/NDI/PBP not run)" if held is None else
               "holds: every inversion method (DI, NDI, PBP) reaches the threshold in fewer "
               "examples than BP and FA" if held else
               "fails for " + ", ".join(k for k, v in pairs.items() if not v))
    against = {b: (all(pairs[f"{a} < {b}"] for a in fast) if fast else None) for b in slow}
    note = None
    sim = [n for n in fast if n.split()[0] in SIMULATED]
    if sim:
        worst = max((methods[n].get("angle_to_closed_form", {}).get("max") or 0.0)
                    for n in sim)
        trained = min(methods[n]["trained_examples"] for n in sim)
        scope = (f"on all {trained} examples" if examples is None or trained >= examples else
                 f"on the first {trained} examples only (a DI that has not reached the "
                 "threshold by then counts as not reaching it)")
        note = (f"DI is simulated to steady state {scope}; its update stayed within "
                f"{worst:.2g}° of NDI's closed form on every one of them")
    return {"pairs": pairs, "all_hold": held, "verdict": verdict,
            **{f"beats_{b}": v for b, v in against.items()},
            "examples_to_threshold": {n: methods[n]["examples_to_threshold"]
                                      for n in methods},
            "paper": "linear task: DI, NDI, PBP reach the threshold before BP (~160–180 vs "
                     "280 examples) but not before FA (~140, B ~ N(0, 1/n)); FA's speed "
                     "depends on its feedback scale (fa_scale)",
            "simulated_note": note,
            "threshold": f"test loss ≤ {cfg.threshold:g} × initial test loss"}


# -- the demo ------------------------------------------------------------------------------------

def run(config: Config | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Run every task into ``out``; returns the summary (also ``out/summary.json``)."""
    cfg = load(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with intra_op_threads(1):
        tasks = {name: run_task(cfg, name) for name in cfg.tasks}
        paths = podlaski2020_figures(out, tasks, cfg.alphas, cfg.threshold)
    summary = jsonable({
        "tasks": tasks,
        "claims": {name: t["claims"] for name, t in tasks.items()},
        "figures": [f.name for f in paths],
        "config": dataclasses.asdict(cfg),
        "seconds": time.perf_counter() - start,
    })
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=1, allow_nan=False)
    return summary


def passed(summary: Mapping[str, Any]) -> bool:
    """Every simulated DI/SDI solve converged and matched its closed form to < 1° on average."""
    for t in summary["tasks"].values():
        for n, m in t["methods"].items():
            if "settle" in m and (m["settle"]["unconverged"] > 0
                                  or (m["angle_to_closed_form"]["mean"] or 0) > 1.0):
                return False
    return True


def report(summary: Mapping[str, Any]) -> str:
    lines = []
    for name, t in summary["tasks"].items():
        lines.append(f"{name} regression: {t['examples']} examples, initial test loss "
                     f"{t['initial_test_loss']:.3g}, threshold {t['threshold_loss']:.3g} "
                     f"({t['seconds']:.1f} s)")
        for n, m in t["methods"].items():
            k = m["examples_to_threshold"]
            line = (f"  {n:<14} final {m['final_test_loss']:<10.3g} to threshold "
                    f"{'never' if k is None else k:>6}")
            if "settle" in m:
                st = m["settle"]
                a = m["angle_to_closed_form"]
                line += (f"  {st['examples']} simulated ({st['method']}), settle steps mean "
                         f"{st['steps']['mean']:.1f} max {st['steps']['max']:.0f} (exp_euler "
                         f"would take ~{st['explicit_steps']['mean']:.3g}), time mean "
                         f"{st['time']['mean']:.3g} max {st['time']['max']:.3g}, "
                         f"angle to closed "
                         f"form mean {a['mean']:.2g}° max {a['max']:.2g}°; λ_max "
                         f"[{m['lambda_max']['min']:.3g}, {m['lambda_max']['max']:.3g}]")
            lines.append(line)
        c = t["claims"]
        lines.append(f"  claim: {c['verdict']} (beats BP: {c.get('beats_BP')}, beats FA: "
                     f"{c.get('beats_FA')})")
    lines.append(f"{summary['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m demos.reproduce_podlaski2020",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--examples", type=int, nargs="+", default=None,
                        help="training examples: one number for both tasks, or two "
                             "(linear, nonlinear); default "
                             f"{defaults.linear_examples} {defaults.nonlinear_examples}")
    parser.add_argument("--simulated", type=int, nargs="+", default=None,
                        help="examples the simulated DI / SDI learners train on: one number "
                             "or two (linear, nonlinear); default: all")
    parser.add_argument("--settle-method", default=defaults.settle_method,
                        choices=SETTLE_METHODS,
                        help="how DI / SDI are integrated to steady state (default "
                             f"{defaults.settle_method}; exp_euler is the slow explicit one)")
    parser.add_argument("--tasks", nargs="+", default=list(defaults.tasks), choices=TASKS)
    def make_config(args):
        fields: dict[str, Any] = {"seed": args.seed, "tasks": tuple(args.tasks),
                                  "settle_method": args.settle_method}
        for flag in ("examples", "simulated"):
            given = getattr(args, flag)
            if given is None:
                continue
            if len(given) not in (1, 2):
                raise ValueError(f"--{flag}: received {given}, expected one or two numbers "
                                 "(both tasks, or linear then nonlinear)")
            lin, non = (given * 2)[:2]
            fields.update({f"linear_{flag}": lin, f"nonlinear_{flag}": non})
        return Config(**fields)

    return run_cli(parser, argv, make_config, run, report)


if __name__ == "__main__":
    sys.exit(0 if passed(main()) else 1)
