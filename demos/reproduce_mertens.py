"""Reproducing Mertens' local learning through linear decoders on signed XOR, in continuous time.

    python -m demos.reproduce_mertens --out DIR [--seeds 5] [--period 150] [--dt 1] [--eta 1]
                                                [--backprop-steps 300] [--device cpu] [--quick]

Mertens' notebook (seed 004, SPEC §6): every hidden layer ℓ of a 2-100-100-10-1 Mish network with
per-example L2 normalisation and a sigmoid output learns on its own loss ``mean (D_ℓ r_ℓ − y)²``
through a bias-free linear decoder ``D_ℓ``, the output layer on its BCE; no signal comes from
above. Task ``signed_xor`` (``x ~ U(−1, 1)²``, label ``x_0 x_1 ≥ 0``, 1000 train / 1000 test).
Methods: ``backprop`` (the same start trained end to end by full-batch Rprop, lr 0.01, on the BCE:
:func:`demos.baselines.run_backprop`; the notebook used minibatches of 100) and
:class:`circuits.LocalDecoders` under a ``sequential`` :class:`LayerSchedule` (layer ℓ learns
during [(ℓ−1)P, ℓP), P = ``period``) or a ``parallel`` one (every layer for L·P), with decoders
``trained`` with their layer or ``fixed`` at their random start (the public code's read-outs).

Each circuit is one :func:`solvers.train` (Euler, step ``dt``; every seed a replica): learning is
gradient flow on the full training set at rate η, so ``eta·dt`` is the step of the equivalent
gradient descent (keep it ≤ 1: a decoder's loss has curvature up to 2); a presentation is one
recording interval of ``record_every`` steps. The flow is stiff where the normalisation is
(``r = m/‖m‖`` has Jacobian ``(I − r rᵀ)/‖m‖``, ``‖m_ℓ‖`` down to 0.02–0.1), so Euler overshoots
(``summary["local_loss_rise"]``, :func:`loss_rise`). Trained decoders are robust to it (float32
and float64 agree to 1e-3); the fixed-decoder sequential runs are not (0.86 ± 0.01 in float32,
0.56 ± 0.08 in float64 in one version), the unstable steps amplifying rounding.

Writes ``DIR/summary.json`` (per method: test/train accuracy ``{"mean", "std" (ddof 1),
"per_seed"}``, each layer's decoded test accuracy, ...) and three figures
(:func:`workbench.plots.mertens_figures`).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from circuits import ForwardNetwork, LayerSchedule, LocalDecoders
from solvers import train
from workbench.datasets import signed_xor
from workbench.plots import mertens_figures

from .baselines import backprop_forward, run_backprop
from .config import (check_choice, check_int, check_number, check_optional, dataclass_config,
                     intra_op_threads, jsonable, run_cli)
from .reports import mean_std, write_summary
from .reports import mertens as report

LOCAL_METHODS = ("sequential_trained", "sequential_fixed", "parallel_trained", "parallel_fixed")
METHODS = ("backprop",) + LOCAL_METHODS
DTYPES = ("float32", "float64")
@dataclass(frozen=True)
class Config:
    """The demo's parameters (the main ones also command-line flags)."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)   # network and decoder seeds: replicas of one run
    data_seed: int = 0                         # the training and test sets
    n_train: int = 1000
    n_test: int = 1000
    widths: tuple[int, ...] = (2, 100, 100, 10, 1)
    eta: float = 1.0                # η of W, b (per unit time)
    eta_decoders: float | None = None   # η_D (default η)
    period: float = 150.0           # time each layer learns for (sequential); parallel: L·period
    dt: float = 1.0                 # Euler step: η·dt is the gradient-descent step size
    record_every: int = 10          # steps per recorded point (one presentation of train)
    backprop_steps: int = 300       # full-batch Rprop steps of the backprop baseline
    backprop_lr: float = 0.01       # Rprop's initial step size (torch's default)
    grid: int = 120                 # decision-region grid points per axis
    dtype: str = "float32"          # 2.4x faster than float64 on CPU (see the docstring)
    device: str = "cpu"
    threads: int = 1                # torch intra-op threads (tiny tensors: more only adds sync)

    def __post_init__(self):
        def fail(name: str, got: Any, expected: str):
            raise ValueError(f"{name}: received {got!r}, expected {expected}")

        def whole(v: Any, low: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= low
        if not self.seeds or not all(whole(s, 0) for s in self.seeds) \
                or len(set(self.seeds)) < len(self.seeds):
            fail("seeds", list(self.seeds), "distinct integers ≥ 0 (at least one)")
        if len(self.widths) < 3 or not all(whole(n, 1) for n in self.widths) \
                or (self.widths[0], self.widths[-1]) != (2, 1):
            fail("widths", list(self.widths), "[2, n_1, ..., 1] (2 inputs, at least one hidden "
                 "layer, one sigmoid output)")
        for name in ("n_train", "n_test", "record_every", "backprop_steps", "grid", "threads"):
            check_int(name, getattr(self, name), 1)
        for name in ("eta", "period", "dt", "backprop_lr"):
            check_number(name, getattr(self, name), positive=True)
        check_optional(check_number, "eta_decoders", self.eta_decoders, positive=True)
        if self.dt > self.period:
            fail("dt", self.dt, f"at most period = {self.period!r} (each layer needs a step)")
        n = self.L * self.period / self.interval
        if abs(n - round(n)) > 1e-9 * n:
            fail("dt", self.dt, f"record_every·dt (record_every = {self.record_every}) to divide "
                 f"the duration L·period = {self.L * self.period:g}: change dt or period")
        check_choice("dtype", self.dtype, DTYPES)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device: received {self.device!r}, expected a torch device such "
                             f"as 'cpu' or 'cuda' ({err})") from None

    @property
    def L(self) -> int:
        return len(self.widths) - 1

    @property
    def interval(self) -> float:
        """Time between recorded points: the period of one presentation of ``train``."""
        return self.record_every * self.dt

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @classmethod
    def quick(cls, **overrides) -> "Config":
        """A small configuration that runs in a few seconds (tests, smoke runs)."""
        small = dict(seeds=(0, 1), n_train=200, n_test=200, widths=(2, 32, 32, 8, 1),
                     period=40.0, dt=1.0, record_every=5, backprop_steps=120, grid=40)
        return cls(**{**small, **overrides})


