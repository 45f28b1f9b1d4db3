"""Predictive coding: the cost of one training example, against a plain autograd SGD step.

One network (default ``ForwardNetwork([64, 128, 128, 128, 10], "tanh")``, linear output, float32)
learns from a stream of seeded examples ``x ~ N(0, I)``, ``y ~ N(0, I)``, one batch of B at a
time, with each of four rules; every rule carries its weights from one example to the next:

``backprop``   forward, loss ``½‖y − a_L‖²`` (mean over the batch), ``backward``, in-place SGD
               on ``nn.Parameter`` tensors holding the same weights.
``z_il``       ``PredictiveCoding(net, x, y, eta, plasticity=Schedule.z_il(L))`` from its
               ``initial_state()`` (the feed-forward pass: condition C1), then
               ``solve(..., dt=1, t1=L, method="euler", steady_state=False)``; the final weights
               are written back into the network. Building the circuit and its initial state is
               part of the cost: that is what one example costs.
``fa_z_il``    the autonomous protocol on one circuit whose state (values, weights, gates) runs
               on from example to example: a prediction-mode settle with the
               :class:`~circuits.ArrivalGate` (stops at steady state), then the teacher phase
               (``L + 1`` Euler steps of dt = 1), both through :func:`solvers.present`.
``il``         inference learning: from the feed-forward pass, relax with the output clamped
               (small Euler step, stops at steady state), then apply ``c.il_updates(state)``.

Reported: wall time per example (time per batch / B), the median over ``--repeats`` timed passes
over ``--examples`` batches after one warm-up pass, its ratio to backprop at the same B, and the
inference steps each PC rule took. Agreement, checked in float64 whatever ``--dtype``: the first
update of each PC rule against the autograd step (Z-IL and Fa-Z-IL must equal it to rounding;
plain IL is not expected to). A breakdown of Z-IL's time (building, one vector-field evaluation,
one ``solve`` step) explains where its cost goes.

Run from the repository root::

    python -m benchmarks.pc_cost                          # defaults: B = 1 and 32, float32, cpu
    python -m benchmarks.pc_cost --batch 1 --examples 50 --out pc_cost.json
"""
from __future__ import annotations

import argparse
import math
import statistics
from typing import Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from circuits import ArrivalGate, ForwardNetwork, PredictiveCoding, Schedule
from solvers import Phase, present, solve

from . import finish, prepare
from .di_batched import DTYPES, fmt_s, load_average, machine_info, timed

METHODS = ("backprop", "z_il", "fa_z_il", "il")
Params = list[torch.Tensor]          # W_1 [n_1, n_0], b_1 [n_1], ..., W_L, b_L


# -- set-up ----------------------------------------------------------------------------------------

def make_network(widths: Sequence[int], dtype: torch.dtype, device: torch.device
                 ) -> ForwardNetwork:
    """The benchmarked network: tanh hidden layers, linear output, biases, seed 0."""
    return ForwardNetwork(list(widths), activation="tanh", seed=0, dtype=dtype, device=device)


def clone_network(net: ForwardNetwork) -> ForwardNetwork:
    """An independent copy (its own weight tensors), so each rule trains its own network."""
    return ForwardNetwork(net.widths, net.hidden_activation.name, net.output_activation.name,
                          dtype=net.dtype, device=net.device,
                          weights=[w.clone() for w in net.weights],
                          biases=[b.clone() for b in net.biases])


