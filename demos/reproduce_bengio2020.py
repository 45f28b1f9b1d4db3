"""Reproducing Bengio (2020): iterated approximate inverses, DTP1, and Gauss-Newton targets.

    python -m demos.reproduce_bengio2020 --out DIR [--seed 0] [--betas 1e-1 1e-2 ...]
        [--perturbations 0.05 0.25 0.6 1.3] [--tanh-perturbations 0.05 0.1] [--steps 80]

Bengio (2020), "Deriving differential target propagation from iterating approximate inverses"
(SPEC §4, §5, oracles §8.5-8.6) on :class:`circuits.target_propagation.TargetPropagation`,
float64, one unit Euler step (dt = T = 1) per iteration of the paper's algorithm:

1. ``convergence.png``: an n-n-n layer inverted by iterating decoders whose linearisation has
   spectral radius p, corrected on g's output (``iterated_output``, g∘f − I) or input
   (``iterated_input``, f∘g − I): errors fall at a rate ≤ α = Lip(residual); α, ρ > 1 diverge.
2. ``dtp1.png``: the online rule (γ = 0) integrated over a settle is DTP1, which moves h_ℓ
   exactly onto τ_ℓ; one unit Euler step of ``iterated_output`` is DTP.
3. ``gn_alignment.png``: exact-inverse targets are Gauss-Newton steps to first order in β (the
   angle's log-log slope ≈ 1); one DTP step with approximate decoders is not, iterating is.

Writes ``DIR/summary.json`` (``convergence``, ``dtp1``, ``gauss_newton``, ``checks`` {claim:
bool}, ``figures``, ``config``, ``seconds``) and the three figures.
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

import numpy as np
import torch

from circuits import ForwardNetwork
from circuits.target_propagation import (MirroredDecoder, TargetPropagation, contraction_rate,
                                         inverse_decoders, normalised_inverse_decoders,
                                         visited_region)
from solvers import solve

from .config import (check_int, check_layer_widths, check_number, check_numbers,
                     dataclass_config, dataclass_flags, intra_op_threads, jsonable, run_cli)
from .plots import decay_figure, grouped_log_bars_figure, layer_colour, log_log_figure

F64 = torch.float64
RULES = ("iterated_output", "iterated_input")
# the per-step ratio may exceed a sampled Lipschitz constant by this much (relative): the sup over
# a region is approximated from below by sampling (linear cases: α is exact, 1e-9 is rounding)
SAMPLED_SLACK = 1e-6


@dataclass(frozen=True)
class Config:
    """The demo's parameters (the first few are also command-line flags)."""

    seed: int = 0
    width: int = 3                                   # part 1: the n of the n-n-n layer
    perturbations: tuple[float, ...] = (0.05, 0.25, 0.6, 1.3)   # p, linear layer (last: > 1)
    tanh_perturbations: tuple[float, ...] = (0.05, 0.1)
    tanh_init: str = "orthogonal"      # a well-conditioned layer, and x ~ N(0, s²) keeping tanh
    tanh_input_scale: float = 0.5      # off saturation, where g∘f − I is far from small
    linear_beta: float = 0.5
    tanh_beta: float = 0.05
    steps: int = 80                                  # unit Euler steps = iterations
    converged_below: float = 1e-8                    # error relative to the first iterate's
    roundoff_floor: float = 1e-11                    # ratios are measured above this (relative)
    lipschitz_samples: int = 400
    dtp1_widths: tuple[int, ...] = (4, 5, 5, 5)      # part 2
    dtp1_batch: int = 3
    dtp1_beta: float = 0.05
    dtp1_perturbation: float = 0.1
    dtp1_init: str = "orthogonal"      # inverse decoders need τ inside φ's range all along
    dtp1_input_scale: float = 0.5
    dtp_widths: tuple[int, ...] = (5, 6, 6, 6, 3)
    settle_dt: float = 0.1
    settle_t1: float = 200.0
    betas: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)   # part 3
    gn_widths: tuple[int, ...] = (4, 4, 4, 4)
    gn_init: str = "orthogonal"        # uniform 4×4 layers often lose their inverse at β ≥ 0.03
    gn_batch: int = 1
    gn_input_scale: float = 0.5        # keeps φ⁻¹(M(h − b)) inside atanh's domain
    gn_fit_points: int = 3             # the slope is fitted over this many smallest β
    gn_perturbation: float = 0.1       # the approximate decoders of the DTP contrast
    gn_steps: int = 60                 # unit Euler steps of the iterated inverse

    def __post_init__(self):
        for name in ("dtp1_widths", "dtp_widths", "gn_widths"):
            check_layer_widths(name, getattr(self, name), layers=2, square=name != "dtp_widths")
        for name in ("width", "lipschitz_samples", "dtp1_batch", "gn_batch", "gn_steps"):
            check_int(name, getattr(self, name), 1)
        check_int("steps", self.steps, 3)
        check_int("gn_fit_points", self.gn_fit_points, 2)
        for name in ("linear_beta", "tanh_beta", "dtp1_beta", "settle_dt", "settle_t1",
                     "converged_below", "roundoff_floor", "tanh_input_scale",
                     "dtp1_input_scale", "gn_input_scale"):
            check_number(name, getattr(self, name), positive=True)
        for name in ("dtp1_perturbation", "gn_perturbation"):
            check_number(name, getattr(self, name), positive=False)
        for name in ("perturbations", "tanh_perturbations"):
            check_numbers(name, getattr(self, name))
        check_numbers("betas", self.betas, at_least=2)          # a slope is fitted