def load(config: Config | Mapping[str, Any] | None = None) -> Config:
    """``config`` as a :class:`Config` (None: the defaults; a mapping: overrides of them)."""
    return dataclass_config(Config, config, ("widths", "seeds"))


def datasets(cfg: Config) -> dict[str, torch.Tensor]:
    """Training and test sets (disjoint draws of one generator) on the config's device/dtype."""
    task = signed_xor(cfg.n_train, cfg.n_test, cfg.data_seed)     # one-hot; column 1 = label
    to = dict(dtype=cfg.torch_dtype, device=cfg.device)
    return {"x_train": task.x_train.to(**to), "y_train": task.y_train[:, 1:].to(**to),
            "x_test": task.x_test.to(**to), "y_test": task.y_test[:, 1:].to(**to)}


def initial_network(cfg: Config) -> ForwardNetwork:
    """S = len(seeds) replicas with ``nn.Linear``'s initialisation: W and b ~ U(±1/√n_in)."""
    net = ForwardNetwork(list(cfg.widths), "mish", "sigmoid", seed=list(cfg.seeds))

    def bias(s: int, l: int, n_in: int, n_out: int) -> torch.Tensor:     # [1, n_out]
        g = torch.Generator().manual_seed(10_000 + 100 * s + l)
        return (torch.rand(1, n_out, generator=g, dtype=torch.float64) * 2 - 1) * n_in ** -0.5
    biases = [torch.stack([bias(s, l, *n) for s in cfg.seeds])
              for l, n in enumerate(zip(cfg.widths, cfg.widths[1:]))]
    return ForwardNetwork(list(cfg.widths), "mish", "sigmoid", weights=net.weights,
                          biases=biases, dtype=cfg.torch_dtype, device=cfg.device)


