"""Settling demo: DI, SDI, DFC, PC, TP and DDTP settle on one example, against closed forms.

    python -m demos.settle [--config configs/settle.yaml] --out DIR

A small tanh network (``network`` section) sees one seeded example ``x ~ N(0, I)`` with target
``y ~ N(0, I)``. Each circuit (layer-wise dynamic inversion, single-loop DI, deep feedback
control, fixed-prediction predictive coding with the output clamped to the target; SPEC §1–3)
is integrated from its initial state until it settles (per-replica steady-state detection of
:func:`solvers.solve`), and its final state is compared with its closed form: NDI for DI, the
linear-carry inversion of the whole path for SDI, backprop's δ for PC (all three exact), and for
DFC the steady state linearised about the feed-forward pass (exact as the nudge → 0, so the
config keeps the nudge small). For DFC and PC the forward state (``v``, ``x``) is O(1) while the
circuit moves it by a small amount, so their error is measured on the deviation from the
feed-forward pass (``v − v_ff``, ``x − x_ff``). PC's errors also follow a known transient (the
binomial law of :func:`circuits.fixed_prediction_transient` for Euler steps): its largest
deviation is reported as ``transient_error_to_law``. Target propagation (SPEC §4–5): ``TP``
is Bengio's iterated inverse with approximate inverse decoders on its own square network
(``iterated_inverse_network``), its targets settling onto the exact inverse
``τ_{ℓ-1} = f_ℓ⁻¹(τ_ℓ)``; ``DDTP`` is DDTP-linear with the damped pseudo-inverse as feedback,
settling onto the Gauss-Newton targets. Both are measured on ``τ − h``.

Writes ``DIR/<circuit>.png`` (each population over time, closed forms dashed, and the angle of
the implied weight update to backprop, pseudo-backprop, Gauss-Newton and, for DI with random
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

from circuits import (DynamicInversion, ForwardNetwork, PredictiveCoding,
                      SingleLoopDynamicInversion, TargetPropagation, fixed_prediction_transient,
                      inverse_decoders)
from circuits.credit import alignment, backprop, gauss_newton, reference_credits
from circuits.feedback_control import DeepFeedbackControl
from circuits.network import Forward
from solvers import Solution, solve

from .config import Config, Schema, Section, jsonable, load_config, read_yaml, run_cli
from .plots import Trace, settling_figure

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "settle.yaml"
_CIRCUIT_INPUTS = ("network", "x", "target", "output_error")
_SOLVE_SUPPLIED = ("f", "y0", "save_every", "save_at", "observe")
# fixed_prediction_transient sums math.comb(n, j) as floats, which overflow past ~1030 steps.
_LAW_MAX_STEPS = 1000


# -- what each circuit needs beyond the generic code ------------------------------------------

def _own_credits(circuit, ys: Mapping[str, torch.Tensor]
                 ) -> tuple[Forward, torch.Tensor, list[torch.Tensor]]:
    """The feed-forward pass, the output credit δ_L ``[S, B, n_L]`` and the credit trajectories
    ``[T, S, B, n_ℓ]`` of a circuit that computes them itself (DI, SDI, DFC)."""
    return circuit.forward, circuit.delta_L, circuit.credits(ys)


def _no_extras(circuit, sol: Solution, solver: Mapping[str, Any]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class CircuitSpec:
    """How the demo builds one circuit and reads its closed form.

    section:      config section holding the constructor's keyword arguments; its solver
                  overrides live in ``<section>_solver``.
    closed_form:  ``(circuit, y1) -> (state, derived)``: the closed-form steady state keyed like
                  the state, and closed forms of derived populations (feedback, output error).
    offset:       ``circuit -> {state key: tensor}`` subtracted before comparing and plotting
                  (DFC: the feed-forward pre-activations).
    derived:      ``circuit -> [(observed key, role, layer)]`` plotted besides the state.
    exact:        whether the closed form is exact (else a linearisation).
    title_keys:   constructor arguments shown in the figure title.
    credits:      ``(circuit, ys) -> (forward pass, δ_L, credit trajectories)`` for the
                  alignment panel.
    extras:       ``(circuit, solution, solver kwargs) -> {key: value}`` added to the summary.
    network_section: a config section with the circuit's own network (and example), for
                  circuits that need one of their own (TP: square layers, exact inverses).
    """

    cls: type
    section: str
    closed_form: Callable[[Any, Mapping[str, torch.Tensor]], tuple[dict, dict]]
    offset: Callable[[Any], dict[str, torch.Tensor]]
    derived: Callable[[Any], list[tuple[str, str, int]]]
    exact: bool
    title_keys: tuple[str, ...]
    credits: Callable[[Any, Mapping[str, torch.Tensor]],
                      tuple[Forward, torch.Tensor, list[torch.Tensor]]] = _own_credits
    extras: Callable[[Any, Solution, Mapping[str, Any]], dict[str, Any]] = _no_extras
    network_section: str | None = None


def _state_only(circuit, star: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = {p.name for p in circuit.populations}
    return {k: v for k, v in star.items() if k in names}


def _inversion_closed_form(circuit, y1):
    star = _state_only(circuit, circuit.steady_state())
    observed = circuit.observe({**y1, **star})          # complete missing keys with the state
    derived = {k: v for k, v in observed.items() if k.startswith("fb_")}
    return star, derived


def _dfc_closed_form(circuit, y1):
    full = circuit.steady_state()
    star = _state_only(circuit, full)
    u = full["u_total"]
    # At the fixed point e = α̃ u exactly; evaluating r_L* − φ(v_L*) at the linearised v* would
    # add an O(nudge²) error to a quantity that is itself only O(α̃ · nudge).
    derived = {"e": circuit.alpha_tilde * u}
    for l, Q in enumerate(circuit.feedback, start=1):
        derived[f"fb_{l}"] = u @ Q.transpose(-1, -2)
    return star, derived


def _pc_equilibrium(circuit: PredictiveCoding) -> tuple[Forward, list[torch.Tensor]]:
    """Fixed-prediction PC's equilibrium errors ``[S, B, n_ℓ]``, ℓ = 1..L: ``ε*_L = (y − a_L)/σ²_L``
    and ``ε*_ℓ = φ'(a_ℓ) ⊙ W_{ℓ+1}ᵀ ε*_{ℓ+1}`` — backprop's cascade, so with σ²_L = 1 they are
    backprop's δ for ``½‖y − a_L‖²``. Only fixed predictions settle there."""
    if not circuit.fixed:
        raise ValueError("config section 'predictive_coding', key 'predictions': received "
                         "'live', expected 'fixed' (backprop's δ is the equilibrium only when "
                         "predictions are frozen at the feed-forward pass)")
    net = circuit.network
    fwd = net.forward(circuit.x)
    return fwd, backprop(net, fwd, (circuit.target - fwd.a[-1]) / circuit.variances[-1])