TUPLES = ("perturbations", "tanh_perturbations", "dtp1_widths", "dtp_widths", "betas",
          "gn_widths")


def load(config: Config | Mapping[str, Any] | None = None) -> Config:
    """``config`` as a :class:`Config` (None: the defaults; a mapping: overrides of them)."""
    return dataclass_config(Config, config, TUPLES)


def batch(widths: Sequence[int], B: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + seed)
    return (torch.randn(B, widths[0], generator=g, dtype=F64),
            torch.randn(B, widths[-1], generator=g, dtype=F64))


def iterate(c: TargetPropagation, steps: int, divergence_bound: float = 1e6):
    """``steps`` unit Euler steps (dt = T = 1), every step recorded: the discrete iteration."""
    return solve(c, c.initial_state(), 0.0, float(steps), dt=1.0, steady_state=False,
                 save_every=1, observe=c.observe, divergence_bound=divergence_bound,
                 check_every=1, progress=False)


def convergence_case(cfg: Config, activation: str, rule: str, p: float) -> dict[str, Any]:
    """One layer to invert, one correction rule, one decoder perturbation."""
    n, tanh = cfg.width, activation != "linear"
    net = ForwardNetwork([n, n, n], activation, seed=cfg.seed,
                         init=cfg.tanh_init if tanh else "uniform")
    x, y = batch((n, n, n), 1, cfg.seed)
    beta = cfg.tanh_beta if tanh else cfg.linear_beta
    c = TargetPropagation(net, (cfg.tanh_input_scale if tanh else 1.0) * x, y, rule=rule,
                          beta=beta, decoders=normalised_inverse_decoders(net, p, cfg.seed + 1))
    sol = iterate(c, cfg.steps, divergence_bound=1e100)
    key = "tau_1" if rule == "iterated_output" else "u_2"
    star, path = c.iterated_limit()[key][0, 0], sol.ys[key]
    # from step 1 (τ_2 sits at its target from there); a replica that left φ⁻¹'s domain (NaN)
    # is rolled back and frozen by the solver: keep the steps before it stopped
    stopped = sol.status_names()[0] == "diverged"
    iterates = path[1:int(round(sol.t_stop[0].item())) if stopped else len(path), 0, 0]
    err = (iterates - star).norm(dim=-1)
    finite = torch.isfinite(err)
    err = torch.where(finite, err, torch.full_like(err, math.inf))
    alpha_box = None
    if tanh:
        pts, box = visited_region(iterates[finite], star, cfg.lipschitz_samples, cfg.seed)
        alpha, rho = c.contraction_bounds(2, star, pts)
        alpha_box = c.contraction_bounds(2, star, box)[0]
        how = (f"max Jacobian norm of the residual over {len(pts)} points: the iterates "
               "and the segments from each to the limit")
    else:                   # the residual's Jacobian is constant: M W − I (output), W M − I
        alpha, rho = c.contraction_bounds(2, star)
        how = "spectral norm of " + ("M W − I" if rule == "iterated_output" else "W M − I")
    rate, max_ratio, measured = contraction_rate(err, cfg.roundoff_floor)
    e1, last = err[0].item(), err[-1].item()
    slack = SAMPLED_SLACK if tanh else 1e-9
    return {
        "activation": activation, "rule": rule, "perturbation": p, "beta": beta,
        "alpha": alpha, "alpha_measured_as": how, "alpha_bounding_box": alpha_box,
        "spectral_radius": rho, "rate": rate, "max_step_ratio": max_ratio,
        "ratios_measured": measured,
        "rate_within_alpha": bool(measured > 0 and max_ratio <= alpha * (1 + slack)),
        "converged": bool(math.isfinite(last) and last <= cfg.converged_below * e1),
        "diverged": bool(stopped or not math.isfinite(last) or last >= 1e3 * e1),
        "first_error": e1, "final_error": last if math.isfinite(last) else None,
        "errors": [v if math.isfinite(v) else None for v in err.tolist()],
    }


