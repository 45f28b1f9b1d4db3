"""Parameter sweeps: thousands of circuits in one solve, against the eigenvalue prediction.

    python -m demos.sweep [--config configs/sweep.yaml] --out DIR [--workers N | --scheduler ADDR]

Each sweep puts a grid of circuit parameters on the replica axis S of one
:func:`solvers.sweep.sweep` (one ``solve`` per memory-sized chunk), on a 3-layer tanh network
(``network`` section) and one seeded example ``x ~ N(0, I)``, ``target ~ N(0, I)``:

* ``dynamic_inversion``: layer-wise DI (SPEC §1) over integral gain k_i × leak α (64 × 64 by
  default). The feedback ``B`` is random (Gaussian, drawn from ``feedback_seed`` and shared by
  every replica; a ``feedback_seed`` grid axis gives each replica its own), so ``W B`` has
  eigenvalues with positive real part: the loop is stable in continuous time only when the leak
  beats the gain, roughly ``α > k_i · max Re λ(W B)`` — a diagonal boundary in the log-log plane.
  (With ``B = −Wᵀ`` every α ≥ 0 is stable.) DI is affine in its state, so by default it is
  integrated with its exact flow (``method: auto``: :mod:`solvers.affine`, steps doubling from
  ``dt``): there is no step-size boundary, and the settle time is known to within a step of the
  doubling grid. With ``method: euler`` Euler's own limits appear as well (``α dt > 2``: a vertical
  boundary at α = 2/dt; a loop oscillating faster than dt resolves, ``k_i σ² dt ≳ 1``, in the
  top-right corner), drawn dashed.
* ``feedback_control``: deep feedback control (SPEC §2) over proportional gain k_p × α, with random
  output feedback ``Q`` (drawn once, shared). ``J Q`` then has eigenvalues with negative real part,
  which the leak α̃ must outweigh, and the proportional path ``k_p Q e`` amplifies them: the stable
  region shrinks as k_p grows. DFC is nonlinear, so the prediction linearises it at its closed-form
  steady state.

For each grid point the prediction (:func:`solvers.sweep.predict_stability`) is "converges" iff the
Jacobian's spectral abscissa is < 0 *and* the spectral radius of Euler's amplification matrix ``I +
dt J`` is < 1; the simulation says converged / diverged / truncated (still running at t1).
``stability_agreement`` is the fraction of points where the two agree; each disagreement is
classified in the summary (see :meth:`solvers.sweep.SweepResult.agreement`). The prediction is
about the fixed point it linearises at, so with ``fixed_point_tolerance`` (default 0.1) the
simulated outcome compared with it is "settled on that fixed point" (converged, relative error to
the closed form ≤ the tolerance) or "left it" (diverged, or converged / still running far from it:
DFC's tanh network has other fixed points and bounded oscillations the unstable mode can end on).
``status_agreement`` is the strict comparison of statuses (converged vs diverged, truncated always
a disagreement); ``fixed_point_tolerance: null`` makes ``stability_agreement`` strict too.

Measured (default config, float64, 1 thread, 2-core CPU; 24 s in all, 90 s before the exact flow
and the shrinking batch): DI 4096 points in 2.3 s (Euler at dt = 0.1: 31 s), stability_agreement
0.998 (status_agreement 0.994): the 9 disagreements are stable points right at the diagonal
boundary (spectral abscissa −0.004 … −0.001, time constants 250–1000) still settling at t1 = 3000.
DFC 4096 points in 16 s (54 s before the batch shrank as replicas stopped), 0.996 (status 0.895):
the 15 disagreements are again stable-but-slow points at the boundary (abscissa ≥ −0.08, close to
k_p ≈ 1 where α̃ saturates at 1 / k_p); the status-only disagreements are 327 predicted-unstable
points that converged to *another* fixed point (error to the closed form 1e1–1e4) and 100 that
oscillate far from it until t1 — a band just outside the predicted boundary where tanh saturation
catches the growing mode before it passes the divergence bound.

Writes ``DIR/<sweep>.png`` (heatmaps of the relative error of the final state to the closed form,
of the settle time and of the status, with the predicted boundaries drawn over them: spectral
abscissa = 0 solid, Euler spectral radius = 1 dashed; :func:`workbench.plots.sweep_figure`),
``DIR/<sweep>.nc`` (netCDF: ``xarray.open_dataset``, :meth:`solvers.sweep.SweepResult.load`;
``.npz`` too, the older format) and ``DIR/summary.json``::

    {"sweeps": {NAME: {"grid_points", "stability_agreement", "seconds", "netcdf", ...}}, ...}

``--workers N`` (a local Dask cluster of N one-thread processes) or ``--scheduler ADDR`` (a running
one) shards each sweep (:mod:`solvers.shards`): shards go to ``DIR/shards/<sweep>-<config hash>/``
as they finish, so a rerun computes only the missing ones. Results equal the in-process ones."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from circuits import DynamicInversion, ForwardNetwork, replica_network
from circuits.feedback_control import DeepFeedbackControl
from solvers import solve
from solvers.solve import Status
from solvers.shards import dask_client, run_key
from solvers.sweep import PARAMETERS, Grid, sweep
from workbench.plots import sweep_figure

from .config import (Config, Schema, Section, check_int, check_names, check_number,
                     check_optional, grid_axis, intra_op_threads, jsonable, load_config,
                     read_yaml, run_cli)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sweep.yaml"
_CIRCUIT_INPUTS = ("network", "x", "target", "output_error")
_SOLVE_SUPPLIED = ("f", "y0", "observe", "progress")
_SWEEP_SUPPLIED = ("build", "grid", "solve_kwargs", "error", "measures", "progress", "executor",
                   "shard_dir")                    # executor, shard_dir: --workers / --scheduler
NETWORK_AXES = ("seed", "weight_scale")            # grid axes: one network per replica

CIRCUITS: dict[str, type] = {"dynamic_inversion": DynamicInversion,
                             "feedback_control": DeepFeedbackControl}
BOUNDARIES = {
    "dynamic_inversion": (
        "random feedback B: continuous-time stable roughly where alpha > k_i * max Re "
        "eig(W B) (diagonal boundary); integrated with its exact flow (no step-size limit; "
        "with method euler, alpha * dt > 2 adds a vertical boundary at alpha = 2 / dt)"),
    "feedback_control": (
        "random output feedback Q: J Q has eigenvalues with negative real part that the leak "
        "must outweigh; the proportional gain k_p amplifies them, so the stable region shrinks "
        "as k_p grows; linearised at the closed-form steady state"),
}


def _sections() -> dict[str, Section]:
    sections = {"network": Section(ForwardNetwork)}
    for name, cls in CIRCUITS.items():
        sections[name] = Section(cls, exclude=_CIRCUIT_INPUTS)
        sections[f"{name}_solver"] = Section(solve, exclude=_SOLVE_SUPPLIED)
        sections[f"{name}_sweep"] = Section(sweep, exclude=_SWEEP_SUPPLIED)
    return sections


SCHEMA = Schema(sections=_sections(), demo={
    "seed": 0,                                     # the example x, target
    "threads": 1,                                  # torch intra-op threads (None: unchanged)
    "sweeps": list(CIRCUITS),
    "dynamic_inversion_grid": {},
    "feedback_control_grid": {},
    "fixed_point_tolerance": 0.1,                  # see SweepResult.agreement(error_tolerance)
})


def load(config: str | Path | Mapping[str, Any] | None) -> Config:
    """``config`` (a YAML path, a mapping or None) merged over ``configs/sweep.yaml``, section
    by section; a ``<sweep>_grid`` given replaces the default grid whole."""
    defaults = load_config(read_yaml(DEFAULT_CONFIG), SCHEMA)
    if isinstance(config, (str, Path)) and Path(config).resolve() == DEFAULT_CONFIG:
        return defaults
    given = read_yaml(config) if isinstance(config, (str, Path)) else dict(config or {})
    merged = load_config(given, SCHEMA, defaults=defaults)
    for name in CIRCUITS:            # a grid given replaces the default one (axes are not merged)
        if f"{name}_grid" in given:
            merged[f"{name}_grid"] = given[f"{name}_grid"]
    return merged


# -- grids and builders ----------------------------------------------------------------------

def make_grid(name: str, config: Config) -> Grid:
    axes = config[f"{name}_grid"]
    if not isinstance(axes, Mapping) or not axes:
        raise ValueError(f"config key '{name}_grid': received {axes!r}, expected a mapping of "
                         "parameter names to values")
    valid = set(Section(CIRCUITS[name], exclude=_CIRCUIT_INPUTS).valid_keys()) | set(NETWORK_AXES)
    allowed = {k: v for k, v in PARAMETERS.items() if k in valid}
    if "feedback_seed" in axes and config.get(name, {}).get("feedback") != "random":
        raise ValueError(f"config key '{name}_grid': received a 'feedback_seed' axis with "
                         f"{name}.feedback = {config.get(name, {}).get('feedback')!r}, expected "
                         f"{name}.feedback: random (the seed axis draws one random feedback per "
                         "replica)")
    return Grid({k: grid_axis(k, v) for k, v in axes.items()}, parameters=allowed)


def example(config: Config, widths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded example: ``x ~ N(0, I)``, ``target ~ N(0, I)``, each ``[1, n]``."""
    g = torch.Generator().manual_seed(int(config["seed"]))
    x = torch.randn(1, widths[0], generator=g, dtype=torch.float64)
    target = torch.randn(1, widths[-1], generator=g, dtype=torch.float64)
    return x, target