def _pc_closed_form(circuit, y1):
    """Values ``x*_ℓ = a_ℓ + σ²_ℓ ε*_ℓ`` (so ``x*_L = y``), and the errors and feedback inputs
    ``W_{ℓ+1}ᵀ ε*_{ℓ+1}`` at equilibrium (state entries when the errors are leaky)."""
    fwd, eps = _pc_equilibrium(circuit)
    star = {f"x_{l}": a + s2 * e for l, (a, s2, e)
            in enumerate(zip(fwd.a, circuit.variances, eps), start=1)}
    derived = {f"eps_{l}": e for l, e in enumerate(eps, start=1)}
    if circuit.leaky:
        star.update(derived)
    derived.update({f"fb_{l}": eps[l] @ W for l, W in enumerate(circuit.network.weights[1:],
                                                                 start=1)})
    return star, derived


def _pc_offset(circuit) -> dict[str, torch.Tensor]:
    """The feed-forward pre-activations ``a_ℓ`` ``[S, B, n_ℓ]``, where the values start."""
    return {f"x_{l}": a for l, a in enumerate(_pc_equilibrium(circuit)[0].a, start=1)}


def _pc_credits(circuit, ys):
    """PC's credit is its error populations ε_ℓ ``[T, S, B, n_ℓ]``; δ_L is ε*_L."""
    fwd, eps = _pc_equilibrium(circuit)
    return fwd, eps[-1], circuit.errors(ys)


def _pc_pops(circuit) -> list[tuple[str, str, int]]:
    """The errors (unless they are state: leaky errors) and the feedback inputs."""
    errors = [] if circuit.leaky else [(f"eps_{l}", "error", l)
                                       for l in range(1, circuit.L + 1)]
    return errors + _feedback_pops(circuit)