def make_examples(widths: Sequence[int], count: int, batch: int, dtype: torch.dtype,
                  device: torch.device, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` seeded batches ``(x [B, n_0], y [B, n_L])``, both N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.randn(batch, widths[0], generator=g, dtype=torch.float64)
        y = torch.randn(batch, widths[-1], generator=g, dtype=torch.float64)
        out.append((x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)))
    return out


def network_params(net: ForwardNetwork) -> Params:
    """The S = 1 network's weights and biases as ``[n_out, n_in]`` and ``[n_out]`` views."""
    return [p for W, b in zip(net.weights, net.biases) for p in (W[0], b[0, 0])]


# -- the four learning rules -----------------------------------------------------------------------

class Learner:
    """One rule training its own copy of the network.

    ``learn(x, y)`` processes one batch (``x [B, n_0]``, ``y [B, n_L]``); ``params()`` are the
    current weights (:data:`Params`); ``steps`` collects the inference steps per batch (empty for
    backprop) and ``settled`` whether each steady-state phase stopped before its horizon."""

    def __init__(self, net: ForwardNetwork, eta: float, x_first: torch.Tensor, args):
        self.net, self.eta, self.L = clone_network(net), eta, net.L
        self.steps: list[int] = []
        self.settled: list[bool] = []

    def learn(self, x: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def params(self) -> Params:
        return network_params(self.net)

    def _write_back(self, state) -> None:
        """Copy a plastic circuit's final weights into the network (in place, like SGD)."""
        for l, (W, b) in enumerate(zip(self.net.weights, self.net.biases), start=1):
            W.copy_(state[f"W_{l}"])
            b.copy_(state[f"b_{l}"])


class Backprop(Learner):
    """Autograd on ``nn.Parameter`` copies of the weights; ``W ← W − η ∇`` in place."""

    def __init__(self, net, eta, x_first, args):
        super().__init__(net, eta, x_first, args)
        self.weights = [torch.nn.Parameter(p.clone()) for p in network_params(self.net)]
        self.phi = self.net.hidden_activation.phi

    def learn(self, x, y):
        h = x
        for l in range(self.L):
            a = torch.addmm(self.weights[2 * l + 1], h, self.weights[2 * l].t())
            h = self.phi(a) if l < self.L - 1 else a
        loss = 0.5 * (y - a).pow(2).sum(-1).mean()
        loss.backward()
        with torch.no_grad():
            for p in self.weights:
                p.sub_(self.eta * p.grad)
                p.grad = None

    def params(self):
        return [p.detach() for p in self.weights]


class ZIL(Learner):
    """A fresh circuit per example (conditions C1–C3), its final weights written back."""

    def learn(self, x, y):
        c = PredictiveCoding(self.net, x, y, eta=self.eta, plasticity=Schedule.z_il(self.L))
        sol = solve(c, c.initial_state(), 0.0, float(self.L), dt=1.0, method="euler",
                    steady_state=False, progress=False)
        self.steps.append(sol.stats["steps"])
        self._write_back(sol.y1)


class FaZIL(Learner):
    """The circuit is built once; its state (weights included) runs on across examples, so
    each settle starts where the last teacher phase left it. ``steps`` counts both phases."""

    def __init__(self, net, eta, x_first, args):
        super().__init__(net, eta, x_first, args)
        self.circuit = PredictiveCoding(self.net, x_first, None, eta=eta,
                                        plasticity=ArrivalGate())
        self.state = self.circuit.initial_state()
        self.phases = [Phase("predict", duration=args.max_time, dt=args.settle_dt,
                             teacher=False, steady_state=True),
                       Phase("teach", duration=float(self.L + 1), dt=1.0, teacher=True)]

    def learn(self, x, y):
        self.state, sols = present(self.circuit, self.state, x, y, self.phases)
        self.steps.append(sols[0].stats["steps"] + sols[1].stats["steps"])
        self.settled.append(bool(sols[0].converged.all()))

    def params(self):
        return [self.state[f"{k}_{l}"][0] if k == "W" else self.state[f"{k}_{l}"][0, 0]
                for l in range(1, self.L + 1) for k in ("W", "b")]


class IL(Learner):
    """A fresh circuit per example, relaxed from the feed-forward pass with the output clamped;
    then ``W ← W + η ε fᵀ`` from :meth:`~circuits.PredictiveCoding.il_updates`."""

    def __init__(self, net, eta, x_first, args):
        super().__init__(net, eta, x_first, args)
        self.dt, self.horizon = args.il_dt, args.max_time

    def learn(self, x, y):
        c = PredictiveCoding(self.net, x, y, eta=self.eta)
        sol = solve(c, c.initial_state(), 0.0, self.horizon, dt=self.dt, method="euler",
                    steady_state=True, progress=False)
        self.steps.append(sol.stats["steps"])
        self.settled.append(bool(sol.converged.all()))
        for l, (dW, db) in enumerate(c.il_updates(sol.y1)):
            self.net.weights[l].add_(dW)
            self.net.biases[l].add_(db)


LEARNERS: dict[str, type[Learner]] = {"backprop": Backprop, "z_il": ZIL, "fa_z_il": FaZIL,
                                      "il": IL}


# -- measurements ----------------------------------------------------------------------------------

def update_gaps(widths: Sequence[int], batch: int, eta: float, dtype: torch.dtype,
                device: torch.device, args) -> dict[str, float]:
    """Max |ΔW_rule − ΔW_backprop| over every weight and bias after the first batch, for each
    PC rule (Z-IL and Fa-Z-IL equal the autograd step to rounding; IL does not)."""
    net = make_network(widths, dtype, device)
    (x, y), = make_examples(widths, 1, batch, dtype, device)

    def update(name: str) -> Params:
        learner = LEARNERS[name](net, eta, x, args)
        before = [p.clone() for p in learner.params()]
        learner.learn(x, y)
        return [p - q for p, q in zip(learner.params(), before)]

    reference = update("backprop")
    return {name: max((a - b).abs().max().item() for a, b in zip(update(name), reference))
            for name in METHODS[1:]}


def time_rules(net: ForwardNetwork, examples, eta: float, repeats: int, device: torch.device,
               args) -> dict[str, dict]:
    """Seconds per batch for each rule: one warm-up pass, then ``repeats`` interleaved timed
    passes over ``examples``, each pass from fresh weights (built outside the timing)."""
    x_first = examples[0][0]
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    last: dict[str, Learner] = {}
    for rep in range(repeats + 1):
        for name in METHODS:
            learner = LEARNERS[name](net, eta, x_first, args)
            t, _ = timed(lambda: [learner.learn(x, y) for x, y in examples], device)
            if rep:                                    # pass 0 is the warm-up
                seconds[name].append(t / len(examples))
            last[name] = learner
    return {name: {"seconds_per_batch": seconds[name],
                   "median_seconds_per_batch": statistics.median(seconds[name]),
                   "steps_per_batch": (statistics.fmean(last[name].steps)
                                       if last[name].steps else None),
                   "all_settled": all(last[name].settled)}
            for name in METHODS}


def arrival_threshold(dtype: torch.dtype) -> float:
    """The default :class:`~circuits.ArrivalGate`'s arrival threshold hθ."""
    return ArrivalGate().thresholds(dtype)[1]


class OpCounter(TorchDispatchMode):
    """Counts ATen operator calls: the forward ops, autograd's backward ops and views alike.
    Each costs a roughly fixed dispatch overhead on the CPU, whatever the size of its tensors."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def ops_per_batch(net: ForwardNetwork, examples, eta: float, args) -> dict[str, float]:
    """ATen operator calls per batch of each rule over one pass of ``examples`` (untimed)."""
    out = {}
    for name in METHODS:
        learner = LEARNERS[name](net, eta, examples[0][0], args)
        with OpCounter() as counter:
            for x, y in examples:
                learner.learn(x, y)
        out[name] = counter.calls / len(examples)
    return out


def zil_breakdown(net: ForwardNetwork, x: torch.Tensor, y: torch.Tensor, eta: float,
                  device: torch.device, reps: int = 50) -> dict[str, float]:
    """Where one Z-IL example's time goes (seconds, medians of ``reps``): building the circuit
    and its initial state, one vector-field evaluation, one whole ``solve`` of L steps, and
    what ``solve`` adds to its L evaluations (validation, flat state, checks)."""
    L = net.L

    def build():
        c = PredictiveCoding(net, x, y, eta=eta, plasticity=Schedule.z_il(L))
        return c, c.initial_state()

    c, y0 = build()

    def median(fn) -> float:
        fn()
        return statistics.median(timed(fn, device)[0] for _ in range(reps))

    out = {"build_and_initial_state": median(build),
           "vector_field": median(lambda: c.vector_field(0.0, y0)),
           "solve": median(lambda: solve(c, y0, 0.0, float(L), dt=1.0, method="euler",
                                         steady_state=False, progress=False))}
    out["solve_bookkeeping"] = out["solve"] - L * out["vector_field"]
    return out


# -- the benchmark ---------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pc_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 128, 128, 10],
                   help="network widths n_0 .. n_L (default 64 128 128 128 10)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32],
                   help="batch sizes B; each gets its own table rows (default 1 32)")
    p.add_argument("--examples", type=int, default=20,
                   help="batches per timed pass (default 20)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes (median reported)")
    p.add_argument("--eta", type=float, default=0.01, help="learning rate η (default 0.01)")
    p.add_argument("--settle-dt", type=float, default=0.2,
                   help="Euler step of Fa-Z-IL's prediction-mode settle (default 0.2)")
    p.add_argument("--il-dt", type=float, default=0.2,
                   help="Euler step of IL's clamped relaxation (default 0.2)")
    p.add_argument("--max-time", type=float, default=400.0,
                   help="horizon of the steady-state phases, in units of τ_x (default 400)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: the matrices are too small for "
                        "intra-op threads to pay, and on a shared machine a second thread "
                        "stalls for a scheduler slice whenever another process holds a core)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if len(args.widths) < 3 or min(args.widths) < 1:
        p.error(f"--widths: received {args.widths}, expected at least three positive widths "
                "(one hidden layer or more)")
    for name in ("examples", "repeats", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name}: received {v}, expected an integer ≥ 1")
    if min(args.batch) < 1:
        p.error(f"--batch: received {args.batch}, expected positive batch sizes")
    for name in ("eta", "settle_dt", "il_dt", "max_time"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            p.error(f"--{name.replace('_', '-')}: received {v}, expected a finite number > 0")
    return args


def print_table(rows: list[dict]) -> None:
    head = (f"{'B':>4}  {'rule':<9} {'per example':>12} {'per batch':>12} {'× backprop':>11} "
            f"{'steps/batch':>12} {'ATen ops/batch':>15} {'per op':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        steps = "—" if r["steps"] is None else f"{r['steps']:.1f}"
        flag = "" if r["settled"] else "  (some phases hit --max-time)"
        print(f"{r['batch']:>4}  {r['rule']:<9} {fmt_s(r['per_example']):>12} "
              f"{fmt_s(r['per_batch']):>12} {r['ratio']:>10.1f}× {steps:>12} "
              f"{r['ops']:>15.0f} {fmt_s(r['per_batch'] / r['ops']):>9}{flag}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, dtype = prepare(args)
    info = machine_info(device)
    load_before = load_average()
    L = len(args.widths) - 1
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), device {info['device']}"
          + (f" ({info['gpu']})" if "gpu" in info else ""))
    print(f"problem: ForwardNetwork({args.widths}, tanh, linear output), {args.dtype}, "
          f"η = {args.eta:g}, {args.examples} batches per pass, {args.repeats} timed passes "
          f"(+1 warm-up); Z-IL: {L} Euler steps of dt = 1; Fa-Z-IL: settle dt = "
          f"{args.settle_dt:g} + {L + 1} teacher steps; IL: relax dt = {args.il_dt:g}")
    if load_before is not None:
        print(f"load average before: {load_before}")

    net = make_network(args.widths, dtype, device)
    rows, timings, ratios = [], {}, {}
    for batch in args.batch:
        print(f"timing B = {batch} ...", flush=True)
        examples = make_examples(args.widths, args.examples, batch, dtype, device)
        timings[str(batch)] = res = time_rules(net, examples, args.eta, args.repeats, device,
                                               args)
        ops = ops_per_batch(net, examples, args.eta, args)
        base = res["backprop"]["median_seconds_per_batch"]
        for name in METHODS:
            per_batch = res[name]["median_seconds_per_batch"]
            ratio = per_batch / base
            if name != "backprop":
                ratios[f"{name}_over_backprop_B{batch}"] = ratio
            res[name]["aten_ops_per_batch"] = ops[name]
            rows.append({"batch": batch, "rule": name, "per_batch": per_batch, "ops": ops[name],
                         "per_example": per_batch / batch, "ratio": ratio,
                         "steps": res[name]["steps_per_batch"],
                         "settled": res[name]["all_settled"]})
    x0, y0 = make_examples(args.widths, 1, args.batch[0], dtype, device)[0]
    breakdown = zil_breakdown(net, x0, y0, args.eta, device)
    gaps = {name: update_gaps(args.widths, args.batch[0], args.eta, DTYPES[name], device, args)
            for name in dict.fromkeys((args.dtype, "float64"))}
    load_after = load_average()

    print()
    print_table(rows)
    print()
    print(f"Z-IL breakdown (B = {args.batch[0]}): build circuit + initial state "
          f"{fmt_s(breakdown['build_and_initial_state'])}; solve of {L} steps "
          f"{fmt_s(breakdown['solve'])} = {L} vector fields × "
          f"{fmt_s(breakdown['vector_field'])} + bookkeeping "
          f"{fmt_s(breakdown['solve_bookkeeping'])}")
    print(f"first update against the autograd step, B = {args.batch[0]} "
          f"(max |ΔW_rule − ΔW_backprop| over all weights and biases):")
    arrival = ", ".join(f"{arrival_threshold(DTYPES[dt]):.2g} in {dt}" for dt in gaps)
    expect = {"z_il": "rounding",
              "fa_z_il": f"rounding while every feedback input exceeds the gate's arrival "
                         f"threshold hθ ({arrival}); a unit whose feedback stays below it "
                         "does not learn",
              "il": "O(update): IL is not backprop"}
    for name in METHODS[1:]:
        cells = "   ".join(f"{dt} {g[name]:.3e}" for dt, g in gaps.items())
        print(f"  {name:<8} {cells}   (expected: {expect[name]})")
    if load_after is not None:
        print(f"load average after: {load_after}")

    report = {
        "machine": info,
        "load_average": {"before": load_before, "after": load_after},
        "config": {"widths": args.widths, "batch": args.batch, "examples": args.examples,
                   "repeats": args.repeats, "eta": args.eta, "dtype": args.dtype,
                   "settle_dt": args.settle_dt, "il_dt": args.il_dt, "max_time": args.max_time},
        "timings": timings,
        "table": rows,
        "ratios": ratios,
        "zil_breakdown_seconds": breakdown,
        "max_abs_update_diff": gaps,
    }
    return finish(report, args.out)


if __name__ == "__main__":
    main()
