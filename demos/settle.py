"""Settling demo: DI, SDI, DFC, PC, TP and DDTP settle on one example, against closed forms.

    python -m demos.settle [--config configs/settle.yaml] --out DIR

One seeded example (``x, y ~ N(0, I)``) on a small tanh network; each circuit settles
(:func:`solvers.solve` stops it when ``dy/dt`` ≈ 0) and is compared with the closed form next
to its dynamics (SPEC §1–5): ``observed_steady_state()`` of DI and SDI (NDI), DFC (linearised:
exact as the nudge → 0) and fixed-prediction PC (backprop's δ; its Euler transient against
``transient_errors()`` is ``transient_error_to_law``); for TP (Bengio's iterated inverse with
approximate inverse decoders, on a square network of its own) ``TargetPropagation.
exact_inverse_targets()``, for DDTP-linear ``gauss_newton_targets()``. Populations that start at
the feed-forward pass (``v``, ``x``, ``τ``) are measured and drawn as deviations from it.

Writes ``DIR/<circuit>.png`` (populations over time, closed forms dashed, the angle of the
implied weight update to backprop, pseudo-backprop, Gauss-Newton and, for DI with random
feedback, feedback alignment) and ``DIR/summary.json``::

    {"circuits": {NAME: {"status", "relative_error_to_closed_form", "settle_time", ...}}, ...}
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from circuits import (DeepFeedbackControl, DynamicInversion, ForwardNetwork, PredictiveCoding,
                      Role, SingleLoopDynamicInversion, TargetPropagation)
from circuits.credit import alignment, reference_credits
from solvers import Solution, solve
from workbench.plots import Trace, settling_figure

from .config import (Config, Schema, Section, intra_op_threads, jsonable, load_config, read_yaml,
                     run_cli)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "settle.yaml"
_CIRCUIT_INPUTS = ("network", "x", "target", "output_error")
_SOLVE_SUPPLIED = ("f", "y0", "save_every", "save_at", "observe")
_LAW_MAX_STEPS = 1000        # the transient is compared up to the settle or this many steps
_ROLES = {"r": "forward", "e": "error", "eps": "error", "fb": "feedback"}   # derived panels


def _pc_transient(circuit, sol: Solution, solver: Mapping[str, Any]) -> dict[str, Any]:
    """``transient_error_to_law``: max over saved Euler times (to the settle, at most
    :data:`_LAW_MAX_STEPS` steps) of ``|ε_ℓ(t) − law_ℓ(t)| / max|ε*|``, the law being
    :meth:`PredictiveCoding.transient_errors`; None where it does not hold."""
    if sol.stats["method"] != "euler":                    # the law is for Euler steps
        return {"transient_error_to_law": None}
    dt, t = sol.stats["dt"], sol.ts.double() - float(sol.ts[0])
    last = min(float(sol.t_stop[0] - sol.ts[0]) / dt, _LAW_MAX_STEPS)
    keep = (t / dt).floor() + 1 <= last + 1e-9            # after the stop the record is frozen
    try:
        law = circuit.transient_errors(t[keep], dt)
    except ValueError:                                    # leaky errors, σ² ≠ 1, dt > τ_x
        return {"transient_error_to_law": None}
    eps = circuit.errors({k: v[keep] for k, v in sol.ys.items()})
    worst = max(float((e - w).abs().max()) for e, w in zip(eps, law))
    return {"transient_error_to_law":
            worst / max(float(e.abs().max()) for e in circuit.equilibrium_errors())}


@dataclass(frozen=True)
class CircuitSpec:
    """How the demo builds one circuit: ``cls(network, x, target, **config[section])``, solver
    overrides in ``<section>_solver``, a network of its own in ``network_section``;
    ``closed_form`` names its method giving the closed form (state and observed populations),
    ``derived`` the prefixes of observed populations plotted besides the state, ``exact``
    whether the closed form is exact; ``extras(circuit, solution, solver)`` adds to the summary.
    """

    cls: Callable[..., Any]
    section: str
    closed_form: str
    derived: tuple[str, ...]
    exact: bool
    title_keys: tuple[str, ...]
    extras: Callable[[Any, Solution, Mapping[str, Any]], dict[str, Any]] | None = None
    network_section: str | None = None


_DI_KEYS = ("alpha", "k_i", "k_p", "tau_u", "tau_delta", "feedback")
CIRCUITS: dict[str, CircuitSpec] = {
    "DI": CircuitSpec(DynamicInversion, "dynamic_inversion", "observed_steady_state",
                      ("r", "fb"), True, _DI_KEYS),
    "SDI": CircuitSpec(SingleLoopDynamicInversion, "single_loop", "observed_steady_state",
                       ("r", "fb"), True, _DI_KEYS + ("carry",)),
    "DFC": CircuitSpec(DeepFeedbackControl, "feedback_control", "observed_steady_state",
                       ("e", "fb"), False, ("target_mode", "nudge", "alpha", "k_p", "tau_v",
                                            "tau_u", "leak", "feedback")),
    "PC": CircuitSpec(PredictiveCoding, "predictive_coding", "observed_steady_state",
                      ("eps", "fb"), True, ("predictions", "errors", "variances", "tau_x"),
                      _pc_transient),
    "TP": CircuitSpec(TargetPropagation.iterated_inverse, "iterated_inverse",
                      "exact_inverse_targets", (), True, ("beta", "tau", "perturbation"),
                      network_section="iterated_inverse_network"),
    "DDTP": CircuitSpec(TargetPropagation, "ddtp_linear", "gauss_newton_targets", (), True,
                        ("rule", "beta", "feedback", "damping")),
}

_sections: dict[str, Section] = {
    "network": Section(ForwardNetwork, exclude=("weights", "biases")),
    "references": Section(reference_credits, exclude=("net", "fwd", "delta_L", "feedback")),
    "solver": Section(solve, exclude=_SOLVE_SUPPLIED),
}
for _spec in CIRCUITS.values():
    _sections[_spec.section] = Section(_spec.cls, exclude=_CIRCUIT_INPUTS)
    if _spec.network_section:
        _sections[_spec.network_section] = _sections["network"]
    _sections[f"{_spec.section}_solver"] = Section(solve, exclude=_SOLVE_SUPPLIED)

SCHEMA = Schema(sections=_sections, demo={
    "seed": 0,                           # seed of the example (x, target)
    "circuits": list(CIRCUITS),          # which circuits to run, in order
    "points": 300,                       # saved time points (log-spaced)
    "tolerance": 1e-3,                   # relative error to the closed form that counts as a pass
    "plot_until": 3.0,                   # plot up to this multiple of the settle time
    "threads": 1,                        # tiny tensors: one intra-op thread is fastest
})

PRETTY = {"alpha": "α", "tau_u": "τ_u", "tau_delta": "τ_δ", "tau_v": "τ_v", "tau_x": "τ_x",
          "k_i": "k_i", "k_p": "k_p", "variances": "σ²"}


def load(config: str | Path | Mapping[str, Any] | None = None) -> Config:
    """The settle config: ``config`` (path, mapping or None) over ``configs/settle.yaml``."""
    return load_config(config, SCHEMA, defaults=read_yaml(DEFAULT_CONFIG))


# -- one circuit ------------------------------------------------------------------------------

def _credits(circuit, ys: Mapping[str, torch.Tensor]):
    """The forward pass, δ_L ``[S, B, n_L]`` and the credit trajectories ``[T, S, B, n_ℓ]`` for
    the alignment panel (targets: ``τ − h``; PC: its errors, with ε*_L as δ_L)."""
    if isinstance(circuit, PredictiveCoding):
        return (circuit.network.forward(circuit.x), circuit.equilibrium_errors()[-1],
                circuit.errors(ys))
    fwd = circuit.fwd if isinstance(circuit, TargetPropagation) else circuit.forward
    return fwd, circuit.delta_L, circuit.credits(ys)


def _derived(circuit, prefixes: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """``(observed key, role, layer)`` of the observed populations with these prefixes that are
    not state (PC's leaky errors are)."""
    state = {p.name for p in circuit.populations}
    keys = [k for k in circuit.observe(circuit.initial_state()) if k not in state]
    return [(k, _ROLES[prefix], int(k.split("_")[1]) if "_" in k else circuit.network.L)
            for prefix in prefixes for k in sorted(k for k in keys if k.split("_")[0] == prefix)]


def _solver_kwargs(config: Config, section: str) -> dict[str, Any]:
    kwargs = {"progress": False, **config.get("solver", {}), **config.get(f"{section}_solver", {})}
    missing = [key for key in ("t0", "t1") if key not in kwargs]
    if missing:
        raise ValueError(f"config sections 'solver' / '{section}_solver': missing {missing}, "
                         "expected the time span (t0, t1) of the settle")
    return kwargs


def _save_times(t0: float, t1: float, dt: float | None, points: int) -> list[float]:
    first = dt if dt else (t1 - t0) * 1e-5
    logs = np.logspace(math.log10(first), math.log10(t1 - t0), max(points - 1, 2))
    return [t0] + sorted({float(t0 + s) for s in logs if 0 < s <= t1 - t0})


def _relative_error(y: Mapping[str, torch.Tensor], star: Mapping[str, torch.Tensor],
                    offset: Mapping[str, torch.Tensor]) -> float:
    keys = sorted(star)
    diff = torch.cat([(y[k] - star[k]).reshape(-1) for k in keys])
    ref = torch.cat([(star[k] - offset.get(k, 0)).reshape(-1) for k in keys])
    return float(diff.norm() / ref.norm().clamp_min(1e-300))


def _title(name: str, spec: CircuitSpec, params: Mapping[str, Any], net_cfg: Mapping[str, Any],
           solver: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{PRETTY.get(k, k)}={params[k]:g}" if isinstance(params[k], float)
                      else f"{PRETTY.get(k, k)}={params[k]}" for k in spec.title_keys
                      if k in params)
    net = (f"widths {net_cfg.get('widths')}, {net_cfg.get('activation', 'tanh')} hidden, "
           f"{net_cfg.get('output_activation', 'linear')} output")
    stop = result["stopped_at"]
    settle = {"converged": "settled at t =", "diverged": "diverged at t ="}.get(
        result["status"], "not settled by t1 =") + f" {stop:g}"
    return (f"{name} ({spec.cls.__name__}) on {net}\n{shown}\n"
            f"{solver.get('method', 'euler')} dt={solver.get('dt')}: {settle}, "
            f"relative error to closed form {result['relative_error_to_closed_form']:.2e}"
            + ("" if spec.exact else " (linearised)"))


def run_circuit(name: str, config: Config, net: ForwardNetwork, x: torch.Tensor,
                target: torch.Tensor, out: Path) -> dict[str, Any]:
    """Settle one circuit, compare with its closed form, plot; return its summary entry."""
    spec = CIRCUITS[name]
    kwargs = dict(config.get(spec.section, {}))
    circuit = spec.cls(net, x, target, **kwargs)
    if circuit.S != 1:
        swept = [k for k, v in kwargs.items() if isinstance(v, (list, tuple))] or ["network"]
        raise ValueError(f"config section {spec.section!r}: received {circuit.S} replicas "
                         f"(from {swept}), expected one circuit: this demo follows a single "
                         "settle; sweep parameters with python -m demos.sweep")
    solver = _solver_kwargs(config, spec.section)
    save_at = _save_times(solver["t0"], solver["t1"], solver.get("dt"), config["points"])
    sol = solve(circuit, circuit.initial_state(), save_at=save_at, **solver)

    try:
        closed = getattr(circuit, spec.closed_form)()
    except ValueError as err:
        raise ValueError(f"config section {spec.section!r}: {err}") from err
    star = {p.name: closed[p.name] for p in circuit.populations if p.name in closed}
    y0 = circuit.initial_state()               # populations that start at the forward pass
    offset = {p.name: y0[p.name] for p in circuit.populations
              if p.role in (Role.FORWARD, Role.TARGET)}
    status = sol.status_names()[0]
    settle_time = float(sol.t_stop[0]) if status == "converged" else None
    error = _relative_error(sol.y1, star, offset)

    # alignment of the implied weight update with the closed-form baselines, over time
    fa = name == "DI" and kwargs.get("feedback", "transpose") != "transpose"
    feedback = circuit.feedback if fa else None
    fwd, delta_L, credits = _credits(circuit, sol.ys)
    refs = reference_credits(circuit.network, fwd, delta_L, feedback=feedback,
                             **config.get("references", {}))
    angles = {k: v[:, 0].cpu().numpy() for k, v in alignment(fwd, credits, refs).items()}

    # the figure: state populations (minus offset) and derived ones, closed forms dashed
    ts, observed = sol.ts.cpu().numpy(), circuit.observe(sol.ys)
    shown = (np.ones_like(ts, dtype=bool) if settle_time is None
             else ts <= max(settle_time * config["plot_until"], float(ts[1]) * 10))
    traces = []
    for key, role, layer in ([(p.name, p.role.value, p.layer) for p in circuit.populations]
                             + _derived(circuit, spec.derived)):
        base, cf = offset.get(key, 0), closed.get(key)
        traces.append(Trace(f"{key} − {key}^ff" if key in offset else key, role, layer,
                            (observed[key] - base)[:, 0, 0].cpu().numpy()[shown],
                            None if cf is None else (cf - base)[0, 0].cpu().numpy()))

    section = SCHEMA.sections[spec.section]
    params = {**{k: p.default for k, p in section.parameters().items()
                 if p.default is not p.empty}, **kwargs}
    result: dict[str, Any] = {
        "status": status, "relative_error_to_closed_form": error, "settle_time": settle_time,
        "stopped_at": float(sol.t_stop[0]),
        "within_tolerance": bool(status == "converged" and error <= config["tolerance"]),
        "closed_form": "exact" if spec.exact else "linearised about the feed-forward pass",
        # steps and evaluations are None from adaptive methods
        **{k: None if sol.stats.get(k) is None else int(sol.stats[k])
           for k in ("steps", "evaluations")},
        "seconds": float(sol.stats["seconds"]), "method": sol.stats["method"],
        "dt": sol.stats["dt"], "t1": float(solver["t1"]),
        "final_angles_deg": {k: float(v[-1]) for k, v in angles.items()},
        "figure": f"{name}.png", "parameters": jsonable(params),
        **(spec.extras(circuit, sol, solver) if spec.extras else {}),
    }
    net_cfg = config[spec.network_section or "network"]
    base = next(iter(offset)).split("_")[0] if offset else None
    settling_figure(out / f"{name}.png", ts[shown], traces,
                    {k: v[shown] for k, v in angles.items()},
                    title=_title(name, spec, params, net_cfg, solver, result),
                    settle_time=settle_time,
                    panel_labels=base and {"forward": f"forward\n({base} − {base}_ff)"})
    return result


# -- the demo ---------------------------------------------------------------------------------

def example(config: Config, net: ForwardNetwork) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded example: ``x ~ N(0, I)``, ``target ~ N(0, I)``, each ``[1, n]``."""
    g = torch.Generator().manual_seed(int(config["seed"]))
    x = torch.randn(1, net.widths[0], generator=g, dtype=torch.float64)
    target = torch.randn(1, net.widths[-1], generator=g, dtype=torch.float64)
    return x.to(net.dtype), target.to(net.dtype)


def run(config: str | Path | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Run the demo into ``out``; ``config`` is a YAML path, a mapping or None, merged over
    ``configs/settle.yaml``. Returns the summary (also written to ``out/summary.json``)."""
    config, out = load(config), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [c for c in config["circuits"] if c not in CIRCUITS]
    if unknown:
        raise ValueError(f"config key 'circuits': received {unknown}, expected names from "
                         f"{list(CIRCUITS)}")
    summary: dict[str, Any] = {"circuits": {}}
    with intra_op_threads(config["threads"]):
        for name in config["circuits"]:
            net = ForwardNetwork(**config[CIRCUITS[name].network_section or "network"])
            x, target = example(config, net)
            summary["circuits"][name] = run_circuit(name, config, net, x, target, out)
    summary.update(all_within_tolerance=all(c["within_tolerance"]
                                            for c in summary["circuits"].values()),
                   tolerance=config["tolerance"], config=jsonable(config))
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    return summary


def report(summary: Mapping[str, Any]) -> str:
    """A short table of the summary."""
    nan = float("nan")
    rows = [("circuit", "status", "rel. error", "settle time", "steps", "seconds",
             "∠ backprop", "∠ Gauss-Newton")]
    for name, c in summary["circuits"].items():
        angles = c.get("final_angles_deg", {})
        rows.append((name, c["status"], f"{c['relative_error_to_closed_form']:.2e}",
                     "—" if c["settle_time"] is None else f"{c['settle_time']:g}",
                     "—" if c.get("steps") is None else str(c["steps"]),
                     f"{c.get('seconds', nan):.2f}", f"{angles.get('backprop', nan):.1f}°",
                     f"{angles.get('gauss_newton', nan):.1f}°"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    verdict = "every" if summary.get("all_within_tolerance") else "NOT every"
    lines.append(f"{verdict} circuit converged within {summary.get('tolerance', 1e-3):g} of its "
                 "closed form")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.settle", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML config merged over configs/settle.yaml (default: that file)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    summary = run_cli(parser, argv, lambda args: load(args.config), run, report)
    return 0 if summary["all_within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