def builder(name: str, config: Config) -> Callable[[dict[str, torch.Tensor]], Any]:
    """``points -> circuit`` for one sweep: grid axes become per-replica constructor
    arguments (``seed`` / ``weight_scale`` a per-replica network)."""
    net_cfg = dict(config["network"])
    widths = net_cfg["widths"]
    x, target = example(config, widths)
    fixed = dict(config.get(name, {}))
    shared_net = ForwardNetwork(**net_cfg)
    if fixed.get("feedback") == "random":
        # An int: every replica the same feedback (a replica's feedback is a function of its
        # seed alone, circuits.feedback). The circuits' default (None: replica s from seed s)
        # would number the replicas of each chunk afresh, so it is not used here; one seed per
        # replica comes from a feedback_seed grid axis (points["feedback_seed"]).
        seed = fixed.get("feedback_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"config key '{name}.feedback_seed': received {seed!r}, expected "
                             f"an int shared by every replica (one seed per replica: put "
                             f"feedback_seed on '{name}_grid')")
        fixed["feedback_seed"] = seed
    cls = CIRCUITS[name]

    def build(points: dict[str, torch.Tensor]) -> Any:
        params = {**fixed, **{k: v for k, v in points.items() if k not in NETWORK_AXES}}
        net = shared_net
        if any(k in points for k in NETWORK_AXES):
            base = {k: v for k, v in net_cfg.items() if k not in ("widths", "seed")}
            S = len(next(iter(points.values())))
            net = replica_network(widths, points.get("seed", torch.full((S,), net_cfg.get(
                "seed", 0))), points.get("weight_scale"), **base)
        return cls(net, x, target, **params)

    return build


