"""torchdiffeq's adaptive methods behind the same ``solve`` interface.

torchdiffeq steps every replica with one shared step size chosen from one error norm, so it
cannot freeze replicas one by one: here the stopping rules are applied *after* the integration.
A replica is ``diverged`` if any saved point is non-finite or beyond the bound (its saved points
from the first bad one on are replaced by its last good one), ``converged`` if
``‖f(t1, y1)‖ ≤ atol + rtol‖y1‖``, else ``reached_t1``. Use a fixed-step method for sweeps that
contain diverging replicas: one of them shrinks the shared step for all.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torchdiffeq

from .state import Layout, State


def solve_adaptive(vector_field: Callable, layout: Layout, y0: State, t0: float, t1: float, *,
                   method: str, dt: float | None, save_every: int | None, save_at, rtol: float,
                   atol: float, steady_atol: float, steady_rtol: float, steady_state: bool,
                   divergence_bound: float, observe: Callable[[State], State] | None):
    from .solve import Solution, Status  # local: solve imports this module lazily

    if save_every is not None:
        raise ValueError(f"save_every: received {save_every!r}, expected None for adaptive "
                         f"method {method!r} (its steps are not a grid); use save_at")
    times = torch.tensor([t0, t1] if save_at is None else
                         [float(s) for s in (save_at.tolist() if isinstance(save_at, torch.Tensor)
                                             else save_at)], dtype=layout.dtype)
    if times[0] > t0:
        times = torch.cat([torch.tensor([t0], dtype=layout.dtype), times])
    evaluations = 0

    def flat_field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        return layout.pack(vector_field(float(t), layout.unpack(y)))

    options = {} if dt is None else {"first_step": float(dt)}
    start = time.perf_counter()
    ys = torchdiffeq.odeint(flat_field, layout.pack(y0), times.to(layout.device), rtol=rtol,
                            atol=atol, method=method, options=options)
    seconds = time.perf_counter() - start
    ok = layout.replica_absmax(ys) <= divergence_bound                 # [T, S]; NaN: False
    good_so_far = ok.long().cumprod(dim=0).bool()
    last_good = good_so_far.long().sum(dim=0).clamp(min=1) - 1          # [S]
    diverged = ~good_so_far[-1]
    entries = torch.arange(layout.numel, device=ys.device)
    fill = ys[layout.spread(last_good), entries]                        # [N]
    ys = torch.where(layout.spread(good_so_far), ys, fill[None])
    y1 = ys[-1]
    status = torch.where(diverged, int(Status.DIVERGED), int(Status.REACHED_T1))
    if steady_state:
        rate = layout.replica_norm(flat_field(times[-1], y1))
        settled = rate <= steady_atol + steady_rtol * layout.replica_norm(y1)
        status = torch.where(~diverged & settled, int(Status.CONVERGED), status)
    t_stop = torch.where(diverged, times.to(layout.device)[last_good],
                         torch.tensor(t1, dtype=layout.dtype))
    if observe is None:
        saved = layout.unpack(ys)
    else:
        per_time = [observe(layout.unpack(y)) for y in ys]
        saved = {k: torch.stack([o[k] for o in per_time]) for k in per_time[0]}
    return Solution(ts=times.to(layout.device), ys=saved,
                    y1={k: v.clone() for k, v in layout.unpack(y1).items()},
                    status=status.long(), t_stop=t_stop.to(layout.dtype),
                    stats={"steps": None, "evaluations": evaluations, "seconds": seconds,
                           "method": method, "dt": dt, "replicas": layout.replicas})