def _pc_transient(circuit, sol: Solution, solver: Mapping[str, Any]) -> dict[str, Any]:
    """``transient_error_to_law``: max over saved times and units of
    ``|ε_ℓ(t) − ε*_ℓ · P[Bin(t/dt, γ) ≥ L − ℓ]| / max|ε*|`` (γ = dt/τ_x; saved points between
    steps are interpolated like the state), up to the settle or :data:`_LAW_MAX_STEPS` steps.
    None where the law does not hold: Euler with γ ≤ 1, explicit errors, unit variances."""
    tau = circuit.tau_x.reshape(-1)
    dt = sol.stats["dt"]
    if sol.stats["method"] != "euler" or circuit.leaky or tau.numel() != 1 \
            or any(bool((v != 1).any()) for v in circuit.variances) or dt > float(tau):
        return {"transient_error_to_law": None}
    tau, gamma = float(tau), dt / float(tau)
    steps = (sol.ts.double() - float(sol.ts[0])) / dt
    below = steps.floor()
    last = min(float(sol.t_stop[0] - sol.ts[0]) / dt, _LAW_MAX_STEPS)
    keep = below + 1 <= last + 1e-9             # after the stop the record is frozen
    below, frac = below[keep].long(), (steps - below)[keep]
    _, star = _pc_equilibrium(circuit)
    eps = circuit.errors({k: v[keep] for k, v in sol.ys.items()})
    needed = sorted(set(below.tolist()) | set((below + 1).tolist()))
    worst = 0.0
    for l in range(1, circuit.L + 1):
        law = {m: fixed_prediction_transient(circuit.L - l, m * dt, tau, gamma) for m in needed}
        lo = torch.tensor([law[m] for m in below.tolist()], dtype=torch.float64)
        hi = torch.tensor([law[m + 1] for m in below.tolist()], dtype=torch.float64)
        at_t = torch.lerp(lo, hi, frac).to(eps[0].dtype)[:, None, None, None]
        worst = max(worst, float((eps[l - 1] - at_t * star[l - 1]).abs().max()))
    return {"transient_error_to_law": worst / max(float(e.abs().max()) for e in star)}


def iterated_inverse(network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor, *,
                     beta: float = 0.05, tau: float = 1.0, perturbation: float = 0.2,
                     decoder_seed: int = 0) -> TargetPropagation:
    """Bengio's iterated inverse (correction on the decoder output) with approximate inverse
    decoders ``g_ℓ(h) = φ⁻¹(M_ℓ(h − b_ℓ))``, ``M_ℓ = W_ℓ⁻¹ + perturbation·E`` (square layers)."""
    return TargetPropagation(network, x, target, rule="iterated_output", beta=beta, tau=tau,
                             decoders=inverse_decoders(network, perturbation, decoder_seed))


def _tp_offset(circuit) -> dict[str, torch.Tensor]:
    """Targets start at the feed-forward pre-activations ``h_ℓ``."""
    return {f"tau_{l}": h for l, h in enumerate(circuit.h, start=1)}


def _exact_inverse_targets(circuit, y1):
    """``τ_L* = h_L + βδ_L`` and ``τ_{ℓ-1}* = f_ℓ⁻¹(τ_ℓ*)`` through the exact inverses."""
    exact = inverse_decoders(circuit.network)
    star = {f"tau_{circuit.L}": circuit.output_target}
    for l in range(circuit.L, 1, -1):
        star[f"tau_{l - 1}"] = exact[l - 2](star[f"tau_{l}"])
    return star, {}


def _gauss_newton_targets(circuit, y1):
    """``τ_ℓ* = h_ℓ + β J̄ᵀ(J̄J̄ᵀ + λI)⁻¹δ_L`` (hidden layers), ``τ_L* = h_L + βδ_L``."""
    steps = gauss_newton(circuit.network, circuit.fwd, circuit.delta_L,
                         damping=circuit.damping)
    star = {f"tau_{l}": h + circuit.beta * s
            for l, (h, s) in enumerate(zip(circuit.h[:-1], steps), start=1)}
    star[f"tau_{circuit.L}"] = circuit.output_target
    return star, {}


def _tp_credits(circuit, ys):
    """A target circuit's credit is its target change ``τ_ℓ − h_ℓ`` ``[T, S, B, n_ℓ]``."""
    return circuit.fwd, circuit.delta_L, [ys[f"tau_{l}"] - h
                                          for l, h in enumerate(circuit.h, start=1)]


def _feedback_pops(circuit) -> list[tuple[str, str, int]]:
    keys = sorted(k for k in circuit.observe(circuit.initial_state()) if k.startswith("fb_"))
    return [(k, "feedback", int(k.split("_")[1])) for k in keys]


def _inversion_pops(circuit) -> list[tuple[str, str, int]]:
    """Feedback, and the forward rates: constant in DI/SDI (the inversion does not touch the
    forward pass), shown so every role of SPEC §0 has its panel."""
    return ([(f"r_{l}", "forward", l) for l in range(1, circuit.network.L + 1)]
            + _feedback_pops(circuit))


