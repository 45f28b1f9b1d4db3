"""Parameter sweeps: thousands of circuits in one solve, against the eigenvalue prediction.

    python -m demos.sweep [--config configs/sweep.yaml] --out DIR

Each sweep puts a grid of circuit parameters on the replica axis S of one
:func:`solvers.sweep.sweep` (one ``solve`` per memory-sized chunk), on a 3-layer tanh network
(``network`` section) and one seeded example ``x ~ N(0, I)``, ``target ~ N(0, I)``:

* ``dynamic_inversion``: layer-wise DI (SPEC §1) over integral gain k_i × leak α (64 × 64 by
  default). The feedback ``B`` is random (Gaussian, drawn once from ``feedback_seed`` and shared
  by every replica), so ``W B`` has eigenvalues with positive real part: the loop is stable in
  continuous time only when the leak beats the gain, roughly ``α > k_i · max Re λ(W B)`` — a
  diagonal boundary in the log-log plane. (With ``B = −Wᵀ`` every α ≥ 0 is stable and the only
  boundary would be Euler's.) Forward Euler adds its own limit on top: ``α dt > 2`` makes the
  leak alone unstable (a vertical boundary at α = 20 for dt = 0.1, the right edge of the
  default grid, where the loop is stable in continuous time). Euler's other limit, a loop
  oscillating faster than dt resolves (``k_i σ² dt ≳ 1``), lies in the top-right corner where
  it merges with the diagonal.
* ``feedback_control``: deep feedback control (SPEC §2) over proportional gain k_p × α, with
  random output feedback ``Q`` (drawn once, shared). ``J Q`` then has eigenvalues with negative
  real part, which the leak α̃ must outweigh, and the proportional path ``k_p Q e`` amplifies
  them: the stable region shrinks as k_p grows. DFC is nonlinear, so the prediction linearises it
  at its closed-form steady state.

For each grid point the prediction (:func:`solvers.sweep.predict_stability`) is "converges" iff
the Jacobian's spectral abscissa is < 0 *and* the spectral radius of Euler's amplification matrix
``I + dt J`` is < 1; the simulation says converged / diverged / truncated (still running at t1).
``stability_agreement`` is the fraction of points where the two agree; each disagreement is
classified in the summary (see :meth:`solvers.sweep.SweepResult.agreement`). The prediction is
about the fixed point it linearises at, so with ``fixed_point_tolerance`` (default 0.1) the
simulated outcome compared with it is "settled on that fixed point" (converged, relative error
to the closed form ≤ the tolerance) or "left it" (diverged, or converged / still running far
from it: DFC's tanh network has other fixed points and bounded oscillations the unstable mode
can end on). ``status_agreement`` is the strict comparison of statuses (converged vs
diverged, truncated always a disagreement); ``fixed_point_tolerance: null`` makes
``stability_agreement`` strict too.

Measured (default config, float64, 1 thread, 2-core CPU; ~75 s in all): DI 4096 points,
stability_agreement 0.998 (status_agreement 0.994): the 9 disagreements are stable points
right at the diagonal boundary (spectral abscissa −0.004 … −0.001, time constants 250–1000)
still settling at t1 = 3000. DFC 4096 points, 0.996 (status 0.895): the 15 disagreements are
again stable-but-slow points at the boundary (abscissa ≥ −0.08, close to k_p ≈ 1 where α̃
saturates at 1 / k_p); the status-only disagreements are 327 predicted-unstable points that
converged to *another* fixed point (error to the closed form 1e1–1e4) and 100 that oscillate
far from it until t1 — a band just outside the predicted boundary where tanh saturation
catches the growing mode before it passes the divergence bound.

Writes ``DIR/<sweep>.png`` (heatmaps of the relative error of the final state to the closed
form, of the settle time and of the status, with the predicted boundaries drawn over them:
spectral abscissa = 0 solid, Euler spectral radius = 1 dashed), ``DIR/<sweep>.npz`` (the
labelled arrays, :meth:`solvers.sweep.SweepResult.load`) and ``DIR/summary.json``::

    {"sweeps": {NAME: {"grid_points", "stability_agreement", "seconds", ...}}, ...}
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from circuits import DynamicInversion, ForwardNetwork, replica_network
from circuits.feedback import random_feedback
from circuits.feedback_control import DeepFeedbackControl
from solvers import solve
from solvers.solve import Status
from solvers.sweep import PARAMETERS, Grid, SweepResult, sweep

from .config import (Config, Schema, Section, intra_op_threads, jsonable, load_config,
                     read_yaml, run_cli)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sweep.yaml"
_CIRCUIT_INPUTS = ("network", "x", "target", "output_error")
_SOLVE_SUPPLIED = ("f", "y0", "observe", "progress")
_SWEEP_SUPPLIED = ("build", "grid", "solve_kwargs", "error", "measures", "progress")
NETWORK_AXES = ("seed", "weight_scale")            # grid axes that make one network per replica

CIRCUITS: dict[str, type] = {"dynamic_inversion": DynamicInversion,
                             "feedback_control": DeepFeedbackControl}
BOUNDARIES = {
    "dynamic_inversion": (
        "random feedback B: continuous-time stable roughly where alpha > k_i * max Re "
        "eig(W B) (diagonal boundary); Euler's own limit alpha * dt > 2 (the leak alone) "
        "adds a vertical boundary at alpha = 2 / dt"),
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

def axis_values(name: str, spec: Any) -> list[float]:
    """A grid axis from the config: a list of values, ``{logspace: [lo, hi, n]}`` (powers of
    ten) or ``{linspace: [lo, hi, n]}``."""
    if isinstance(spec, Mapping):
        if len(spec) != 1 or next(iter(spec)) not in ("logspace", "linspace"):
            raise ValueError(f"grid axis {name!r}: received {dict(spec)!r}, expected a list of "
                             "values, {logspace: [lo, hi, n]} or {linspace: [lo, hi, n]}")
        kind, args = next(iter(spec.items()))
        if not isinstance(args, (list, tuple)) or len(args) != 3 \
                or isinstance(args[2], bool) or not isinstance(args[2], int) or args[2] < 1 \
                or any(isinstance(a, bool) or not isinstance(a, (int, float))
                       or not math.isfinite(a) for a in args[:2]):
            raise ValueError(f"grid axis {name!r}: received {kind}: {args!r}, expected "
                             "[lo, hi, n] with finite lo, hi and an integer n ≥ 1")
        return getattr(np, kind)(float(args[0]), float(args[1]), int(args[2])).tolist()
    return spec


def make_grid(name: str, config: Config) -> Grid:
    axes = config[f"{name}_grid"]
    if not isinstance(axes, Mapping) or not axes:
        raise ValueError(f"config key '{name}_grid': received {axes!r}, expected a mapping of "
                         "parameter names to values")
    valid = set(Section(CIRCUITS[name], exclude=_CIRCUIT_INPUTS).valid_keys()) | set(NETWORK_AXES)
    # feedback_seed is not an axis here: the demo draws one feedback shared by every replica
    allowed = {k: v for k, v in PARAMETERS.items() if k in valid and k != "feedback_seed"}
    return Grid({k: axis_values(k, v) for k, v in axes.items()}, parameters=allowed)


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
        if name == "dynamic_inversion":
            shapes = [(widths[l - 1], widths[l]) for l in range(2, len(widths))]
        else:
            shapes = [(n, widths[-1]) for n in widths[1:]]
        # One replica's draw shared by every replica ([1, n, m] broadcasts): the circuits'
        # own feedback="random" draws per replica, so results would depend on the chunking.
        fixed["feedback"] = random_feedback(shapes, 1, int(fixed.pop("feedback_seed", 0)),
                                            torch.float64, "cpu")
    cls = CIRCUITS[name]

    def build(points: dict[str, torch.Tensor]) -> Any:
        params = {k: v for k, v in points.items() if k not in NETWORK_AXES}
        net = shared_net
        if any(k in points for k in NETWORK_AXES):
            base = {k: v for k, v in net_cfg.items() if k not in ("widths", "seed")}
            S = len(next(iter(points.values())))
            net = replica_network(widths, points.get("seed", torch.full((S,), net_cfg.get(
                "seed", 0))), points.get("weight_scale"), **base)
        return cls(net, x, target, **fixed, **params)

    return build


# -- figures ---------------------------------------------------------------------------------

def _edges(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Cell edges for pcolormesh, and whether the axis is log-spaced."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5]), False
    log = bool((v > 0).all() and len(v) > 2
               and np.allclose(np.diff(np.log(v)), np.log(v[1] / v[0]), rtol=1e-6))
    w = np.log(v) if log else v
    mid = (w[1:] + w[:-1]) / 2
    edges = np.concatenate([[2 * w[0] - mid[0]], mid, [2 * w[-1] - mid[-1]]])
    return (np.exp(edges) if log else edges), log


def sweep_figure(path: Path, title: str, result: SweepResult) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm
    from matplotlib.lines import Line2D

    dims = result.dims
    if len(dims) != 2:
        raise ValueError(f"sweep_figure: received a grid with dims {dims}, expected 2 axes")
    ydim, xdim = dims                                   # rows = first axis
    yv, xv = result.coords[ydim], result.coords[xdim]
    (xe, xlog), (ye, ylog) = _edges(xv), _edges(yv)
    status = result["status"].data
    diverged = status == int(Status.DIVERGED)
    error = np.ma.masked_where(diverged | ~np.isfinite(result["error"].data),
                               result["error"].data)
    settle = np.ma.masked_invalid(result["settle_time"].data)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), constrained_layout=True)
    panels = []
    pos = error.compressed()
    pos = pos[pos > 0]
    if pos.size:
        norm = LogNorm(vmin=max(pos.min(), 1e-16), vmax=max(pos.max(), pos.min() * 10))
        panels.append((error.clip(min=norm.vmin), "relative error to the closed form\n"
                       "(diverged: grey)", "viridis", norm))
    else:
        panels.append((error, "relative error to the closed form", "viridis", None))
    spos = settle.compressed()
    snorm = LogNorm(vmin=spos.min(), vmax=max(spos.max(), spos.min() * 10)) if spos.size \
        and spos.min() > 0 else None
    panels.append((settle, "settle time (converged only)", "magma", snorm))
    cmap = ListedColormap(["tab:orange", "tab:green", "tab:red"])
    panels.append((status, "simulated status", cmap,
                   BoundaryNorm([-0.5, 0.5, 1.5, 2.5], cmap.N)))
    X, Y = np.meshgrid(xv, yv)
    for ax, (data, label, cm, norm) in zip(axes, panels):
        if isinstance(cm, str):
            cm = plt.get_cmap(cm).with_extremes(bad="0.75")
        mesh = ax.pcolormesh(xe, ye, data, cmap=cm, norm=norm, shading="flat")
        bar = fig.colorbar(mesh, ax=ax)
        if label == "simulated status":
            bar.set_ticks([0, 1, 2])
            bar.set_ticklabels(["truncated", "converged", "diverged"])
        if len(xv) > 1 and len(yv) > 1:
            a = result["spectral_abscissa"].data if "spectral_abscissa" in result else None
            if a is not None and a.min() < 0 < a.max():
                ax.contour(X, Y, a, levels=[0.0], colors="k", linewidths=1.6)
            if "spectral_radius" in result:
                r = result["spectral_radius"].data
                if r.min() < 1 < r.max():
                    ax.contour(X, Y, r, levels=[1.0], colors="w", linewidths=1.6,
                               linestyles="--")
        ax.set_xscale("log" if xlog else "linear")
        ax.set_yscale("log" if ylog else "linear")
        ax.set_xlabel(xdim)
        ax.set_ylabel(ydim)
        ax.set_title(label)
    axes[2].legend(handles=[Line2D([], [], color="k", lw=1.6,
                                   label="predicted: spectral abscissa = 0"),
                            Line2D([], [], color="0.4", lw=1.6, ls="--",
                                   label="predicted: Euler spectral radius = 1 (white)")],
                   loc="lower left", fontsize=7, framealpha=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the demo --------------------------------------------------------------------------------

def run_sweep(name: str, config: Config, out: Path) -> dict[str, Any]:
    grid = make_grid(name, config)
    build = builder(name, config)
    solver = {**config.get(f"{name}_solver", {})}
    options = dict(config.get(f"{name}_sweep", {}))
    start = time.perf_counter()
    result = sweep(build, grid, solver, **options)
    seconds = time.perf_counter() - start
    result.save(out / f"{name}.npz")
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
        "chunks": result.attrs["chunks"], "chunk": result.attrs["chunk"],
        "solve_seconds": result.attrs["solve_seconds"],
        "predict_seconds": result.attrs["predict_seconds"],
        "steps_per_chunk": result.attrs["steps_per_chunk"],
        "method": result.attrs["method"], "dt": result.attrs["dt"], "t1": result.attrs["t1"],
        "figure": f"{name}.png", "data": f"{name}.npz",
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
        sweep_figure(out / f"{name}.png", title, result)
    else:
        entry["figure"] = None
    return entry


def run(config: str | Path | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Run the demo into ``out``; returns the summary (also ``out/summary.json``)."""
    config = load(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [s for s in config["sweeps"] if s not in CIRCUITS]
    if unknown:
        raise ValueError(f"config key 'sweeps': received {unknown}, expected names from "
                         f"{list(CIRCUITS)}")
    tol = config["fixed_point_tolerance"]
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float))
                            or not math.isfinite(tol) or tol <= 0):
        raise ValueError(f"config key 'fixed_point_tolerance': received {tol!r}, expected a "
                         "finite number > 0 or null (strict status agreement)")
    threads = config["threads"]
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"config key 'threads': received {threads!r}, expected an integer "
                         "≥ 1 or null")
    summary: dict[str, Any] = {"sweeps": {}}
    start = time.perf_counter()
    with intra_op_threads(threads):
        for name in config["sweeps"]:
            summary["sweeps"][name] = run_sweep(name, config, out)
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
    run_cli(parser, argv, lambda args: load(args.config), run, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