# -- the demo --------------------------------------------------------------------------------

def run_sweep(name: str, config: Config, out: Path, executor: Any = None) -> dict[str, Any]:
    grid = make_grid(name, config)
    build = builder(name, config)
    solver = {**config.get(f"{name}_solver", {})}
    options = dict(config.get(f"{name}_sweep", {}))
    if executor is not None:        # shards under out/, keyed by the config: a rerun resumes
        options.update(executor=executor, shard_dir=out / "shards" / f"{name}-{run_key(config)}")
    start = time.perf_counter()
    result = sweep(build, grid, solver, **options)
    seconds = time.perf_counter() - start
    for suffix in (".nc", ".npz"):
        result.save(out / f"{name}{suffix}")
    status = result["status"].data
    conv = status == int(Status.CONVERGED)
    err = result["error"].data[conv] if "error" in result else np.array([])
    entry: dict[str, Any] = {
        "grid_points": grid.size,
        "stability_agreement": None,
        "seconds": seconds,
        "grid": {d: {"min": float(grid.coords[d].min()), "max": float(grid.coords[d].max()),
                     "n": len(grid.coords[d])} for d in grid.dims},
        "status_counts": result.counts(),
        "error_to_closed_form_converged": (
            {"median": float(np.median(err)), "max": float(err.max())} if err.size else None),
        "settle_time_converged": (
            {"min": float(np.nanmin(result["settle_time"].data)),
             "max": float(np.nanmax(result["settle_time"].data))} if conv.any() else None),
        "boundary": BOUNDARIES.get(name, ""),
        **{k: result.attrs[k] for k in ("chunks", "chunk", "solve_seconds", "predict_seconds",
                                        "steps_per_chunk", "method", "dt", "t1")},
        "figure": f"{name}.png", "data": f"{name}.npz", "netcdf": f"{name}.nc",
    }
    if "predicted_status" in result:
        agreement = result.agreement(config["fixed_point_tolerance"])
        entry["stability_agreement"] = agreement["stability_agreement"]
        entry.update({k: agreement[k] for k in agreement
                      if k not in ("stability_agreement", "grid_points", "agree")})
    if len(grid.dims) == 2:
        agree = entry["stability_agreement"]
        title = (f"{CIRCUITS[name].__name__} on widths {config['network']['widths']} "
                 f"({config['network'].get('activation', 'tanh')}), {grid.size} replicas, "
                 f"{result.attrs['method']} dt={result.attrs['dt']}, t1={result.attrs['t1']:g}; "
                 f"{seconds:.1f} s\n{entry['boundary']}\n"
                 + (f"prediction vs simulation agree on {agree:.4f} of the grid"
                    if agree is not None else ""))
        sweep_figure(out / f"{name}.png", result, title)
    else:
        entry["figure"] = None
    return entry


