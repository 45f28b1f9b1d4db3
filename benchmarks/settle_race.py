"""Settle race: how fast does a sweep of circuits reach its steady state, against hand-written and
library alternatives?

Sweeps (float64, one example, one shared network per sweep):

* ``di_leak_1024``: :class:`circuits.DynamicInversion` on a linear ``[30, 20, 10]`` network with
  U(−0.2, 0.2) weights (``init="uniform", scale=0.2``), feedback ``B = −Wᵀ``, k_i = 1, k_p = 0,
  S = 1024 replicas with the leak α log-spaced in [1e-3, 1]. Euler dt = 0.5 (Podlaski & Machens).
* ``di_leak_16384``: the same at S = 16 384 (``--skip-large`` omits it).
* ``dfc_tanh``: :class:`circuits.DeepFeedbackControl` on a tanh ``[30, 20, 10]`` network (default
  U(±1/√n_in) weights, no biases), the class's defaults otherwise (weak target, nudge 0.1,
  τ_v = 0.2, τ_u = 1, k_i = 1, leak on the integral state, Jacobian feedback Q = Jᵀ), a 32 × 32
  grid of k_p ∈ [0.1, 10] × α ∈ [1e-3, 1] (log-spaced, k_p slow). Euler dt = ``DFC_DT``.

Contestants:

* ``numba_fixed`` / ``numba_stop``: :mod:`benchmarks.numba_loops`, one njit Euler loop over the
  replicas; fixed steps, or solve's stopping rule applied per replica.
* ``torchdiffeq``: ``torchdiffeq.odeint(method="dopri5")``, one S = 1 circuit at a time on the flat
  state, timed on ``--loop-replicas`` evenly spaced replicas and extrapolated to S (median × S).
* ``torchode``: batched Dopri5 + IntegralController, one sample per replica (its own steps).
* ``solve_euler``: ``solve(method="euler", dt, steady_state=True, check_every=10)``.
* ``solve_fastest``: the fastest of the :data:`FASTEST` candidates that meets the tolerance
  (Euler at the authors' dt; Euler near its stability bound; ``method="auto"``, which is the exact
  affine flow on a doubling grid for DI and exponential Euler for DFC), every candidate timed
  and reported under ``to_tolerance.solve_candidates``. All of them shrink the batch as
  replicas stop (``solve``'s default ``compact=0.5``).

Measurements per sweep:

* ``equal_work``: numba_fixed vs ``solve(method="euler", steady_state=False)`` over the same
  Euler steps (1000); µs per replica-step, ``ratio_vs_numba = numba / solve`` (> 1: solve is
  faster), and their agreement (max relative difference per replica, must be < 1e-9).
* ``to_tolerance``: the reference steady state y* per replica (DI: the closed form; DFC: Newton's
  method on f(y) = 0 from the linearised closed form), each contestant's wall time to its stop and
  ``worst_relative_error = max ‖y − y*‖/‖y*‖`` over replicas not flagged diverged (counted
  separately). Ratios are contestant time / solve_fastest time.

Tolerances. The stopping rule bounds ``‖f(y)‖ ≤ atol + rtol ‖y‖``; near y*, ``y − y* ≈ J⁻¹ f``, so
``‖y − y*‖ ≤ ‖J⁻¹‖₂ ‖f‖``. With atol = 0 and ``rtol = goal · safety / max_s ‖J_s⁻¹‖₂`` (J at y*,
goal 1e-6, safety 0.5) every replica stops within about the goal. The horizon is
``HORIZON_RATES / (slowest rate)``, the slowest rate being ``min_s −max Re λ(J_s)``.

Run from the repository root::

    python -m benchmarks.settle_race --out DIR            # all three sweeps
    python -m benchmarks.settle_race --out DIR --quick    # S = 64, 8 × 8 grid: a smoke test

Writes ``DIR/summary.json``: ``{"machine": …, "config": …, "fastest": FASTEST, "sweeps": {NAME:
{"problem", "tolerances", "compile_seconds", "equal_work", "to_tolerance"}}}``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchdiffeq

from circuits import DeepFeedbackControl, DynamicInversion, ForwardNetwork
from circuits.stability import jacobian
from solvers import Layout, solve

from .di_batched import load_average, machine_info

#: Candidates for the contestant ``solve_fastest``: named keyword arguments of
#: :func:`solvers.solve` per circuit kind (``atol``, ``rtol`` and ``steady_state=True`` are added
#: by the race unless given here). Each is timed; the fastest that meets the tolerance (every
#: replica within GOAL of y*, no replica flagged that is stable in continuous time) is
#: ``solve_fastest`` and its exact call is written to ``to_tolerance.solve_kwargs``.
#: ``"dt": NEAR_BOUND`` is replaced by 0.9 × the smallest Euler stability bound of the sweep
#: (at y* and at the start, from the Jacobians' eigenvalues; two significant digits).
DFC_DT = 0.025
NEAR_BOUND = "near_bound"
FASTEST: dict[str, dict[str, dict[str, Any]]] = {
    "di": {
        "euler": dict(method="euler", dt=0.5, check_every=10),
        "euler_near_bound": dict(method="euler", dt=NEAR_BOUND, check_every=10),
        "auto": dict(method="auto", dt=0.5),             # the exact affine flow, doubling steps
    },
    "dfc": {
        "euler": dict(method="euler", dt=DFC_DT, check_every=10),
        "euler_near_bound": dict(method="euler", dt=NEAR_BOUND, check_every=10),
        "auto": dict(method="auto", dt=DFC_DT, check_every=10),
    },
}

DI_DT = 0.5                 # Podlaski & Machens: τ_u = τ_δ = 1, dt = 0.5, 1000 steps
FIXED_STEPS = 1000
CHECK_EVERY = 10
GOAL = 1e-6                 # final state within this relative distance of y*
SAFETY = 0.5
HORIZON_RATES = 20.0        # horizon = this many slowest time constants (e^-20 ≈ 2e-9)
AGREE = 1e-9                # numba vs solve, relative, at equal steps
ADAPTIVE_RTOL = 1e-8        # torchdiffeq / torchode
ADAPTIVE_ATOL = 1e-10
WIDTHS = [30, 20, 10]


# -- the sweeps ------------------------------------------------------------------------------------

class Sweep:
    """A family of S circuits on one network: ``build(idx)`` makes the circuit of the replicas
    ``idx`` (all when None)."""

    def __init__(self, name: str, kind: str, S: int, dt: float, build: Callable, problem: dict):
        self.name, self.kind, self.S, self.dt = name, kind, S, dt
        self.build, self.problem = build, problem


def _example(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, WIDTHS[0], generator=g, dtype=torch.float64)
    target = torch.randn(1, WIDTHS[-1], generator=g, dtype=torch.float64)
    return x, target


def _pick(values: torch.Tensor, idx) -> torch.Tensor:
    return values if idx is None else values[torch.as_tensor(idx, dtype=torch.long)]


def di_sweep(S: int) -> Sweep:
    net = ForwardNetwork(WIDTHS, "linear", bias=False, init="uniform", scale=0.2, seed=0)
    x, target = _example()
    alpha = torch.logspace(-3, 0, S, dtype=torch.float64)

    def build(idx=None):
        return DynamicInversion(net, x, target, alpha=_pick(alpha, idx), k_i=1.0, k_p=0.0)

    return Sweep(f"di_leak_{S}", "di", S, DI_DT, build, {
        "circuit": "DynamicInversion", "widths": WIDTHS, "activation": "linear", "bias": False,
        "weights": "U(-0.2, 0.2) (init='uniform', scale=0.2, seed=0)", "feedback": "transpose",
        "k_i": 1.0, "k_p": 0.0, "tau_u": 1.0, "tau_delta": 1.0, "alpha": [1e-3, 1.0],
        "alpha_spacing": "torch.logspace(-3, 0, S)", "example": "x ~ N(0,1) [1, 30], target ~ "
        "N(0,1) [1, 10], torch.Generator seed 1", "replicas": S, "dt": DI_DT})


def dfc_sweep(grid: int) -> Sweep:
    net = ForwardNetwork(WIDTHS, "tanh", bias=False, seed=0)
    x, target = _example()
    kp = torch.logspace(-1, 1, grid, dtype=torch.float64)
    alpha = torch.logspace(-3, 0, grid, dtype=torch.float64)
    K, A = torch.meshgrid(kp, alpha, indexing="ij")
    K, A = K.reshape(-1), A.reshape(-1)

    def build(idx=None):
        return DeepFeedbackControl(net, x, target, k_p=_pick(K, idx), alpha=_pick(A, idx))

    return Sweep("dfc_tanh", "dfc", grid * grid, DFC_DT, build, {
        "circuit": "DeepFeedbackControl", "widths": WIDTHS, "activation": "tanh",
        "output_activation": "linear", "bias": False,
        "weights": "U(±1/sqrt(n_in)) (init='uniform', default scale, seed=0)",
        "target_mode": "weak", "nudge": 0.1, "tau_v": 0.2, "tau_u": 1.0, "k_i": 1.0,
        "leak": "integral", "feedback": "jacobian (Q = J^T at the feed-forward pass)",
        "grid": [grid, grid], "k_p": [0.1, 10.0], "alpha": [1e-3, 1.0],
        "order": "k_p slow, alpha fast (log-spaced)", "example": "as the DI sweeps",
        "replicas": grid * grid, "dt": DFC_DT})


# -- reference steady state, rates, tolerances -----------------------------------------------------

def _field_flat(circuit, layout: Layout, Y: torch.Tensor) -> torch.Tensor:
    """``f`` on a replica-major state ``[S, D]``."""
    return layout.pack_by_replica(circuit.vector_field(0.0, layout.unpack_by_replica(Y)))


def reference(sweep: Sweep, circuit, layout: Layout) -> tuple[torch.Tensor, dict]:
    """y* ``[S, D]`` and how it was obtained (residual ``max ‖f(y*)‖/‖y*‖``)."""
    star = circuit.steady_state()
    Y = layout.pack_by_replica({n: star[n] for n in layout.names})
    how = "closed form (NDI)" if sweep.kind == "di" else \
        "Newton on f(y) = 0 from the linearised closed form"
    iterations = 0
    if sweep.kind == "dfc":
        for iterations in range(1, 31):
            J = jacobian(circuit, layout.unpack_by_replica(Y))
            F = _field_flat(circuit, layout, Y)
            Y = Y - torch.linalg.solve_ex(J, F[..., None])[0][..., 0]
            res = (_field_flat(circuit, layout, Y).norm(dim=1) / Y.norm(dim=1)).nan_to_num(
                nan=math.inf).max().item()
            if res < 1e-14:
                break
    res = (_field_flat(circuit, layout, Y).norm(dim=1) / Y.norm(dim=1)).max().item()
    return Y, {"reference": how, "newton_iterations": iterations,
               "reference_residual_max": res}


def tolerances(sweep: Sweep, circuit, layout: Layout, Y_star: torch.Tensor) -> dict:
    """atol, rtol, horizon from the Jacobian at y*; Euler's stability bound for the sweep's dt."""
    J = jacobian(circuit, layout.unpack_by_replica(Y_star))
    ev = torch.linalg.eigvals(J)
    abscissa = ev.real.amax(-1)
    stable = abscissa < 0
    rate = -abscissa
    inv_norm = 1.0 / torch.linalg.svdvals(J)[:, -1]
    # forward Euler is stable iff |1 + dt λ| < 1 for every λ: dt < −2 Re λ / |λ|²
    bound = torch.where(ev.real < 0, -2 * ev.real / ev.abs() ** 2,
                        torch.zeros_like(ev.real)).amin(-1)
    J0 = jacobian(circuit, circuit.initial_state())
    ev0 = torch.linalg.eigvals(J0)
    bound0 = torch.where(ev0.real < 0, -2 * ev0.real / ev0.abs() ** 2,
                         torch.zeros_like(ev0.real)).amin(-1)
    max_inv = inv_norm[stable].max().item() if stable.any() else math.inf
    slowest = rate[stable].min().item() if stable.any() else math.nan
    dt = sweep.dt
    horizon_steps = CHECK_EVERY * math.ceil(HORIZON_RATES / slowest / dt / CHECK_EVERY)
    return {
        "goal_relative_error": GOAL, "safety": SAFETY, "atol": 0.0,
        "rtol": GOAL * SAFETY / max_inv,
        "rule": "rtol = goal * safety / max_s ||J_s^-1||_2 (J at y*), atol = 0",
        "max_inverse_jacobian_norm": max_inv,
        "slowest_rate": slowest, "fastest_slow_rate": rate[stable].max().item(),
        "horizon_rates": HORIZON_RATES, "t1": horizon_steps * dt, "max_steps": horizon_steps,
        "continuous_time_unstable": int((~stable).sum()),
        "euler_dt": dt, "euler_dt_bound_min_at_star": bound.min().item(),
        "euler_dt_bound_min_at_start": bound0.min().item(),
        "replicas_beyond_euler_bound": int(((bound <= dt) | (bound0 <= dt)).sum()),
        "adaptive_rtol": ADAPTIVE_RTOL, "adaptive_atol": ADAPTIVE_ATOL,
        "_stable": stable,
    }


# -- helpers ---------------------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def relative_errors(Y: torch.Tensor, Y_ref: torch.Tensor) -> torch.Tensor:
    """``‖y − y_ref‖ / ‖y_ref‖`` per replica (rows)."""
    Y = torch.as_tensor(np.asarray(Y)) if not isinstance(Y, torch.Tensor) else Y
    return (Y - Y_ref).norm(dim=1) / Y_ref.norm(dim=1)


def summary_stats(values) -> dict:
    v = [float(x) for x in values]
    return {"median": statistics.median(v), "max": max(v), "min": min(v)} if v else {}


def worst(err: torch.Tensor, keep: torch.Tensor) -> float | None:
    e = err[keep]
    if e.numel() == 0:
        return None
    return float(e.nan_to_num(nan=math.inf).max())


def kernel_for(sweep: Sweep, circuit):
    from .numba_loops import DFCKernel, DIKernel
    return DIKernel(circuit) if sweep.kind == "di" else DFCKernel(circuit)


def torchdiffeq_one(circuit, t1: float, calls: list[int]) -> torch.Tensor:
    """One S = 1 circuit with dopri5; the final state ``[1, D]`` (replica-major)."""
    y0 = circuit.initial_state()
    layout = Layout(y0)

    def f(t, y):
        calls[0] += 1
        return layout.pack(circuit.vector_field(t, layout.unpack(y)))

    span = torch.tensor([0.0, t1], dtype=torch.float64)
    final = torchdiffeq.odeint(f, layout.pack(y0), span, method="dopri5", rtol=ADAPTIVE_RTOL,
                               atol=ADAPTIVE_ATOL)[-1]
    return layout.pack_by_replica(layout.unpack(final))


def make_torchode(circuit, layout: Layout):
    import torchode as to

    def f(t, Y):
        return _field_flat(circuit, layout, Y)

    term = to.ODETerm(f)
    step = to.Dopri5(term=term)
    control = to.IntegralController(atol=ADAPTIVE_ATOL, rtol=ADAPTIVE_RTOL, term=term)
    solver = to.AutoDiffAdjoint(step, control)

    def run(Y0: torch.Tensor, t1: float):
        S = Y0.shape[0]
        problem = to.InitialValueProblem(
            y0=Y0, t_start=torch.zeros(S, dtype=torch.float64),
            t_end=torch.full((S,), float(t1), dtype=torch.float64))
        return solver.solve(problem)
    return run


# -- one sweep -------------------------------------------------------------------------------------

def run_sweep(sweep: Sweep, args) -> dict:
    S, dt = sweep.S, sweep.dt
    print(f"\n== {sweep.name}: {sweep.problem['circuit']}, S = {S}, Euler dt = {dt}", flush=True)
    t_build, circuit = timed(lambda: sweep.build())
    y0 = circuit.initial_state()
    layout = Layout(y0)
    D = layout.size
    Y0 = layout.pack_by_replica(y0)

    Y_star, ref_info = reference(sweep, circuit, layout)
    tol = tolerances(sweep, circuit, layout, Y_star)
    stable = tol.pop("_stable")
    tol.update(ref_info)
    atol, rtol, t1, max_steps = tol["atol"], tol["rtol"], tol["t1"], tol["max_steps"]
    print(f"reference: {ref_info['reference']} (residual {ref_info['reference_residual_max']:.1e})"
          f"; slowest rate {tol['slowest_rate']:.4g}, max ‖J⁻¹‖ "
          f"{tol['max_inverse_jacobian_norm']:.4g} → atol 0, rtol {rtol:.3g}; horizon t1 = "
          f"{t1:g} ({max_steps} Euler steps); Euler dt bound ≥ "
          f"{min(tol['euler_dt_bound_min_at_star'], tol['euler_dt_bound_min_at_start']):.4g}",
          flush=True)
    if tol["continuous_time_unstable"]:
        print(f"WARNING: {tol['continuous_time_unstable']} replicas are unstable in continuous "
              "time (excluded from the errors)")

    # -- numba: compile ----------------------------------------------------------------------------
    kernel = kernel_for(sweep, circuit)
    compile_s = kernel.compile_seconds()
    print(f"numba compile + first call: {compile_s:.2f} s", flush=True)

    # -- equal work --------------------------------------------------------------------------------
    N = FIXED_STEPS
    T_fixed = N * dt

    def numba_fixed():
        return kernel.run(N, dt, stop=False, check_every=CHECK_EVERY)

    def solve_fixed():
        return solve(circuit, y0, 0.0, T_fixed, dt=dt, method="euler", steady_state=False,
                     check_every=CHECK_EVERY, progress=False)

    runners = {"numba_fixed": numba_fixed, "solve": solve_fixed}
    times: dict[str, list[float]] = {k: [] for k in runners}
    results: dict[str, Any] = {}
    for name, fn in runners.items():          # warm-up
        _, results[name] = timed(fn)
    for _ in range(args.repeats):
        for name, fn in runners.items():
            t, results[name] = timed(fn)
            times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    Yn, steps_n, status_n = results["numba_fixed"]
    sol = results["solve"]
    Ys = layout.pack_by_replica(sol.y1)
    keep = torch.as_tensor(status_n != 2) & (sol.status != 2)
    rel = relative_errors(torch.as_tensor(Yn), Ys)
    max_rel = worst(rel, keep)
    same_status = bool((torch.as_tensor(status_n) == sol.status).all())
    agree = max_rel is not None and max_rel < AGREE and same_status
    equal_work = {
        "steps": N, "dt": dt, "t1": T_fixed,
        "seconds": med, "seconds_all": times,
        "us_per_replica_step": {k: v / (S * N) * 1e6 for k, v in med.items()},
        "ratio_vs_numba": med["numba_fixed"] / med["solve"],
        "max_relative_difference": max_rel, "same_status": same_status,
        "agree_within": AGREE, "agree": agree,
        "diverged": {"numba_fixed": int((status_n == 2).sum()),
                     "solve": int(sol.counts()["diverged"])},
        "solve_steps": sol.stats["steps"],
        "order": "plain forward Euler on both sides (y += dt f(y))",
    }
    print(f"equal work ({N} steps): numba {med['numba_fixed']:.4f} s, solve {med['solve']:.4f} s "
          f"→ ratio_vs_numba {equal_work['ratio_vs_numba']:.3f}; max rel diff {max_rel:.2e}, "
          f"diverged {equal_work['diverged']}", flush=True)
    if sweep.kind == "di":
        # the authors' order (controller first, the new controller drives δ), for information
        t_cf, (Ycf, _, st_cf) = timed(lambda: kernel.run(N, dt, controller_first=True))
        Y20, _, _ = kernel.run(20, dt)
        Ycf20, _, _ = kernel.run(20, dt, controller_first=True)
        equal_work["controller_first"] = {
            "seconds": t_cf,
            "relative_difference_to_plain_euler_after_20_steps": float(
                relative_errors(torch.as_tensor(Ycf20), torch.as_tensor(Y20)).max()),
            "relative_difference_to_plain_euler_after_N_steps": float(
                relative_errors(torch.as_tensor(Ycf), torch.as_tensor(Yn)).max()),
            "relative_error_to_star_after_N_steps": float(
                relative_errors(torch.as_tensor(Ycf), Y_star)[stable].max()),
            "diverged": int((st_cf == 2).sum()),
            "note": "Podlaski & Machens' step order (u first, then δ from the new u) is "
                    "semi-implicit Euler, not solve's forward Euler: it is not used in the "
                    "agreement check.",
        }

    # -- to tolerance ------------------------------------------------------------------------------
    bound = min(tol["euler_dt_bound_min_at_star"], tol["euler_dt_bound_min_at_start"])
    near = float(f"{0.9 * bound:.2g}")
    candidates = {name: {"steady_state": True, "atol": atol, "rtol": rtol,
                         **{k: (near if v == NEAR_BOUND else v) for k, v in kw.items()}}
                  for name, kw in FASTEST[sweep.kind].items()}
    euler_kwargs = dict(method="euler", dt=dt, steady_state=True, check_every=CHECK_EVERY,
                        atol=atol, rtol=rtol)
    ode_run = make_torchode(circuit, layout)

    def solver(kwargs):
        return lambda T: solve(circuit, y0, 0.0, T, progress=False, **kwargs)

    contestants = {
        # the same number of steps as solve takes to t1 (its grid: ceil(t1/dt − 1e-9))
        "numba_stop": lambda T: kernel.run(max(1, math.ceil(T / dt - 1e-9)), dt, stop=True,
                                           atol=atol, rtol=rtol, check_every=CHECK_EVERY),
        "solve_euler": solver(euler_kwargs),
        **{f"solve:{name}": solver(kw) for name, kw in candidates.items()},
        "torchode": lambda T: ode_run(Y0, T),
    }
    warm_T = CHECK_EVERY * dt * 2
    tt: dict[str, list[float]] = {k: [] for k in contestants}
    out: dict[str, Any] = {}
    with torch.no_grad():
        for name, fn in contestants.items():      # warm-up on a short horizon
            fn(warm_T)
        for _ in range(args.repeats):
            for name, fn in contestants.items():
                t, out[name] = timed(lambda: fn(t1))
                tt[name].append(t)
                print(f"  {name:14s} {t:9.4f} s", flush=True)
    secs = {k: statistics.median(v) for k, v in tt.items()}

    finals: dict[str, torch.Tensor] = {}
    flagged: dict[str, torch.Tensor] = {}
    not_converged: dict[str, int] = {}
    steps: dict[str, dict] = {}
    Yns, steps_ns, status_ns = out["numba_stop"]
    finals["numba_stop"] = torch.as_tensor(Yns)
    flagged["numba_stop"] = torch.as_tensor(status_ns == 2)
    not_converged["numba_stop"] = int((status_ns == 0).sum())
    steps["numba_stop"] = summary_stats(steps_ns)
    # solve_fastest: the fastest candidate that meets the goal on every stable replica
    tried = {}
    for name in candidates:
        s = out[f"solve:{name}"]
        err = worst(relative_errors(layout.pack_by_replica(s.y1), Y_star), (s.status != 2) & stable)
        ok = err is not None and err <= GOAL and not bool(((s.status == 2) & stable).any()) \
            and int(s.counts()["reached_t1"]) == 0
        tried[name] = {"seconds": secs[f"solve:{name}"], "worst_relative_error": err,
                       "meets_goal": ok, "solve_kwargs": {"t0": 0.0, "t1": t1,
                                                          **candidates[name]},
                       "steps": s.stats["steps"], "replica_steps": s.stats["replica_steps"],
                       "compactions": s.stats["compactions"]}
    winner = min((n for n in tried if tried[n]["meets_goal"]),
                 key=lambda n: tried[n]["seconds"], default=next(iter(candidates)))
    solve_kwargs = candidates[winner]
    out["solve_fastest"] = out[f"solve:{winner}"]
    secs["solve_fastest"] = secs[f"solve:{winner}"]
    print(f"  solve_fastest = {winner}: " + ", ".join(
        f"{n} {v['seconds']:.4f} s ({'ok' if v['meets_goal'] else 'misses the goal'})"
        for n, v in tried.items()), flush=True)
    for name in ("solve_euler", "solve_fastest"):
        s = out[name]
        finals[name] = layout.pack_by_replica(s.y1)
        flagged[name] = s.status == 2
        not_converged[name] = int(s.counts()["reached_t1"])
        h = s.stats.get("dt") or dt
        steps[name] = {"loop_steps": s.stats["steps"], "evaluations": s.stats["evaluations"],
                       "per_replica_stop_time": summary_stats(s.t_stop.tolist()),
                       "per_replica_steps": summary_stats((s.t_stop / h).round().tolist())}
    so = out["torchode"]
    finals["torchode"] = so.ys[:, -1]
    flagged["torchode"] = (so.status != 0) | ~torch.isfinite(so.ys[:, -1]).all(dim=1)
    not_converged["torchode"] = 0
    steps["torchode"] = {"per_replica_steps": summary_stats(so.stats["n_steps"].tolist()),
                         "batch_evaluations": int(so.stats["n_f_evals"].max()),
                         "note": "torchode evaluates the whole batch until the last replica "
                                 "reaches t1; steps are per replica"}

    # numba_stop and solve_euler apply the same rule to the same Euler trajectory
    same_stop = bool((torch.as_tensor(steps_ns) ==
                      (out["solve_euler"].t_stop / dt).round().long()).all())
    stop_diff = worst(relative_errors(finals["numba_stop"], finals["solve_euler"]),
                      ~flagged["numba_stop"] & ~flagged["solve_euler"])

    # -- torchdiffeq, one replica at a time --------------------------------------------------------
    n_loop = min(args.loop_replicas, S)
    idx = sorted({round(i * (S - 1) / max(n_loop - 1, 1)) for i in range(n_loop)})
    with torch.no_grad():
        torchdiffeq_one(sweep.build([idx[0]]), warm_T, [0])          # warm-up
        td_times, td_build, td_final, td_calls = [], [], [], []
        for s in idx:
            tb, c1 = timed(lambda: sweep.build([s]))
            calls = [0]
            ti, y1 = timed(lambda: torchdiffeq_one(c1, t1, calls))
            td_build.append(tb)
            td_times.append(ti)
            td_final.append(y1)
            td_calls.append(calls[0])
            print(f"  torchdiffeq    replica {s}: {ti:.4f} s, {calls[0]} evaluations", flush=True)
    td_per = statistics.median(td_times)
    secs["torchdiffeq"] = td_per * S if len(idx) < S else sum(td_times)
    idx_t = torch.as_tensor(idx)
    td_Y = torch.cat(td_final)
    td_flag = ~torch.isfinite(td_Y).all(dim=1)
    steps["torchdiffeq"] = {"per_replica_evaluations": summary_stats(td_calls)}

    # -- errors ------------------------------------------------------------------------------------
    errors, diverged = {}, {}
    for name in list(secs):
        if name.startswith("solve:"):
            secs.pop(name)
    for name, Y in finals.items():
        err = relative_errors(Y, Y_star)
        errors[name] = worst(err, ~flagged[name] & stable)
        diverged[name] = int(flagged[name].sum())
    td_err = relative_errors(td_Y, Y_star[idx_t])
    errors["torchdiffeq"] = worst(td_err, ~td_flag & stable[idx_t])
    diverged["torchdiffeq"] = int(td_flag.sum())
    not_converged["torchdiffeq"] = 0

    fast = secs["solve_fastest"]
    to_tol = {
        "seconds": secs, "seconds_all": tt,
        "ratio_vs_numba": secs["numba_stop"] / fast,
        "ratio_vs_torchdiffeq": secs["torchdiffeq"] / fast,
        "ratio_vs_torchode": secs["torchode"] / fast,
        "ratio_vs_solve_euler": secs["solve_euler"] / fast,
        "worst_relative_error": errors,
        "worst_relative_error_note": "max over replicas of ||y - y*|| / ||y*||, diverged and "
                                     "continuous-time-unstable replicas excluded; torchdiffeq "
                                     "over its timed subset only",
        "diverged": diverged, "not_converged": not_converged, "steps": steps,
        "solve_kwargs": {"t0": 0.0, "t1": t1, **solve_kwargs},
        "solve_fastest": winner, "solve_candidates": tried,
        "solve_euler_kwargs": {"t0": 0.0, "t1": t1, **euler_kwargs},
        "numba_stop_vs_solve_euler": {"same_stop_steps": same_stop,
                                      "max_relative_difference": stop_diff},
        "torchdiffeq": {"method": "dopri5", "rtol": ADAPTIVE_RTOL, "atol": ADAPTIVE_ATOL,
                        "t1": t1, "replicas_timed": idx, "extrapolated": len(idx) < S,
                        "extrapolation": "median seconds per replica × S" if len(idx) < S
                        else "sum over all replicas",
                        "per_replica_seconds": td_times,
                        "per_replica_median_seconds": td_per,
                        "build_per_replica_median_seconds": statistics.median(td_build)},
        "torchode": {"method": "Dopri5", "controller": "IntegralController",
                     "rtol": ADAPTIVE_RTOL, "atol": ADAPTIVE_ATOL, "t1": t1,
                     "batched": "one sample per replica, its own step sizes"},
        "numba_stop": {"rule": "per replica, every check_every steps: ||f(y_prev)|| <= atol + "
                               "rtol ||y_prev|| (solve's rule)", "atol": atol, "rtol": rtol,
                       "check_every": CHECK_EVERY, "dt": dt, "max_steps": max_steps},
    }
    print("to tolerance (s): " + ", ".join(f"{k} {v:.4f}" for k, v in secs.items())
          + "\n  worst rel. error: " + ", ".join(
              f"{k} {'—' if v is None else f'{v:.1e}'}" for k, v in errors.items())
          + f"\n  ratios vs solve_fastest: numba {to_tol['ratio_vs_numba']:.3f}, torchdiffeq "
            f"{to_tol['ratio_vs_torchdiffeq']:.1f}, torchode {to_tol['ratio_vs_torchode']:.2f}",
          flush=True)

    problem = dict(sweep.problem)
    problem["state_size_per_replica"] = D
    problem["build_seconds"] = t_build
    return {"problem": problem, "tolerances": tol,
            "compile_seconds": {"numba": compile_s,
                                "note": "first call in this process; a sweep of a kind already "
                                        "compiled shows only the call"},
            "equal_work": equal_work, "to_tolerance": to_tol}


# -- solve's fixed cost per call -------------------------------------------------------------------

def solve_fixed_cost(repeats: int = 2000) -> dict:
    """What one ``solve`` call costs beyond its arithmetic: a one-step Euler solve of a small
    circuit (DI on the race's linear [30, 20, 10] network, S = 1, one example) against the same
    step written by hand (one ``vector_field`` evaluation and one add per population); medians
    of 5 batches of ``repeats`` calls."""
    circuit = di_sweep(1).build()
    y0 = circuit.initial_state()
    dt = DI_DT

    def one_solve():
        solve(circuit, y0, 0.0, dt, dt=dt, method="euler", progress=False)

    def one_step():
        d = circuit.vector_field(0.0, y0)
        return {k: y0[k] + dt * d[k] for k in y0}

    def per_call(fn) -> float:
        for _ in range(repeats // 10):
            fn()
        batches = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            batches.append((time.perf_counter() - start) / repeats)
        return statistics.median(batches)

    solve_s, step_s = per_call(one_solve), per_call(one_step)
    return {"circuit": "DynamicInversion [30, 20, 10] linear, S = 1, B = 1, float64",
            "solve_us": solve_s * 1e6, "step_us": step_s * 1e6,
            "fixed_us": (solve_s - step_s) * 1e6, "goal_us": 100.0,
            "what": "a 1-step Euler solve (validation, packing, stopping check, Solution) minus "
                    "the same step written by hand"}


# -- main ------------------------------------------------------------------------------------------

SWEEPS = ("di_leak_1024", "di_leak_16384", "dfc_tanh")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.settle_race",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for summary.json")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed repeats of the fast contestants (median reported, default 3)")
    p.add_argument("--loop-replicas", type=int, default=16,
                   help="replicas timed one at a time with torchdiffeq (default 16)")
    p.add_argument("--skip-large", action="store_true", help="omit di_leak_16384")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: DI S = 64, DFC 8 × 8, --skip-large, 1 repeat, 4 loop "
                        "replicas (figures are not benchmarks)")
    p.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=list(SWEEPS))
    args = p.parse_args(argv)
    for name in ("threads", "repeats", "loop_replicas"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: received {getattr(args, name)}, expected an "
                    "integer ≥ 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.skip_large, args.repeats, args.loop_replicas = True, 1, min(args.loop_replicas, 4)
    torch.set_num_threads(args.threads)
    import numba
    import torchode
    info = {**machine_info(torch.device("cpu")), "numba": numba.__version__,
            "torchode": getattr(torchode, "__version__", "unknown"),
            "threads": args.threads, "numba_threading": "none (serial njit loop)",
            "load_average_before": load_average()}
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
          f"({info['torch_threads']} threads), numba {info['numba']}, torchode "
          f"{info['torchode']}, torchdiffeq {info['torchdiffeq']}")
    di_S, grid = (64, 8) if args.quick else (1024, 32)
    makers = {"di_leak_1024": lambda: di_sweep(di_S), "di_leak_16384": lambda: di_sweep(16384),
              "dfc_tanh": lambda: dfc_sweep(grid)}
    names = [n for n in args.sweeps if not (args.skip_large and n == "di_leak_16384")]
    sweeps = {}
    for name in names:
        result = run_sweep(makers[name](), args)
        sweeps[name] = result
    fixed = solve_fixed_cost(repeats=200 if args.quick else 2000)
    print(f"solve's fixed cost per call: {fixed['fixed_us']:.0f} µs (a 1-step solve "
          f"{fixed['solve_us']:.0f} µs, the step by hand {fixed['step_us']:.0f} µs)", flush=True)
    info["load_average_after"] = load_average()
    summary = {"machine": info, "solve_fixed_cost": fixed,
               "config": {"quick": args.quick, "repeats": args.repeats,
                          "loop_replicas": args.loop_replicas, "threads": args.threads,
                          "dtype": "float64", "fixed_steps": FIXED_STEPS,
                          "check_every": CHECK_EVERY, "goal_relative_error": GOAL,
                          "sweeps": names,
                          "note": "in --quick mode the sweep names keep their full-size names "
                                  "but run S = 64 (DI) and an 8 × 8 grid (DFC)" if args.quick
                          else None},
               "fastest": FASTEST, "sweeps": sweeps}
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {path / 'summary.json'}")
    bad = [n for n, r in sweeps.items() if not r["equal_work"]["agree"]]
    if bad:
        raise SystemExit(f"numba_fixed and solve(method='euler') disagree beyond {AGREE:g} on "
                         f"{bad} (see equal_work.max_relative_difference)")
    return summary


if __name__ == "__main__":
    main()