def convergence(cfg: Config) -> list[dict[str, Any]]:
    return [convergence_case(cfg, activation, rule, p)
            for activation, ps in (("linear", cfg.perturbations), ("tanh", cfg.tanh_perturbations))
            for rule in RULES for p in ps]


def online_vs_dtp1(c: TargetPropagation, cfg: Config) -> dict[str, Any]:
    """Settle ``c`` (online rule, γ = 0, η = 1) and compare each layer's weight change with DTP1
    of the settled targets (max abs differences)."""
    y0 = c.initial_state()
    sol = solve(c, y0, 0.0, cfg.settle_t1, dt=cfg.settle_dt, atol=1e-14, rtol=1e-12,
                progress=False)
    moved = {k: sol.y1[k] - y0[k] for k in y0 if k[0] in "Wb"}
    ups = list(enumerate(c.dtp1_updates(sol.y1), start=1))
    dW = [(moved[f"W_{l}"] - W).abs().max().item() for l, (W, _) in ups]
    db = [(moved[f"b_{l}"] - b).abs().max().item() for l, (_, b) in ups]
    return {"status": sol.status_names()[0], "settle_time": sol.t_stop[0].item(),
            "max_abs_diff_W": dW, "max_abs_diff_b": db,
            "max_abs_dtp1_W": [W.abs().max().item() for _, (W, _) in ups],
            "max_abs_online_W": [moved[f"W_{l}"].abs().max().item() for l, _ in ups],
            "max_abs_diff": max(dW + db), "max_abs_target_start_offset":
            max((t - h).abs().max().item() for t, h in zip(c.targets(y0), c.h))}