def run(config: str | Path | Mapping[str, Any] | None, out: str | Path,
        workers: int | None = None, scheduler: str | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary (also ``out/summary.json``). With
    ``workers`` (a local Dask cluster) or ``scheduler`` (an address), sweeps run sharded."""
    config = load(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_names("config key 'sweeps'", config["sweeps"], CIRCUITS)
    check_optional(check_number, "config key 'fixed_point_tolerance'",
                   config["fixed_point_tolerance"], positive=True)
    threads = check_optional(check_int, "config key 'threads'", config["threads"], 1)
    summary: dict[str, Any] = {"sweeps": {}}
    start = time.perf_counter()
    with intra_op_threads(threads), dask_client(workers, scheduler) as client:
        for name in config["sweeps"]:
            summary["sweeps"][name] = run_sweep(name, config, out, client)
    summary["seconds"] = time.perf_counter() - start
    summary["config"] = jsonable(config)
    with (out / "summary.json").open("w") as fh:
        json.dump(jsonable(summary), fh, indent=2, allow_nan=False)
    return summary


def report(summary: Mapping[str, Any]) -> str:
    lines = []
    for name, s in summary["sweeps"].items():
        agree = s["stability_agreement"]
        dis = {k: v["count"] for k, v in s.get("disagreements", {}).items() if v["count"]}
        lines.append(f"{name}: {s['grid_points']} points, {s['status_counts']}, "
                     f"stability_agreement {'—' if agree is None else f'{agree:.4f}'}, "
                     f"{s['seconds']:.1f} s" + (f"; disagreements {dis}" if dis else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML config merged over configs/sweep.yaml (default: that file)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--workers", type=int, help="run on a local Dask cluster of N processes")
    parser.add_argument("--scheduler", help="run on the Dask scheduler at this address")
    cli: dict[str, Any] = {}                   # the parsed arguments (for --workers ...)
    run_cli(parser, argv, lambda args: cli.update(vars(args)) or load(args.config),
            lambda cfg, out: run(cfg, out, cli["workers"], cli["scheduler"]), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