CIRCUITS: dict[str, CircuitSpec] = {
    "DI": CircuitSpec(DynamicInversion, "dynamic_inversion", _inversion_closed_form,
                      lambda c: {}, _inversion_pops, True,
                      ("alpha", "k_i", "k_p", "tau_u", "tau_delta", "feedback")),
    "SDI": CircuitSpec(SingleLoopDynamicInversion, "single_loop", _inversion_closed_form,
                       lambda c: {}, _inversion_pops, True,
                       ("alpha", "k_i", "k_p", "tau_u", "tau_delta", "feedback", "carry")),
    "DFC": CircuitSpec(DeepFeedbackControl, "feedback_control", _dfc_closed_form,
                       lambda c: {f"v_{l}": a for l, a in enumerate(c.forward.a, start=1)},
                       lambda c: [("e", "error", c.network.L)] + _feedback_pops(c), False,
                       ("target_mode", "nudge", "alpha", "k_p", "tau_v", "tau_u", "leak",
                        "feedback")),
    "PC": CircuitSpec(PredictiveCoding, "predictive_coding", _pc_closed_form, _pc_offset,
                      _pc_pops, True, ("predictions", "errors", "variances", "tau_x"),
                      _pc_credits, _pc_transient),
    "TP": CircuitSpec(iterated_inverse, "iterated_inverse", _exact_inverse_targets, _tp_offset,
                      lambda c: [], True, ("beta", "tau", "perturbation"), _tp_credits,
                      network_section="iterated_inverse_network"),
    "DDTP": CircuitSpec(TargetPropagation, "ddtp_linear", _gauss_newton_targets, _tp_offset,
                        lambda c: [], True, ("rule", "beta", "feedback", "damping"),
                        _tp_credits),
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
})

PRETTY = {"alpha": "α", "tau_u": "τ_u", "tau_delta": "τ_δ", "tau_v": "τ_v", "tau_x": "τ_x",
          "k_i": "k_i", "k_p": "k_p", "variances": "σ²"}


def load(config: str | Path | Mapping[str, Any] | None = None) -> Config:
    """The settle config: ``config`` (path, mapping or None) over ``configs/settle.yaml``."""
    return load_config(config, SCHEMA, defaults=read_yaml(DEFAULT_CONFIG))


# -- one circuit ------------------------------------------------------------------------------

def _signature_defaults(section: Section) -> dict[str, Any]:
    return {k: p.default for k, p in section.parameters().items()
            if p.default is not p.empty}