def run_local(cfg: Config, data: Mapping[str, torch.Tensor], schedule: str,
              train_decoders: bool) -> dict[str, Any]:
    """One :func:`solvers.train` of :class:`LocalDecoders`, every seed a replica; each layer's
    train/test accuracy and local loss recorded between presentations (``curves``, [T, S])."""
    L = cfg.L
    sched = (LayerSchedule.sequential(L, cfg.period) if schedule == "sequential"
             else LayerSchedule.parallel(L))
    x, y, x_test, y_test = (data[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    c = LocalDecoders(initial_network(cfg), x, y, schedule=sched, eta=cfg.eta,
                      eta_decoders=cfg.eta_decoders, train_decoders=train_decoders,
                      decoder_seed=list(cfg.seeds), normalize=True, output_loss="bce")
    rows: dict[str, list[np.ndarray]] = {"accuracy": [], "test_accuracy": [], "loss": []}
    status: dict[str, int] = {}

    def record(k, state, solution=None):                # a few numbers per replica: [L, S]
        rows["accuracy"].append(c.readout_accuracy(state).cpu().numpy())
        rows["test_accuracy"].append(c.readout_accuracy(state, x_test, y_test).cpu().numpy())
        rows["loss"].append(torch.stack([v.view(-1) for v in c.local_losses(state)]).cpu().numpy())
        if solution is not None:
            status.update(solution.counts())

    start = time.perf_counter()
    record(0, c.initial_state())
    result = train(c, c.initial_state(), lambda k: (x, y), period=cfg.interval,
                   presentations=round(L * cfg.period / cfg.interval), dt=cfg.dt,
                   method="euler", on_chunk=record)
    seconds = time.perf_counter() - start
    t = np.arange(len(rows["loss"])) * cfg.interval
    curves = {f"{name}_{l}": np.stack(v)[:, l - 1] for name, v in rows.items()
              for l in range(1, L + 1)}
    return {"circuit": c, "state": result.y, "t": t, "curves": curves, "status": status,
            "test": c.readout_accuracy(result.y, x_test, y_test).cpu().numpy(),
            "train": c.readout_accuracy(result.y).cpu().numpy(),
            "loss_rise": loss_rise(t, curves, sched), "seconds": seconds,
            "steps": result.stats["steps"]}


def loss_rise(t: np.ndarray, curves: Mapping[str, np.ndarray], schedule: LayerSchedule
              ) -> list[float]:
    """Per layer: the largest relative rise of its local loss between consecutive recorded
    points while its gate is open (max over seeds, 0 if it only fell). Gradient flow on a
    frozen input (the sequential schedule) never raises it, so a rise there is integration
    error: Euler's dt too large for the flow's stiffness. Under the parallel schedule the
    input moves and rises are allowed."""
    out = []
    for l, (start, end) in enumerate(schedule.windows, start=1):
        loss = curves[f"loss_{l}"][(t >= start - 1e-9) & (t <= end + 1e-9)]      # [T_l, S]
        rise = (loss[1:] - loss[:-1]) / np.maximum(loss[:-1], 1e-30)
        out.append(float(max(rise.max(), 0.0)) if len(loss) > 1 else 0.0)
    return out


def decision_maps(cfg: Config, bp, local) -> dict[str, list]:
    """Seed 0's read-outs ``[grid, grid]`` per method and layer on a grid over ``[-1, 1]²``
    (None where backprop has no decoder)."""
    L, n = cfg.L, cfg.grid
    axis = torch.linspace(-1, 1, n, dtype=cfg.torch_dtype, device=cfg.device)
    grid = torch.stack([g.reshape(-1) for g in torch.meshgrid(axis, axis, indexing="xy")], -1)
    with torch.no_grad():
        bp_out = torch.sigmoid(backprop_forward(bp["weights"], bp["biases"],
                                                grid[None].expand(len(cfg.seeds), -1, -1)))
    maps = {"backprop": [None] * (L - 1) + [bp_out],
            **{k: res["circuit"].readouts(res["state"], grid) for k, res in local.items()}}
    return {k: [m if m is None else m[0, :, 0].reshape(n, n).cpu().numpy() for m in v]
            for k, v in maps.items()}


def run(config: Config | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Train every method into ``out``; ``config`` is None (the defaults), a :class:`Config`
    or a mapping of its fields. Returns the summary (also written to ``out/summary.json``)."""
    cfg = load(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with intra_op_threads(cfg.threads):
        summary = _run(cfg, out)
    write_summary(out, summary)
    return summary


def _run(cfg: Config, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    data = datasets(cfg)
    bp = run_backprop(initial_network(cfg), data, cfg.backprop_steps, cfg.backprop_lr,
                      cfg.record_every)
    local = {name: run_local(cfg, data, name.split("_")[0], name.endswith("trained"))
             for name in tqdm(LOCAL_METHODS, desc="local decoders", leave=False, disable=None)}
    every = {"backprop": bp, **local}          # "test", "train": [S] (backprop) or [L, S]
    accuracy = {k: mean_std(np.atleast_2d(r["test"])[-1]) for k, r in every.items()}
    per_layer = {key: {k: {"mean": r[key].mean(1).tolist(), "per_seed": r[key].T.tolist()}
                       for k, r in local.items()} for key in ("test", "train")}
    paths = mertens_figures(out, cfg, data, bp, local, accuracy, decision_maps(cfg, bp, local))
    return {
        "accuracy": accuracy,
        "train_accuracy": {k: mean_std(np.atleast_2d(r["train"])[-1]) for k, r in every.items()},
        "layer_accuracy": per_layer["test"], "layer_train_accuracy": per_layer["train"],
        "seeds": list(cfg.seeds), "seconds": time.perf_counter() - start,
        "method_seconds": {k: r["seconds"] for k, r in every.items()},
        "status": {k: r["status"] for k, r in local.items()},
        "local_loss_rise": {k: r["loss_rise"] for k, r in local.items()},
        "optimizer": {"backprop": f"full-batch Rprop (torch.optim.Rprop, lr {cfg.backprop_lr:g},"
                                  f" {cfg.backprop_steps} steps) on the mean BCE, autograd",
                      "local": f"gradient flow by solvers.train, Euler dt = {cfg.dt:g}, eta = "
                               f"{cfg.eta:g}, sequential: {cfg.period:g} per layer, parallel: "
                               f"{cfg.L * cfg.period:g} for all layers"},
        "duration": cfg.L * cfg.period, "figures": [p.name for p in paths],
        "config": jsonable(dataclasses.asdict(cfg)),
        "torch": torch.__version__,
    }


def passed(summary: Mapping[str, Any], threshold: float = 0.9) -> bool:
    """Trained decoders learn signed XOR under both schedules, as backprop does."""
    return all(summary["accuracy"][m]["mean"] >= threshold
               for m in ("backprop", "sequential_trained", "parallel_trained"))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    d = Config()
    parser = argparse.ArgumentParser(prog="python -m demos.reproduce_mertens",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--seeds", type=int, help=f"seeds 0..N-1 (default {len(d.seeds)})")
    parser.add_argument("--period", type=float, help="time each layer learns for (sequential); "
                        f"parallel runs L·period (default {d.period:g})")
    parser.add_argument("--dt", type=float, help=f"Euler step (default {d.dt:g})")
    parser.add_argument("--eta", type=float, help=f"learning rate (default {d.eta:g})")
    parser.add_argument("--backprop-steps", type=int,
                        help=f"Rprop steps of backprop (default {d.backprop_steps})")
    parser.add_argument("--dtype", choices=DTYPES, help=f"default {d.dtype}")
    parser.add_argument("--device", help="torch device (default cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="the small configuration of Config.quick() (a few seconds)")

    def make_config(args):
        if args.seeds is not None and args.seeds < 1:
            raise ValueError(f"--seeds: received {args.seeds}, expected an integer ≥ 1")
        keys = ("period", "dt", "eta", "backprop_steps", "dtype", "device")
        overrides = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
        if args.seeds is not None:
            overrides["seeds"] = tuple(range(args.seeds))
        return (Config.quick if args.quick else Config)(**overrides)

    return run_cli(parser, argv, make_config, run, report)


if __name__ == "__main__":
    main()
    sys.exit(0)