def dtp1_exactness(cfg: Config) -> dict[str, Any]:
    widths = list(cfg.dtp1_widths)
    net = ForwardNetwork(widths, "tanh", seed=cfg.seed, init=cfg.dtp1_init)
    x, y = batch(widths, cfg.dtp1_batch, cfg.seed)
    x = cfg.dtp1_input_scale * x
    dec = inverse_decoders(net, perturbation=cfg.dtp1_perturbation, seed=cfg.seed + 1)
    online = {"iterated_output": online_vs_dtp1(TargetPropagation(
        net, x, y, beta=cfg.dtp1_beta, decoders=dec, online_gamma=0.0), cfg)}
    # one example: (W + ΔW) r_{ℓ-1} + b + Δb = τ_ℓ exactly
    c = TargetPropagation(net, x[:1], y[:1], beta=cfg.dtp1_beta, decoders=dec)
    sol = solve(c, c.initial_state(), 0.0, cfg.settle_t1, dt=cfg.settle_dt, atol=1e-14,
                rtol=1e-12, progress=False)
    ups, taus = c.dtp1_updates(sol.y1), c.targets(sol.y1)
    residual = [(c.rates[l] @ (net.weights[l] + dW).transpose(-1, -2) + net.biases[l] + db
                 - taus[l]).abs().max().item() for l, (dW, db) in enumerate(ups)]
    change = [(t - h).abs().max().item() for t, h in zip(taus, c.h)]
    # one unit Euler step of iterated_output = DTP, the dtp rule's fixed point (mirrored g)
    dwidths = list(cfg.dtp_widths)
    dnet = ForwardNetwork(dwidths, "tanh", seed=cfg.seed)
    dx, dy = batch(dwidths, 1, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    mirrored = [MirroredDecoder(torch.randn(1, dwidths[l - 1], dwidths[l], generator=gen,
                                            dtype=F64) / dwidths[l] ** 0.5,
                                torch.randn(1, 1, dwidths[l - 1], generator=gen, dtype=F64) / 10,
                                dnet.activation(l)) for l in range(2, dnet.L + 1)]
    dc = TargetPropagation(dnet, dx, dy, beta=cfg.dtp1_beta, decoders=mirrored)
    dsol, L = iterate(dc, dnet.L), dnet.L
    dtp = TargetPropagation(dnet, dx, dy, rule="dtp", beta=cfg.dtp1_beta,
                            decoders=mirrored).steady_state()
    # the change reaches layer L − k at step k + 1 (the wave of the parallel iteration)
    step_diff = {str(L - k): (dsol.ys[f"tau_{L - k}"][k + 1] - dtp[f"tau_{L - k}"]
                              ).abs().max().item() for k in range(1, L)}
    return {
        "online_vs_dtp1": online, "online_batch": cfg.dtp1_batch,
        "dtp1_target_residual": residual, "dtp1_target_change": change,
        "dtp1_settle_status": sol.status_names()[0], "euler_step_vs_dtp": step_diff,
        "dtp_step_size": {str(l): (dtp[f"tau_{l}"] - dc.h[l - 1]).abs().max().item()
                          for l in range(1, L)},
        "max_online_diff": max(v["max_abs_diff"] for v in online.values()),
        "max_target_residual": max(residual), "max_euler_step_diff": max(step_diff.values()),
    }


def gauss_newton_alignment(cfg: Config) -> dict[str, Any]:
    widths = list(cfg.gn_widths)
    net = ForwardNetwork(widths, "tanh", seed=cfg.seed, init=cfg.gn_init)
    x, y = batch(widths, cfg.gn_batch, cfg.seed)
    x = cfg.gn_input_scale * x
    L, betas = net.L, list(cfg.betas)
    approx = inverse_decoders(net, cfg.gn_perturbation, seed=cfg.seed + 1)
    runs = {"exact_inverse_iterated": ("iterated_output", inverse_decoders(net), cfg.gn_steps),
            "approximate_iterated": ("iterated_output", approx, cfg.gn_steps),
            "approximate_dtp_one_step": ("dtp", approx, L)}
    angles, statuses = {}, {}
    for name, (rule, dec, steps) in runs.items():       # every β at once: S = len(betas)
        c = TargetPropagation(net, x, y, rule=rule, beta=betas, decoders=dec)
        sol = solve(c, c.initial_state(), 0.0, float(steps), dt=1.0, steady_state=False,
                    progress=False, divergence_bound=1e100)
        tau = c.targets(sol.y1)
        last = c.targets(solve(c, sol.y1, 0.0, 1.0, dt=1.0, steady_state=False,
                               progress=False).y1)
        statuses[name] = {"status": sorted(set(sol.status_names())),
                          "last_step_change": max((a - b).abs().max().item()
                                                  for a, b in zip(tau, last)),
                          "finite": bool(all(torch.isfinite(t).all() for t in tau))}
        angles[name] = {str(l): a.tolist() for l, a in
                        enumerate(c.layer_target_angles(sol.y1)["gauss_newton"], start=1)}
    # the angle between the GN step and the backprop direction does not depend on β
    gn_vs_bp = c.layer_target_angles(c.gauss_newton_targets(0.0))["backprop"]
    order = sorted(range(len(betas)), key=lambda i: betas[i])[:cfg.gn_fit_points]
    return {"betas": betas, "layers": list(range(1, L)), "angles_to_gauss_newton": angles,
            "slopes": {name: {l: fit_slope([betas[i] for i in order], [a[i] for i in order])
                              for l, a in per.items()} for name, per in angles.items()},
            "slopes_all_betas": {name: {l: fit_slope(betas, a) for l, a in per.items()}
                                 for name, per in angles.items()},
            "fitted_betas": [betas[i] for i in order],
            "gauss_newton_vs_backprop": {str(l): a[0].item() for l, a in
                                         enumerate(gn_vs_bp, start=1)},
            "runs": statuses,
            "network": {"widths": widths, "init": cfg.gn_init, "batch": cfg.gn_batch}}


def fit_slope(betas: Sequence[float], angles: Sequence[float]) -> float | None:
    """The log-log slope of ``angles`` against ``betas`` (None with under two positive)."""
    pts = [(math.log10(b), math.log10(a)) for b, a in zip(betas, angles)
           if math.isfinite(a) and a > 0]
    return float(np.polyfit(*zip(*pts), 1)[0]) if len(pts) >= 2 else None


# -- figures, checks, report ---------------------------------------------------------------------

STYLES = {"exact_inverse_iterated": ("-", "o", "exact inverse, iterated"),
          "approximate_iterated": (":", "x", "approximate decoders, iterated to convergence"),
          "approximate_dtp_one_step": ("--", "s", "approximate decoders, one DTP step")}


def figures(out: Path, conv: Sequence[Mapping], d: Mapping, g: Mapping) -> list[Path]:
    panels = {f"{a}, {r}: ‖" + ("τ_1 − τ_1*  (g∘f − I)" if r == RULES[0] else
                                 "u_2 − u_2*  (f∘g − I)") + "‖":
              [(f"p = {c['perturbation']:g}: α = {c['alpha']:.3g}, rate {c['rate']:.3g}",
                c["errors"], c["alpha"]) for c in conv if (c["activation"], c["rule"]) == (a, r)]
              for a in ("linear", "tanh") for r in RULES}
    bars = {"the checks' threshold": 1e-10}                 # for scale, drawn in grey
    bars |= {f"online ({rule.split('_')[1]}) − DTP1, layer {l}": max(a, b)
             for rule, r in d["online_vs_dtp1"].items()
             for l, (a, b) in enumerate(zip(r["max_abs_diff_W"], r["max_abs_diff_b"]), start=1)}
    bars |= {f"DTP1-moved h_{l} − τ_{l}": v for l, v in enumerate(d["dtp1_target_residual"], 1)}
    bars |= {f"one Euler step − DTP, τ_{l}": v for l, v in d["euler_step_vs_dtp"].items()}
    curves = {f"{STYLES[name][2]}, layer {l} (slope {g['slopes'][name][l]:.2f})":
              (a, {"ls": STYLES[name][0], "marker": STYLES[name][1], "color": layer_colour(int(l))})
              for name, per in g["angles_to_gauss_newton"].items() for l, a in per.items()}
    return [decay_figure(out / "convergence.png", panels, rows=2,
                         xlabel="iteration t (unit Euler steps)",
                         title="Iterated approximate inverses converge at rate ≤ α (dashed: "
                               "α^t); α > 1 diverges"),
            grouped_log_bars_figure(out / "dtp1.png", bars, [
                ("online", "tab:blue", "online rule − DTP1 (ΔW, Δb)"),
                ("DTP1", "tab:green", "DTP1 moves h_ℓ onto τ_ℓ"),
                ("one Euler", "tab:orange", "one Euler step of iterated_output − DTP")],
                other="0.6", floor=1e-18, title="DTP1 and DTP are what the circuit computes, "
                "to rounding", xlabel="max abs difference (log; exact zeros drawn at 1e-18)"),
            log_log_figure(out / "gn_alignment.png", g["betas"], curves,
                           hlines=[(a, {"color": layer_colour(int(l))})
                                   for l, a in g["gauss_newton_vs_backprop"].items()],
                           hline_label="GN vs backprop direction (per layer)",
                           xlabel="β (output nudge)", ylabel="angle between τ_ℓ − h_ℓ and the "
                           "Gauss-Newton step (degrees)", title="Differential targets are "
                           "Gauss-Newton steps to first order in β")]


def checks(conv: Sequence[Mapping[str, Any]], dtp1: Mapping[str, Any],
           gn: Mapping[str, Any]) -> dict[str, bool]:
    contracting = [c for c in conv if c["alpha"] < 1]
    expanding = [c for c in conv if c["spectral_radius"] > 1]
    exact, approx_it, dtp = (gn["angles_to_gauss_newton"][k].values() for k in STYLES)
    return {
        "contractions_converge": bool(contracting) and all(c["converged"] for c in contracting),
        "rate_within_alpha": bool(contracting) and all(c["rate_within_alpha"]
                                                       for c in contracting),
        "alpha_above_one_diverges": bool(expanding) and all(c["diverged"] and c["alpha"] > 1
                                                            for c in expanding),
        "online_rule_is_dtp1": dtp1["max_online_diff"] < 1e-10 and all(
            r["status"] == "converged" and max(r["max_abs_dtp1_W"]) > 1e-3
            for r in dtp1["online_vs_dtp1"].values()),
        "dtp1_moves_h_onto_tau": dtp1["max_target_residual"] < 1e-10
        and dtp1["dtp1_settle_status"] == "converged" and min(dtp1["dtp1_target_change"]) > 1e-3,
        "euler_step_is_dtp": dtp1["max_euler_step_diff"] < 1e-10,
        "gn_angle_first_order_in_beta": all(s is not None and 0.8 <= s <= 1.2 for s in
                                            gn["slopes"]["exact_inverse_iterated"].values()),
        "gn_angle_small_at_smallest_beta": all(a[-1] < 0.1 for a in exact),
        "iterating_approximate_decoders_recovers_exact_targets": all(
            abs(b[-1] - a[-1]) <= 1e-3 * a[-1] + 1e-9 for a, b in zip(exact, approx_it)),
        "one_dtp_step_stays_off_gn": all(d[-1] > 10 * a[-1] for a, d in zip(exact, dtp)),
    }


def run(config: Config | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Run the three parts into ``out``; ``config`` is None (the defaults), a :class:`Config`
    or a mapping of its fields. Returns the summary (also written to ``out/summary.json``)."""
    cfg, out, start = load(config), Path(out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with intra_op_threads(1):
        conv, dtp1, gn = convergence(cfg), dtp1_exactness(cfg), gauss_newton_alignment(cfg)
        paths = figures(out, conv, dtp1, gn)
    summary = jsonable({"convergence": conv, "dtp1": dtp1, "gauss_newton": gn,
                        "checks": checks(conv, dtp1, gn), "figures": [p.name for p in paths],
                        "config": dataclasses.asdict(cfg), "seconds": time.perf_counter() - start})
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    return summary


def passed(summary: Mapping[str, Any]) -> bool:
    return all(summary["checks"].values())


def report(summary: Mapping[str, Any]) -> str:
    lines = ["1. iterated inverse (rate: geometric mean of per-step error ratios; max ratio; α)"]
    for c in summary["convergence"]:
        verdict = "converged" if c["converged"] else "DIVERGED" if c["diverged"] else "neither"
        lines.append(f"  {c['activation']:<6} {c['rule']:<15} p = {c['perturbation']:<4g} "
                     f"α = {c['alpha']:<7.4f} ρ = {c['spectral_radius']:<7.4f} "
                     f"rate = {c['rate']:<7.4f} max ratio = {c['max_step_ratio']:<7.4f} "
                     f"{verdict}{'' if c['rate_within_alpha'] else '  (max ratio > α)'}")
    d, g = summary["dtp1"], summary["gauss_newton"]
    lines.append("2. DTP1 (max abs differences)")
    lines += [f"  online rule ({rule}) − DTP1: {r['max_abs_diff']:.2e} "
              f"(DTP1 ΔW up to {max(r['max_abs_dtp1_W']):.2g})"
              for rule, r in d["online_vs_dtp1"].items()]
    lines.append("  DTP1-moved h_ℓ − τ_ℓ per layer: "
                 + ", ".join(f"{v:.1e}" for v in d["dtp1_target_residual"]))
    lines.append("  one Euler step − DTP per layer: "
                 + ", ".join(f"τ_{l} {v:.1e}" for l, v in d["euler_step_vs_dtp"].items()))
    lines.append("3. angle to the Gauss-Newton step (degrees) at β = "
                 + " ".join(f"{b:g}" for b in g["betas"]))
    lines += [f"  {name:<25} layer {l}: " + " ".join(f"{v:.3g}" for v in a)
              + f"   slope {g['slopes'][name][l]:.3f}"
              for name, per in g["angles_to_gauss_newton"].items() for l, a in per.items()]
    lines.append("  GN vs backprop direction: " + ", ".join(
        f"layer {l} {a:.1f}°" for l, a in g["gauss_newton_vs_backprop"].items()))
    lines.append("checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}"
                                        for k, v in summary["checks"].items()))
    lines.append(f"{summary['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m demos.reproduce_bengio2020",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    make_config = dataclass_flags(parser, Config, {
        "seed": "seed of every network, batch and decoder perturbation",
        "betas": "output nudges β of the Gauss-Newton sweep",
        "perturbations": "decoder perturbations p of the linear convergence cases",
        "tanh_perturbations": "decoder perturbations p of the tanh convergence cases",
        "steps": "iterations of the convergence cases"})
    return run_cli(parser, argv, make_config, run, report)


if __name__ == "__main__":
    sys.exit(0 if passed(main()) else 1)