def _solver_kwargs(config: Config, section: str) -> dict[str, Any]:
    kwargs = {"progress": False, **config.get("solver", {}),
              **config.get(f"{section}_solver", {})}
    for key in ("t0", "t1"):
        if key not in kwargs:
            raise ValueError(f"config sections 'solver' / '{section}_solver': missing {key!r}, "
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
    settle = {"converged": f"settled at t = {stop:g}", "diverged": f"diverged at t = {stop:g}"
              }.get(result["status"], f"not settled by t1 = {stop:g}")
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
    solver = _solver_kwargs(config, spec.section)
    save_at = _save_times(solver["t0"], solver["t1"], solver.get("dt"), config["points"])
    sol = solve(circuit, circuit.initial_state(), save_at=save_at, **solver)

    y1 = sol.y1
    star, derived_star = spec.closed_form(circuit, y1)
    offset = spec.offset(circuit)
    status = sol.status_names()[0]
    settle_time = float(sol.t_stop[0]) if status == "converged" else None
    error = _relative_error(y1, star, offset)

    # alignment of the implied weight update with the closed-form baselines, over time
    feedback = None
    if name == "DI" and kwargs.get("feedback", "transpose") != "transpose":
        feedback = circuit.feedback
    fwd, delta_L, credits = spec.credits(circuit, sol.ys)
    refs = reference_credits(circuit.network, fwd, delta_L, feedback=feedback,
                             **config.get("references", {}))
    angles = {k: v[:, 0].cpu().numpy() for k, v in alignment(fwd, credits, refs).items()}

    # the figure: state populations (minus offset) and derived ones, closed forms dashed
    ts = sol.ts.cpu().numpy()
    observed = circuit.observe(sol.ys)
    traces = []
    for pop in circuit.populations:
        values = observed[pop.name] - offset.get(pop.name, 0)
        cf = star.get(pop.name)
        label = f"{pop.name} − {pop.name}^ff" if pop.name in offset else pop.name
        traces.append(Trace(label, pop.role.value, pop.layer, values[:, 0, 0].cpu().numpy(),
                            None if cf is None else
                            (cf - offset.get(pop.name, 0))[0, 0].cpu().numpy()))
    for key, role, layer in spec.derived(circuit):
        cf = derived_star.get(key)
        traces.append(Trace(key, role, layer, observed[key][:, 0, 0].cpu().numpy(),
                            None if cf is None else cf[0, 0].cpu().numpy()))
    if settle_time is not None:
        shown = ts <= max(settle_time * config["plot_until"], float(ts[1]) * 10)
    else:
        shown = np.ones_like(ts, dtype=bool)
    for trace in traces:
        trace.values = trace.values[shown]

    params = {**_signature_defaults(SCHEMA.sections[spec.section]), **kwargs}
    result: dict[str, Any] = {
        "status": status,
        "relative_error_to_closed_form": error,
        "settle_time": settle_time,
        "stopped_at": float(sol.t_stop[0]),
        "within_tolerance": bool(status == "converged" and error <= config["tolerance"]),
        "closed_form": "exact" if spec.exact else "linearised about the feed-forward pass",
        "steps": _int_or_none(sol.stats.get("steps")),          # None from adaptive methods
        "evaluations": _int_or_none(sol.stats.get("evaluations")),
        "seconds": float(sol.stats["seconds"]),
        "method": sol.stats["method"],
        "dt": sol.stats["dt"],
        "t1": float(solver["t1"]),
        "final_angles_deg": {k: float(v[-1]) for k, v in angles.items()},
        "figure": f"{name}.png",
        "parameters": jsonable(params),
        **spec.extras(circuit, sol, solver),
    }
    settling_figure(out / f"{name}.png", ts[shown], traces,
                    {k: v[shown] for k, v in angles.items()},
                    title=_title(name, spec, params, config[spec.network_section or "network"], solver,
                 result),
                    settle_time=settle_time,
                    panel_labels=_offset_label(offset))
    return result


def _offset_label(offset: Mapping[str, torch.Tensor]) -> dict[str, str] | None:
    """The forward panel's label when the feed-forward pass is subtracted (``v − v_ff``)."""
    if not offset:
        return None
    base = next(iter(offset)).split("_")[0]
    return {"forward": f"forward\n({base} − {base}_ff)"}


# -- the demo ---------------------------------------------------------------------------------

def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def example(config: Config, net: ForwardNetwork) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded example: ``x ~ N(0, I)``, ``target ~ N(0, I)``, each ``[1, n]``."""
    g = torch.Generator().manual_seed(int(config["seed"]))
    x = torch.randn(1, net.widths[0], generator=g, dtype=torch.float64)
    target = torch.randn(1, net.widths[-1], generator=g, dtype=torch.float64)
    return x.to(net.dtype), target.to(net.dtype)


def run(config: str | Path | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Run the demo into ``out``; ``config`` is a YAML path, a mapping or None, merged over
    ``configs/settle.yaml``. Returns the summary (also written to ``out/summary.json``)."""
    config = load(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [c for c in config["circuits"] if c not in CIRCUITS]
    if unknown:
        raise ValueError(f"config key 'circuits': received {unknown}, expected names from "
                         f"{list(CIRCUITS)}")
    summary: dict[str, Any] = {"circuits": {}}
    for name in config["circuits"]:
        net = ForwardNetwork(**config[CIRCUITS[name].network_section or "network"])
        x, target = example(config, net)
        summary["circuits"][name] = run_circuit(name, config, net, x, target, out)
    summary["all_within_tolerance"] = all(c["within_tolerance"]
                                          for c in summary["circuits"].values())
    summary["tolerance"] = config["tolerance"]
    summary["config"] = jsonable(config)
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    return summary


def report(summary: Mapping[str, Any]) -> str:
    """A short table of the summary."""
    rows = [("circuit", "status", "rel. error", "settle time", "steps", "seconds",
             "∠ backprop", "∠ Gauss-Newton")]
    for name, c in summary["circuits"].items():
        angles = c.get("final_angles_deg", {})
        rows.append((name, c["status"], f"{c['relative_error_to_closed_form']:.2e}",
                     "—" if c["settle_time"] is None else f"{c['settle_time']:g}",
                     "—" if c.get("steps") is None else str(c["steps"]), f"{c.get('seconds', float('nan')):.2f}",
                     f"{angles.get('backprop', float('nan')):.1f}°",
                     f"{angles.get('gauss_newton', float('nan')):.1f}°"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    verdict = ("every circuit converged within" if summary.get("all_within_tolerance")
               else "NOT every circuit converged within")
    lines.append(f"{verdict} {summary.get('tolerance', 1e-3):g} of its closed form")
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
