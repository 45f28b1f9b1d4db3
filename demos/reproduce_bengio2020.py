"""Reproducing Bengio (2020): iterated approximate inverses, DTP1, and Gauss-Newton targets.

    python -m demos.reproduce_bengio2020 --out DIR [--seed 0] [--betas 1e-1 1e-2 ...]
        [--perturbations 0.05 0.25 0.6 1.3] [--tanh-perturbations 0.05 0.1] [--steps 80]

Bengio (2020), "Deriving differential target propagation from iterating approximate inverses"
(SPEC §4, §5, §8.5-8.6) on :class:`circuits.TargetPropagation`, float64, one unit Euler step
per iteration of the paper's algorithm (figures: :func:`workbench.plots.bengio2020_figures`):

1. ``convergence.png``: an n-n-n layer inverted by iterating decoders whose linearisation has
   spectral radius p, corrected on g's output (``iterated_output``, g∘f − I) or input
   (``iterated_input``, f∘g − I): errors fall at a rate ≤ α = Lip(residual); α, ρ > 1 diverge.
2. ``dtp1.png``: the online rule (γ = 0) integrated over a settle is DTP1, which moves h_ℓ
   exactly onto τ_ℓ; one unit Euler step of ``iterated_output`` is DTP.
3. ``gn_alignment.png``: exact-inverse targets are Gauss-Newton steps to first order in β (the
   angle's log-log slope ≈ 1); one DTP step with approximate decoders is not, iterating is.

Writes the three figures and ``DIR/summary.json`` (``convergence``, ``dtp1``, ``gauss_newton``,
``checks`` {claim: bool} (:func:`demos.reports.bengio2020_checks`), ``figures``, ``config``,
``seconds``).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from circuits import ForwardNetwork
from circuits.target_propagation import (MirroredDecoder, TargetPropagation, contraction_rate,
                                         inverse_decoders, normalised_inverse_decoders,
                                         visited_region)
from solvers import solve
from workbench.plots import bengio2020_figures

from .config import (check_int, check_layer_widths, check_number, check_numbers,
                     dataclass_config, dataclass_flags, intra_op_threads, jsonable, run_cli)
from .reports import bengio2020 as report
from .reports import bengio2020_checks as checks
from .reports import fit_slope, write_summary

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


def problem(widths: Sequence[int], B: int, seed: int, activation: str = "tanh",
            init: str = "uniform", scale: float = 1.0):
    """A network and a batch ``(net, scale·x [B, n_0], y [B, n_L])`` drawn from ``seed``."""
    g = torch.Generator().manual_seed(10_000 + seed)
    x, y = (torch.randn(B, n, generator=g, dtype=F64) for n in (widths[0], widths[-1]))
    return ForwardNetwork(list(widths), activation, seed=seed, init=init), scale * x, y


def gap(a: torch.Tensor, b: torch.Tensor | float = 0.0) -> float:
    """``max |a − b|``."""
    return (a - b).abs().max().item()


def settle(c: TargetPropagation, y0, cfg: Config):
    """Integrate ``c`` from ``y0`` until it settles (``settle_dt``, up to ``settle_t1``)."""
    return solve(c, y0, 0.0, cfg.settle_t1, dt=cfg.settle_dt, atol=1e-14, rtol=1e-12,
                 progress=False)


def iterate(c: TargetPropagation, steps: int, divergence_bound: float = 1e6):
    """``steps`` unit Euler steps (dt = T = 1), every step recorded: the discrete iteration."""
    return solve(c, c.initial_state(), 0.0, float(steps), dt=1.0, steady_state=False,
                 save_every=1, observe=c.observe, divergence_bound=divergence_bound,
                 check_every=1, progress=False)


def convergence_case(cfg: Config, activation: str, rule: str, p: float) -> dict[str, Any]:
    """One layer to invert, one correction rule, one decoder perturbation."""
    n, tanh = cfg.width, activation != "linear"
    net, x, y = problem((n, n, n), 1, cfg.seed, activation, cfg.tanh_init if tanh else "uniform",
                        cfg.tanh_input_scale if tanh else 1.0)
    beta = cfg.tanh_beta if tanh else cfg.linear_beta
    c = TargetPropagation(net, x, y, rule=rule, beta=beta,
                          decoders=normalised_inverse_decoders(net, p, cfg.seed + 1))
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
    sol = settle(c, y0, cfg)
    moved = {k: sol.y1[k] - y0[k] for k in y0 if k[0] in "Wb"}
    ups = list(enumerate(c.dtp1_updates(sol.y1), start=1))
    dW = [gap(moved[f"W_{l}"], W) for l, (W, _) in ups]
    db = [gap(moved[f"b_{l}"], b) for l, (_, b) in ups]
    return {"status": sol.status_names()[0], "settle_time": sol.t_stop[0].item(),
            "max_abs_diff_W": dW, "max_abs_diff_b": db,
            "max_abs_dtp1_W": [gap(W) for _, (W, _) in ups],
            "max_abs_online_W": [gap(moved[f"W_{l}"]) for l, _ in ups],
            "max_abs_diff": max(dW + db), "max_abs_target_start_offset":
            max(gap(t, h) for t, h in zip(c.targets(y0), c.h))}


def dtp1_exactness(cfg: Config) -> dict[str, Any]:
    net, x, y = problem(cfg.dtp1_widths, cfg.dtp1_batch, cfg.seed, init=cfg.dtp1_init,
                        scale=cfg.dtp1_input_scale)
    dec = inverse_decoders(net, perturbation=cfg.dtp1_perturbation, seed=cfg.seed + 1)
    online = {"iterated_output": online_vs_dtp1(TargetPropagation(
        net, x, y, beta=cfg.dtp1_beta, decoders=dec, online_gamma=0.0), cfg)}
    # one example: (W + ΔW) r_{ℓ-1} + b + Δb = τ_ℓ exactly
    c = TargetPropagation(net, x[:1], y[:1], beta=cfg.dtp1_beta, decoders=dec)
    sol = settle(c, c.initial_state(), cfg)
    ups, taus = c.dtp1_updates(sol.y1), c.targets(sol.y1)
    residual = [gap(c.rates[l] @ (net.weights[l] + dW).transpose(-1, -2) + net.biases[l] + db,
                    taus[l]) for l, (dW, db) in enumerate(ups)]
    change = [gap(t, h) for t, h in zip(taus, c.h)]
    # one unit Euler step of iterated_output = DTP, the dtp rule's fixed point (mirrored g)
    dwidths = cfg.dtp_widths
    dnet, dx, dy = problem(dwidths, 1, cfg.seed)
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
    step_diff = {str(L - k): gap(dsol.ys[f"tau_{L - k}"][k + 1], dtp[f"tau_{L - k}"])
                 for k in range(1, L)}
    return {
        "online_vs_dtp1": online, "online_batch": cfg.dtp1_batch,
        "dtp1_target_residual": residual, "dtp1_target_change": change,
        "dtp1_settle_status": sol.status_names()[0], "euler_step_vs_dtp": step_diff,
        "dtp_step_size": {str(l): gap(dtp[f"tau_{l}"], dc.h[l - 1]) for l in range(1, L)},
        "max_online_diff": max(v["max_abs_diff"] for v in online.values()),
        "max_target_residual": max(residual), "max_euler_step_diff": max(step_diff.values()),
    }


def gauss_newton_alignment(cfg: Config) -> dict[str, Any]:
    widths = list(cfg.gn_widths)
    net, x, y = problem(widths, cfg.gn_batch, cfg.seed, init=cfg.gn_init,
                        scale=cfg.gn_input_scale)
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
                          "last_step_change": max(gap(a, b) for a, b in zip(tau, last)),
                          "finite": bool(all(torch.isfinite(t).all() for t in tau))}
        angles[name] = {str(l): a.tolist() for l, a in
                        enumerate(c.layer_target_angles(sol.y1)["gauss_newton"], start=1)}
    # the angle between the GN step and the backprop direction does not depend on β
    gn_vs_bp = c.layer_target_angles(c.gauss_newton_targets(0.0))["backprop"]
    order = sorted(range(len(betas)), key=lambda i: betas[i])[:cfg.gn_fit_points]

    def slopes(at):                     # per run and layer, over the betas indexed by ``at``
        return {name: {l: fit_slope([betas[i] for i in at], [a[i] for i in at])
                       for l, a in per.items()} for name, per in angles.items()}
    return {"betas": betas, "layers": list(range(1, L)), "angles_to_gauss_newton": angles,
            "slopes": slopes(order), "slopes_all_betas": slopes(range(len(betas))),
            "fitted_betas": [betas[i] for i in order],
            "gauss_newton_vs_backprop": {str(l): a[0].item() for l, a in
                                         enumerate(gn_vs_bp, start=1)},
            "runs": statuses,
            "network": {"widths": widths, "init": cfg.gn_init, "batch": cfg.gn_batch}}


def run(config: Config | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Run the three parts into ``out``; ``config`` is None (the defaults), a :class:`Config`
    or a mapping of its fields. Returns the summary (also written to ``out/summary.json``)."""
    cfg, out, start = load(config), Path(out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with intra_op_threads(1):
        conv, dtp1, gn = convergence(cfg), dtp1_exactness(cfg), gauss_newton_alignment(cfg)
        paths = bengio2020_figures(out, conv, dtp1, gn)
    summary = jsonable({"convergence": conv, "dtp1": dtp1, "gauss_newton": gn,
                        "checks": checks(conv, dtp1, gn), "figures": [p.name for p in paths],
                        "config": dataclasses.asdict(cfg), "seconds": time.perf_counter() - start})
    write_summary(out, summary)
    return summary


def passed(summary: Mapping[str, Any]) -> bool:
    return all(summary["checks"].values())


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
