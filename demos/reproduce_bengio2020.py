"""Reproducing Bengio (2020): iterated approximate inverses, DTP1, and Gauss-Newton targets.

    python -m demos.reproduce_bengio2020 --out DIR [--seed 0] [--betas 1e-1 1e-2 ...]
        [--perturbations 0.05 0.25 0.6 1.3] [--tanh-perturbations 0.05 0.1] [--steps 80]

Bengio (2020), "Deriving differential target propagation from iterating approximate inverses"
(SPEC §4, §5, oracles §8.5-8.6), run on :class:`circuits.target_propagation.TargetPropagation`
(float64; one unit Euler step dt = T = 1 of the settling dynamics is one iteration of the
paper's discrete algorithm). Three parts, each with a figure:

1. **Convergence of the iterated inverse** (``convergence.png``). One layer to invert (L = 2,
   square n×n weights), decoders ``g = φ⁻¹(M(h − b))`` with ``M = W⁻¹ + p·E/ρ(EW)``
   (:func:`normalised_decoders`: p is the spectral radius of the linearised linear iteration).
   Both corrections: on the decoder output (``iterated_output``, the iterate is τ_1, bound
   ``α = Lip(g∘f − I)``) and on the decoder input (``iterated_input``, the iterate is u_2 with
   τ_1 = g(u_2), ``α = Lip(f∘g − I)``). The error to the exact inverse (``τ_1* = f_2⁻¹(τ_2)``,
   ``u_2* = g⁻¹(τ_1*)``) against the iteration count, with the bound ``α^t``. Linear layers: α
   is a spectral norm; tanh layers: α is the largest Jacobian norm of the residual over the
   region the iterates visit (the iterates and the segments from each to the limit; the looser
   value over their bounding box is reported too). Per case: the measured rate (geometric mean
   of the per-step error ratios before round-off; also their maximum), α, the spectral radius ρ
   of the linearised iteration (what decides divergence when α > 1),
   converged yes/no. The largest perturbation has α > 1 (and ρ > 1) and diverges. (With these
   decoders ``f∘g(u) = W M (u − b) + b`` is linear even for tanh — φ⁻¹ and φ cancel — so only
   the tanh ``iterated_output`` case, ``g∘f``, is genuinely nonlinear.) The tanh layer is
   orthogonally initialised and fed x ~ N(0, ¼): near saturation g∘f − I is far from small.
2. **DTP1 exactness** (``dtp1.png``): the online rule ``dW/dt = τ̇ n ᵀ`` (γ = 0) integrated over
   a settle equals :meth:`TargetPropagation.dtp1_updates` (max abs difference per layer,
   ``iterated_output``, a batch); the DTP1-updated layer maps h_{ℓ-1} exactly onto τ_ℓ (one
   example); one unit Euler step of ``iterated_output`` equals difference target propagation
   (mirrored decoders ``g(h) = V φ(h) + c``). The online rule is refused under
   ``iterated_input``: its targets start at ``g_ℓ(h_ℓ) ≠ h_{ℓ-1}`` for an approximate decoder,
   so the integral would carry the reconstruction error (with decoder perturbation 0.1 the
   weights moved by 1e-2 at β = 1e-12) — use ``dtp1_updates`` after the settle there.
3. **Gauss-Newton alignment** (``gn_alignment.png``): on an invertible (square, orthogonally
   initialised tanh) network with exact inverse decoders, the angle between ``τ_ℓ − h_ℓ`` and the
   Gauss-Newton step (:func:`gauss_newton_targets`) shrinks in proportion to β (log-log slope
   ≈ 1, first order: fitted over the ``gn_fit_points`` smallest β, and over all of them). For
   contrast: one DTP step with approximate decoders stays a fixed angle off GN as β → 0,
   iterating the same approximate decoders to convergence recovers the
   exact-inverse targets, and the backprop direction is further off still.

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

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from circuits import ForwardNetwork  # noqa: E402
from circuits.credit import backprop  # noqa: E402
from circuits.target_propagation import (InverseDecoder, MirroredDecoder,  # noqa: E402
                                         TargetPropagation, gauss_newton_targets,
                                         inverse_decoders)
from solvers import solve  # noqa: E402

from .config import dataclass_config, intra_op_threads, run_cli  # noqa: E402
from .plots import layer_colour  # noqa: E402

F64 = torch.float64
RULES = ("iterated_output", "iterated_input")
# the per-step ratio may exceed a sampled Lipschitz constant by this much (relative): the sup over
# a region is approximated from below by sampling (linear cases: α is exact, 1e-9 is rounding)
SAMPLED_SLACK = 1e-6


@dataclass(frozen=True)
class Config:
    """The demo's parameters (the first few are also command-line flags)."""

    seed: int = 0
    # part 1: convergence of the iterated inverse
    width: int = 3                                   # n of the n-n-n layer to invert
    # decoder perturbation p = spectral radius of the linearised iteration (normalised_decoders)
    perturbations: tuple[float, ...] = (0.05, 0.25, 0.6, 1.3)   # linear layer (last: > 1)
    tanh_perturbations: tuple[float, ...] = (0.05, 0.1)
    tanh_init: str = "orthogonal"      # a well-conditioned layer, and x ~ N(0, s²) keeping tanh
    tanh_input_scale: float = 0.5      # off saturation, where g∘f − I is far from small
    linear_beta: float = 0.5
    tanh_beta: float = 0.05
    steps: int = 80                                  # unit Euler steps = iterations
    converged_below: float = 1e-8                    # error relative to the first iterate's
    roundoff_floor: float = 1e-11                    # ratios are measured above this (relative)
    lipschitz_samples: int = 400
    # part 2: DTP1
    dtp1_widths: tuple[int, ...] = (4, 5, 5, 5)
    dtp1_batch: int = 3
    dtp1_beta: float = 0.05
    dtp1_perturbation: float = 0.1
    dtp1_init: str = "orthogonal"      # as gn_init / gn_input_scale: inverse decoders need
    dtp1_input_scale: float = 0.5      # τ inside φ's range all along the settle
    dtp_widths: tuple[int, ...] = (5, 6, 6, 6, 3)
    settle_dt: float = 0.1
    settle_t1: float = 200.0
    # part 3: Gauss-Newton alignment
    betas: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
    gn_widths: tuple[int, ...] = (4, 4, 4, 4)
    gn_init: str = "orthogonal"        # uniform 4×4 layers often lose their inverse at β ≥ 0.03
    gn_batch: int = 1
    gn_input_scale: float = 0.5        # x ~ N(0, s²): keeps tanh off saturation, where a
    #                                    perturbed inverse φ⁻¹(M(h − b)) leaves atanh's domain
    gn_fit_points: int = 3             # the slope is fitted over this many smallest β
    gn_perturbation: float = 0.1       # the approximate decoders of the DTP contrast
    gn_steps: int = 60                 # unit Euler steps of the iterated inverse

    def __post_init__(self):
        for name in ("dtp1_widths", "dtp_widths", "gn_widths"):
            w = getattr(self, name)
            if len(w) < 3 or any(int(n) != n or n < 1 for n in w):
                raise ValueError(f"{name}: received {list(w)!r}, expected at least three "
                                 "positive integers [n_0, ..., n_L] (L ≥ 2)")
        for name in ("dtp1_widths", "gn_widths"):
            w = getattr(self, name)
            if len(set(w[1:])) != 1:
                raise ValueError(f"{name}: received {list(w)!r}, expected equal widths "
                                 "n_1 = ... = n_L (square layers have exact inverses)")
        for name in ("width", "steps", "lipschitz_samples", "dtp1_batch", "gn_batch",
                     "gn_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name}: received {v!r}, expected an integer ≥ 1")
        if self.steps < 3:
            raise ValueError(f"steps: received {self.steps!r}, expected ≥ 3")
        for name in ("linear_beta", "tanh_beta", "dtp1_beta", "settle_dt", "settle_t1",
                     "converged_below", "roundoff_floor", "tanh_input_scale",
                     "dtp1_input_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: received {v!r}, expected a finite number > 0")
        for name in ("perturbations", "tanh_perturbations", "betas"):
            vals = getattr(self, name)
            if not vals or any(not (math.isfinite(v) and v > 0) for v in vals):
                raise ValueError(f"{name}: received {list(vals)!r}, expected finite numbers > 0")
        if len(self.betas) < 2:
            raise ValueError(f"betas: received {list(self.betas)!r}, expected at least two "
                             "(a slope is fitted)")
        if isinstance(self.gn_fit_points, bool) or int(self.gn_fit_points) != self.gn_fit_points \
                or not 2 <= self.gn_fit_points:
            raise ValueError(f"gn_fit_points: received {self.gn_fit_points!r}, expected an "
                             "integer ≥ 2")
        if not (math.isfinite(self.gn_input_scale) and self.gn_input_scale > 0):
            raise ValueError(f"gn_input_scale: received {self.gn_input_scale!r}, expected a "
                             "finite number > 0")
        for name in ("dtp1_perturbation", "gn_perturbation"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: received {v!r}, expected a finite number ≥ 0")


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


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle between two vectors (flattened) in degrees, ``2 atan2(‖â − b̂‖, ‖â + b̂‖)``: accurate
    for tiny angles, where ``acos`` of a cosine near 1 is not."""
    a, b = a.flatten(), b.flatten()
    a, b = a / a.norm(), b / b.norm()
    return math.degrees(2 * math.atan2((a - b).norm().item(), (a + b).norm().item()))


# -- part 1: convergence of the iterated inverse ----------------------------------------------

def normalised_decoders(net: ForwardNetwork, p: float, seed: int) -> list[InverseDecoder]:
    """``g = φ⁻¹(M(h − b))`` with ``M = W⁻¹ + p E/ρ(E W)``, E the seeded perturbation direction of
    :func:`inverse_decoders`: the linearised iteration ``I − M W = −p E W/ρ(EW)`` then has
    spectral radius exactly p (for either correction: W M − I is similar to M W − I), so p means
    the same on every seed, and p > 1 diverges."""
    W = net.weights[1]
    E = inverse_decoders(net, perturbation=1.0, seed=seed)[0].M - torch.linalg.inv(W)
    rho = torch.linalg.eigvals(E @ W).abs().amax((-1,), keepdim=True)[..., None]
    M = torch.linalg.inv(W) + p * E / rho
    return [InverseDecoder(M, net.biases[1], net.activation(1))]


def convergence_case(cfg: Config, activation: str, rule: str, perturbation: float
                     ) -> dict[str, Any]:
    """One layer to invert, one correction rule, one decoder perturbation."""
    n = cfg.width
    tanh = activation != "linear"
    net = ForwardNetwork([n, n, n], activation, seed=cfg.seed,
                         init=cfg.tanh_init if tanh else "uniform")
    x, y = batch((n, n, n), 1, cfg.seed)
    x = (cfg.tanh_input_scale if tanh else 1.0) * x
    dec = normalised_decoders(net, perturbation, cfg.seed + 1)
    beta = cfg.linear_beta if activation == "linear" else cfg.tanh_beta
    c = TargetPropagation(net, x, y, rule=rule, beta=beta, decoders=dec)
    sol = iterate(c, cfg.steps, divergence_bound=1e100)
    g, b = dec[0], net.biases[1]
    exact = inverse_decoders(net)[0](c.output_target)                     # τ_1* = f_2⁻¹(τ_2)
    if rule == "iterated_output":
        star, path = exact, sol.ys["tau_1"]
    else:                                       # u_2* = g⁻¹(τ_1*) = b + M⁻¹ φ_1(τ_1*)
        phi = net.activation(1).phi(exact)
        star = b + torch.linalg.solve(g.M, phi.transpose(-1, -2)).transpose(-1, -2)
        path = sol.ys["u_2"]
    # from step 1 (τ_2 sits at its target from there); a replica that left φ⁻¹'s domain (NaN)
    # is rolled back and frozen by the solver: keep the steps before it stopped
    stopped = sol.status_names()[0] == "diverged"
    end = int(round(sol.t_stop[0].item())) if stopped else len(path)
    iterates = path[1:end, 0, 0]
    err = (iterates - star[0, 0]).norm(dim=-1)
    finite = torch.isfinite(err)
    err = torch.where(finite, err, torch.full_like(err, math.inf))
    e1 = err[0].item()

    def residual(v):                            # the iteration map is v ↦ v − residual(v) + const
        v2 = v[None, None]
        if rule == "iterated_output":
            return g(c.f(2, v2))[0, 0] - v
        return c.f(2, g(v2))[0, 0] - v

    jac = torch.func.vmap(torch.func.jacrev(residual))
    alpha_box = None
    if activation == "linear":
        # the residual's Jacobian is constant: M W − I (output) or W M − I (input)
        E = jac(star[0])[0]
        alpha = torch.linalg.matrix_norm(E, ord=2).item()
        how = "spectral norm of " + ("M W − I" if rule == "iterated_output" else "W M − I")
    else:
        path_pts, box = visited_region(iterates[finite], star[0, 0], cfg.lipschitz_samples,
                                       cfg.seed)
        E = jac(star[0])[0]
        alpha = jacobian_norm(jac, path_pts)
        alpha_box = jacobian_norm(jac, box)
        how = (f"max Jacobian norm of the residual over {len(path_pts)} points: the iterates "
               "and the segments from each to the limit")
    rho = torch.linalg.eigvals(E).abs().max().item()        # linearised iteration: −E
    # per-step ratios above round-off (and finite)
    usable = (err > cfg.roundoff_floor * e1) & torch.isfinite(err)
    k = int(usable.long().cumprod(0).sum().item())        # leading usable entries
    ratios = (err[1:k] / err[:k - 1]) if k >= 2 else err[:0]
    rate = (err[k - 1] / err[0]).item() ** (1.0 / (k - 1)) if k >= 2 else float("nan")
    max_ratio = ratios.max().item() if len(ratios) else float("nan")
    last = err[-1].item()
    converged = bool(math.isfinite(last) and last <= cfg.converged_below * e1)
    diverged = bool(stopped or not math.isfinite(last) or last >= 1e3 * e1)
    slack = 1e-9 if activation == "linear" else SAMPLED_SLACK
    return {
        "activation": activation, "rule": rule, "perturbation": perturbation, "beta": beta,
        "alpha": alpha, "alpha_measured_as": how, "alpha_bounding_box": alpha_box,
        "spectral_radius": rho,
        "rate": rate, "max_step_ratio": max_ratio, "ratios_measured": len(ratios),
        "rate_within_alpha": bool(len(ratios) > 0 and max_ratio <= alpha * (1 + slack)),
        "converged": converged, "diverged": diverged,
        "first_error": e1, "final_error": last if math.isfinite(last) else None,
        "errors": [v if math.isfinite(v) else None for v in err.tolist()],
    }


def visited_region(iterates: torch.Tensor, star: torch.Tensor, samples: int, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Points where Lip(residual) is measured: the iterates, the limit and 16 points on each
    segment from an iterate to the limit (the per-step ratio ‖m(u) − m(u*)‖/‖u − u*‖ is bounded by
    the Jacobian norm along that segment); and, as a looser alternative, ``samples`` uniform
    points of their bounding box widened by 10 %."""
    s = torch.linspace(0, 1, 16, dtype=F64)[:, None, None]
    segments = (iterates[None] + s * (star - iterates)[None]).reshape(-1, star.shape[-1])
    pts = torch.cat([iterates, star[None], segments])
    lo, hi = pts.min(0).values, pts.max(0).values
    pad = 0.1 * (hi - lo) + 1e-12
    g = torch.Generator().manual_seed(seed)
    box = lo - pad + (hi - lo + 2 * pad) * torch.rand(samples, star.shape[-1], generator=g,
                                                      dtype=F64)
    return pts, box


def jacobian_norm(jac, pts: torch.Tensor) -> float:
    """Largest spectral norm of ``jac`` over ``pts`` (points outside the decoder's domain, where
    φ⁻¹ is not finite, are skipped)."""
    J = jac(pts)
    ok = torch.isfinite(J).flatten(1).all(1)
    if not ok.any():
        return float("nan")
    return torch.linalg.matrix_norm(J[ok], ord=2).max().item()


def convergence(cfg: Config) -> list[dict[str, Any]]:
    cases = []
    for activation, perturbations in (("linear", cfg.perturbations),
                                      ("tanh", cfg.tanh_perturbations)):
        for rule in RULES:
            for p in perturbations:
                cases.append(convergence_case(cfg, activation, rule, p))
    return cases


# -- part 2: DTP1 ------------------------------------------------------------------------------

def online_vs_dtp1(net: ForwardNetwork, x: torch.Tensor, y: torch.Tensor, rule: str,
                   dec: Sequence[InverseDecoder], beta: float, cfg: Config,
                   dt: float | None = None) -> dict[str, Any]:
    """Settle with the online rule (γ = 0, η = 1) and compare the weight change with DTP1 of the
    settled targets (max abs difference per layer)."""
    c = TargetPropagation(net, x, y, rule=rule, beta=beta, decoders=dec, online_gamma=0.0)
    y0 = c.initial_state()
    sol = solve(c, y0, 0.0, cfg.settle_t1, dt=cfg.settle_dt if dt is None else dt, atol=1e-14,
                rtol=1e-12, progress=False)
    dW_diff, db_diff, size, moved = [], [], [], []
    for l, (dW, db) in enumerate(c.dtp1_updates(sol.y1), start=1):
        dW_diff.append((sol.y1[f"W_{l}"] - y0[f"W_{l}"] - dW).abs().max().item())
        db_diff.append((sol.y1[f"b_{l}"] - y0[f"b_{l}"] - db).abs().max().item())
        size.append(dW.abs().max().item())
        moved.append((sol.y1[f"W_{l}"] - y0[f"W_{l}"]).abs().max().item())
    start = max((t - h).abs().max().item() for t, h in zip(c.targets(y0), c.h))
    return {"status": sol.status_names()[0], "settle_time": sol.t_stop[0].item(),
            "max_abs_diff_W": dW_diff, "max_abs_diff_b": db_diff, "max_abs_dtp1_W": size,
            "max_abs_online_W": moved, "max_abs_diff": max(dW_diff + db_diff),
            "max_abs_target_start_offset": start}


def dtp1_exactness(cfg: Config) -> dict[str, Any]:
    widths = list(cfg.dtp1_widths)
    net = ForwardNetwork(widths, "tanh", seed=cfg.seed, init=cfg.dtp1_init)
    x, y = batch(widths, cfg.dtp1_batch, cfg.seed)
    x = cfg.dtp1_input_scale * x
    dec = inverse_decoders(net, perturbation=cfg.dtp1_perturbation, seed=cfg.seed + 1)
    online = {"iterated_output": online_vs_dtp1(net, x, y, "iterated_output", dec,
                                                cfg.dtp1_beta, cfg)}
    # one example: (W + ΔW) r_{ℓ-1} + b + Δb = τ_ℓ exactly
    c = TargetPropagation(net, x[:1], y[:1], beta=cfg.dtp1_beta, decoders=dec)
    sol = solve(c, c.initial_state(), 0.0, cfg.settle_t1, dt=cfg.settle_dt, atol=1e-14,
                rtol=1e-12, progress=False)
    residual, change = [], []
    for l, ((dW, db), tau) in enumerate(zip(c.dtp1_updates(sol.y1), c.targets(sol.y1)), start=1):
        moved = c.rates[l - 1] @ (net.weights[l - 1] + dW).transpose(-1, -2) \
            + net.biases[l - 1] + db
        residual.append((moved - tau).abs().max().item())
        change.append((tau - c.h[l - 1]).abs().max().item())
    # one unit Euler step of iterated_output = DTP (mirrored decoders)
    dwidths = list(cfg.dtp_widths)
    dnet = ForwardNetwork(dwidths, "tanh", seed=cfg.seed)
    dx, dy = batch(dwidths, 1, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    mirrored = [MirroredDecoder(torch.randn(1, dwidths[l - 1], dwidths[l], generator=gen,
                                            dtype=F64) / dwidths[l] ** 0.5,
                                torch.randn(1, 1, dwidths[l - 1], generator=gen, dtype=F64) / 10,
                                dnet.activation(l))
                for l in range(2, dnet.L + 1)]
    dc = TargetPropagation(dnet, dx, dy, beta=cfg.dtp1_beta, decoders=mirrored)
    dsol = iterate(dc, dnet.L)
    L, h = dnet.L, dc.h
    dtp = [None] * L
    dtp[L - 1] = dc.output_target
    for l in range(L - 1, 0, -1):                # τ_{ℓ-1} = g_ℓ(τ_ℓ) + h_{ℓ-1} − g_ℓ(h_ℓ)
        dtp[l - 1] = mirrored[l - 1](dtp[l]) + h[l - 1] - mirrored[l - 1](h[l])
    # the change reaches layer L − k at step k + 1 (the wave of the parallel iteration)
    step_diff = {str(L - k): (dsol.ys[f"tau_{L - k}"][k + 1] - dtp[L - k - 1]).abs().max().item()
                 for k in range(1, L)}
    step_size = {str(l): (dtp[l - 1] - h[l - 1]).abs().max().item() for l in range(1, L)}
    return {
        "online_vs_dtp1": online,
        "online_batch": cfg.dtp1_batch,
        "dtp1_target_residual": residual, "dtp1_target_change": change,
        "dtp1_settle_status": sol.status_names()[0],
        "euler_step_vs_dtp": step_diff, "dtp_step_size": step_size,
        "max_online_diff": max(v["max_abs_diff"] for v in online.values()),
        "max_target_residual": max(residual),
        "max_euler_step_diff": max(step_diff.values()),
    }


# -- part 3: Gauss-Newton alignment --------------------------------------------------------------

def gauss_newton_alignment(cfg: Config) -> dict[str, Any]:
    widths = list(cfg.gn_widths)
    net = ForwardNetwork(widths, "tanh", seed=cfg.seed, init=cfg.gn_init)
    x, y = batch(widths, cfg.gn_batch, cfg.seed)
    x = cfg.gn_input_scale * x
    L, betas = net.L, list(cfg.betas)
    fwd = net.forward(x)
    delta_L = fwd.dphi[-1] * (net.output_like(y) - fwd.r[-1])
    bp = backprop(net, fwd, delta_L)                                  # −∂ℒ/∂h_ℓ
    gn = [gauss_newton_targets(net, x, y, b) for b in betas]          # per β: [τ_1..τ_L]
    exact, approx = inverse_decoders(net), inverse_decoders(net, cfg.gn_perturbation,
                                                            seed=cfg.seed + 1)
    runs = {"exact_inverse_iterated": ("iterated_output", exact, cfg.gn_steps),
            "approximate_iterated": ("iterated_output", approx, cfg.gn_steps),
            "approximate_dtp_one_step": ("dtp", approx, L)}
    angles: dict[str, dict[str, list[float]]] = {}
    statuses: dict[str, Any] = {}
    for name, (rule, dec, steps) in runs.items():
        # all β at once, one replica each (S = len(betas))
        c = TargetPropagation(net, x, y, rule=rule, beta=betas, decoders=dec)
        sol = solve(c, c.initial_state(), 0.0, float(steps), dt=1.0, steady_state=False,
                    progress=False, divergence_bound=1e100)
        y1 = sol.y1
        tau = c.targets(y1)
        last = c.targets({k: v for k, v in solve(c, y1, 0.0, 1.0, dt=1.0, steady_state=False,
                                                   progress=False).y1.items()})
        statuses[name] = {"status": sorted(set(sol.status_names())),
                          "last_step_change": max((a - b).abs().max().item()
                                                  for a, b in zip(tau, last)),
                          "finite": bool(all(torch.isfinite(t).all() for t in tau))}
        angles[name] = {str(l): [angle_deg(tau[l - 1][s] - c.h[l - 1][s],
                                           gn[s][l - 1][0] - fwd.a[l - 1][0])
                                 for s in range(len(betas))] for l in range(1, L)}
    # the angle between the GN step and the backprop direction does not depend on β
    gn_vs_bp = {str(l): angle_deg(gn[0][l - 1][0] - fwd.a[l - 1][0], bp[l - 1][0])
                for l in range(1, L)}
    order = sorted(range(len(betas)), key=lambda i: betas[i])[:cfg.gn_fit_points]
    slopes = {name: {l: fit_slope([betas[i] for i in order], [a[i] for i in order])
                     for l, a in per.items()} for name, per in angles.items()}
    slopes_all = {name: {l: fit_slope(betas, a) for l, a in per.items()}
                  for name, per in angles.items()}
    return {"betas": betas, "layers": list(range(1, L)), "angles_to_gauss_newton": angles,
            "slopes": slopes, "slopes_all_betas": slopes_all,
            "fitted_betas": [betas[i] for i in order], "gauss_newton_vs_backprop": gn_vs_bp,
            "runs": statuses,
            "network": {"widths": widths, "init": cfg.gn_init, "batch": cfg.gn_batch}}


def fit_slope(betas: Sequence[float], angles: Sequence[float]) -> float | None:
    pts = [(math.log10(b), math.log10(a)) for b, a in zip(betas, angles)
           if math.isfinite(a) and a > 0]
    if len(pts) < 2:
        return None
    xs, ys = zip(*pts)
    return float(np.polyfit(xs, ys, 1)[0])


# -- figures ---------------------------------------------------------------------------------------

def convergence_figure(path: Path, cases: Sequence[Mapping[str, Any]]) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained", sharex=True)
    for i, activation in enumerate(("linear", "tanh")):
        for j, rule in enumerate(RULES):
            ax = axes[i, j]
            mine = [c for c in cases if c["activation"] == activation and c["rule"] == rule]
            for k, c in enumerate(mine):
                err = np.array([np.nan if v is None else v for v in c["errors"]])
                t = np.arange(len(err))
                colour = f"C{k}"
                ax.semilogy(t, err / err[0], color=colour, lw=1.8,
                            label=f"p = {c['perturbation']:g}: α = {c['alpha']:.3g}, "
                                  f"rate {c['rate']:.3g}")
                with np.errstate(over="ignore"):
                    bound = c["alpha"] ** t.astype(float)
                ax.semilogy(t, bound, color=colour, ls="--", lw=1)
            ax.set_ylim(1e-17, 1e8)
            ax.axhline(1.0, color="0.6", lw=0.6)
            ax.grid(alpha=0.3)
            what = "τ_1 − τ_1*  (g∘f − I)" if rule == "iterated_output" else "u_2 − u_2*  (f∘g − I)"
            ax.set_title(f"{activation}, {rule}: ‖{what}‖", fontsize="medium", loc="left")
            ax.legend(fontsize="small", loc="lower left")
            if j == 0:
                ax.set_ylabel("error / first error (log)")
            if i == 1:
                ax.set_xlabel("iteration t (unit Euler steps)")
    fig.suptitle("Iterated approximate inverses converge at rate ≤ α (dashed: α^t); α > 1 "
                 "diverges", fontsize="medium")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def dtp1_figure(path: Path, d: Mapping[str, Any]) -> Path:
    floor = 1e-18
    fig, ax = plt.subplots(figsize=(9.5, 5.6), layout="constrained")
    labels, values, colours = [], [], []
    for rule, r in d["online_vs_dtp1"].items():
        for l, (a, b) in enumerate(zip(r["max_abs_diff_W"], r["max_abs_diff_b"]), start=1):
            labels.append(f"online ({rule.split('_')[1]}) − DTP1, layer {l}")
            values.append(max(a, b))
            colours.append("tab:blue")
    for l, v in enumerate(d["dtp1_target_residual"], start=1):
        labels.append(f"DTP1-moved h_{l} − τ_{l}")
        values.append(v)
        colours.append("tab:green")
    for l, v in d["euler_step_vs_dtp"].items():
        labels.append(f"one Euler step − DTP, τ_{l}")
        values.append(v)
        colours.append("tab:orange")
    ax.barh(labels, [max(v, floor) for v in values], color=colours, left=floor)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1)
    ax.invert_yaxis()
    ax.axvline(1e-10, color="tab:red", ls="--", lw=1, label="1e-10")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_xlabel("max abs difference (log; exact zeros drawn at 1e-18)")
    ax.set_title("DTP1 and DTP are what the circuit computes, to rounding", fontsize="medium")
    ax.grid(alpha=0.3, axis="x")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


STYLES = {"exact_inverse_iterated": ("-", "o", "exact inverse, iterated"),
          "approximate_iterated": (":", "x", "approximate decoders, iterated to convergence"),
          "approximate_dtp_one_step": ("--", "s", "approximate decoders, one DTP step")}


def gn_figure(path: Path, d: Mapping[str, Any]) -> Path:
    fig, ax = plt.subplots(figsize=(8.5, 5.5), layout="constrained")
    betas = np.array(d["betas"])
    for name, per in d["angles_to_gauss_newton"].items():
        ls, marker, label = STYLES[name]
        for l, a in per.items():
            slope = d["slopes"][name][l]
            ax.loglog(betas, np.maximum(a, 1e-12), ls=ls, marker=marker,
                      color=layer_colour(int(l)),
                      label=f"{label}, layer {l} (slope {slope:.2f})")
    for l, a in d["gauss_newton_vs_backprop"].items():
        ax.axhline(a, color=layer_colour(int(l)), lw=0.8, alpha=0.6)
    ax.plot([], [], color="0.4", lw=0.8, label="GN vs backprop direction (per layer)")
    ax.set_xlabel("β (output nudge)")
    ax.set_ylabel("angle between τ_ℓ − h_ℓ and the Gauss-Newton step (degrees)")
    ax.set_title("Differential targets are Gauss-Newton steps to first order in β",
                 fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small", loc="lower right", ncol=1)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the demo ----------------------------------------------------------------------------------

def checks(conv: Sequence[Mapping[str, Any]], dtp1: Mapping[str, Any],
           gn: Mapping[str, Any]) -> dict[str, bool]:
    contracting = [c for c in conv if c["alpha"] < 1]
    expanding = [c for c in conv if c["spectral_radius"] > 1]
    exact = gn["angles_to_gauss_newton"]["exact_inverse_iterated"]
    approx_it = gn["angles_to_gauss_newton"]["approximate_iterated"]
    dtp = gn["angles_to_gauss_newton"]["approximate_dtp_one_step"]
    slopes = [s for s in gn["slopes"]["exact_inverse_iterated"].values()]
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
        "gn_angle_first_order_in_beta": all(s is not None and 0.8 <= s <= 1.2 for s in slopes),
        "gn_angle_small_at_smallest_beta": all(a[-1] < 0.1 for a in exact.values()),
        "iterating_approximate_decoders_recovers_exact_targets": all(
            abs(b[-1] - a[-1]) <= 1e-3 * a[-1] + 1e-9
            for a, b in zip(exact.values(), approx_it.values())),
        "one_dtp_step_stays_off_gn": all(d[-1] > 10 * a[-1]
                                         for a, d in zip(exact.values(), dtp.values())),
    }


def run(config: Config | Mapping[str, Any] | None, out: str | Path) -> dict[str, Any]:
    """Run the three parts into ``out``; ``config`` is None (the defaults), a :class:`Config`
    or a mapping of its fields. Returns the summary (also written to ``out/summary.json``)."""
    cfg = load(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with intra_op_threads(1):
        summary = _run(cfg, out)
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    return summary


def _finite(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _run(cfg: Config, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    conv = convergence(cfg)
    dtp1 = dtp1_exactness(cfg)
    gn = gauss_newton_alignment(cfg)
    figures = [convergence_figure(out / "convergence.png", conv),
               dtp1_figure(out / "dtp1.png", dtp1),
               gn_figure(out / "gn_alignment.png", gn)]
    summary = {
        "convergence": [{k: v for k, v in c.items()} for c in conv],
        "dtp1": dtp1,
        "gauss_newton": gn,
        "checks": checks(conv, dtp1, gn),
        "figures": [f.name for f in figures],
        "config": {k: list(v) if isinstance(v, tuple) else v
                   for k, v in dataclasses.asdict(cfg).items()},
        "seconds": time.perf_counter() - start,
    }
    return _finite(summary)


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
    d = summary["dtp1"]
    lines.append("2. DTP1 (max abs differences)")
    for rule, r in d["online_vs_dtp1"].items():
        lines.append(f"  online rule ({rule}) − DTP1: {r['max_abs_diff']:.2e} "
                     f"(DTP1 ΔW up to {max(r['max_abs_dtp1_W']):.2g})")
    lines.append("  DTP1-moved h_ℓ − τ_ℓ per layer: "
                 + ", ".join(f"{v:.1e}" for v in d["dtp1_target_residual"]))
    lines.append("  one Euler step − DTP per layer: "
                 + ", ".join(f"τ_{l} {v:.1e}" for l, v in d["euler_step_vs_dtp"].items()))
    g = summary["gauss_newton"]
    lines.append("3. angle to the Gauss-Newton step (degrees) at β = "
                 + " ".join(f"{b:g}" for b in g["betas"]))
    for name, per in g["angles_to_gauss_newton"].items():
        for l, a in per.items():
            lines.append(f"  {name:<25} layer {l}: " + " ".join(f"{v:.3g}" for v in a)
                         + f"   slope {g['slopes'][name][l]:.3f}")
    lines.append("  GN vs backprop direction: "
                 + ", ".join(f"layer {l} {a:.1f}°" for l, a in
                             g["gauss_newton_vs_backprop"].items()))
    lines.append("checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}"
                                        for k, v in summary["checks"].items()))
    lines.append(f"{summary['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m demos.reproduce_bengio2020",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of every network, batch and decoder perturbation")
    parser.add_argument("--betas", type=float, nargs="+", default=list(defaults.betas),
                        help="output nudges β of the Gauss-Newton sweep")
    parser.add_argument("--perturbations", type=float, nargs="+",
                        default=list(defaults.perturbations),
                        help="decoder perturbations p of the linear convergence cases")
    parser.add_argument("--tanh-perturbations", type=float, nargs="+",
                        default=list(defaults.tanh_perturbations),
                        help="decoder perturbations p of the tanh convergence cases")
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help="iterations of the convergence cases")

    def make_config(args):
        return Config(seed=args.seed, betas=tuple(args.betas),
                      perturbations=tuple(args.perturbations),
                      tanh_perturbations=tuple(args.tanh_perturbations), steps=args.steps)

    return run_cli(parser, argv, make_config, run, report)


if __name__ == "__main__":
    sys.exit(0 if passed(main()) else 1)
