"""torchdiffeq's adaptive methods behind the same ``solve`` interface.

torchdiffeq steps every replica with one shared step size chosen from one error norm, so it
cannot freeze replicas one by one: here the stopping rules are applied *after* the integration.
A replica is ``diverged`` if any saved point is non-finite or beyond the bound (its saved points
from the first bad one on are replaced by its last good one), ``converged`` if
``‖f(t1, y1)‖ ≤ atol + rtol‖y1‖``, else ``reached_t1``.

**Failure isolation.** A replica that blows up makes torchdiffeq's shared step underflow
(``AssertionError: underflow in dt``), which would cost every replica its result. The batch is
first integrated exactly as before (so a batch without failures gets the same numbers, bit for
bit); only when that raises a numerical failure is it split (:func:`_isolate`):

* the replicas that were non-finite or beyond ``divergence_bound`` in the last state torchdiffeq
  evaluated (the *suspects*) are integrated alone, the others together again; when no replica is
  suspect the batch is halved instead. Each part is split again if it fails, down to single
  replicas;
* a replica that fails *alone* is ``diverged``: it is integrated from save point to save point up
  to the first segment that fails, and frozen at its last good saved state (``y0`` when there is
  none), with ``t_stop`` that point's time. No NaN reaches ``ys`` or ``y1``;
* a part is integrated with the circuit restricted to its replicas (``circuit.take``). A plain
  callable (no ``take``) is evaluated on the whole batch with the other replicas held at ``y0``
  and their rows ignored, once a probe shows it mixes no replicas (NaN written into the other
  replicas leaves the part's rows bit for bit unchanged); otherwise the error names the failing
  replicas and suggests a fixed-step method.

Each part has its own shared step, so a replica's result after a split agrees with the replica
solved alone to the adaptive tolerance (``adaptive_rtol``/``adaptive_atol``), not bit for bit:
that is true of any batch under one shared step. ``stats["isolation"]`` (present only when a
split happened) counts the attempts and lists the replicas that failed alone.

torchode's per-sample step control (its ``IntegralController``) was measured as the alternative
fallback (issue 13): faster on a DI sweep (S = 256, 20 unstable replicas, float32: 5.9 s against
11.6 s for this splitting, 4.0 s for the stable replicas alone) but not used, because its loop
stops the whole batch as soon as one sample fails (it needs the same restart logic) and it
evaluates the field at a per-sample time tensor, which circuits that read ``t`` (gate schedules,
plasticity) do not take; torchode is also no core dependency.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torchdiffeq

from .state import Layout, State

#: The messages of torchdiffeq's numerical failures (``rk_common._adaptive_step``).
_FAILURES = ("underflow in dt", "non-finite values in state")


def _is_numerical_failure(error: BaseException) -> bool:
    return isinstance(error, AssertionError) and str(error).startswith(_FAILURES)


def _owner_of(f) -> Any:
    """The circuit behind ``f`` (a circuit, or its bound ``vector_field``) when it can be
    restricted to some replicas (``take``); None for plain callables."""
    owner = getattr(f, "__self__", f)
    return owner if hasattr(owner, "take") and hasattr(owner, "vector_field") else None


class _Failure(Exception):
    """A part could not be integrated (torchdiffeq's step underflowed)."""

    def __init__(self, last: torch.Tensor | None, rate: torch.Tensor | None):
        super().__init__("numerical failure")
        self.last, self.rate = last, rate   # the last state evaluated, the field there


def solve_adaptive(vector_field: Callable, layout: Layout, y0: State, t0: float, t1: float, *,
                   method: str, dt: float | None, save_every: int | None, save_at, rtol: float,
                   atol: float, steady_atol: float, steady_rtol: float, steady_state: bool,
                   divergence_bound: float, observe: Callable[[State], State] | None,
                   owner=None):
    """``owner``: the circuit ``vector_field`` belongs to (found from ``vector_field`` when
    None); its ``take`` lets a failing batch be split into smaller circuits."""
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
    last_y = last_rate = None      # the last state evaluated and the field there

    def flat_field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal evaluations, last_y, last_rate
        evaluations += 1
        last_y = y
        last_rate = layout.pack(vector_field(float(t), layout.unpack(y)))
        return last_rate

    options = {} if dt is None else {"first_step": float(dt)}
    start = time.perf_counter()
    y0_flat = layout.pack(y0)
    failed = None
    isolation = None
    try:
        ys = torchdiffeq.odeint(flat_field, y0_flat, times.to(layout.device), rtol=rtol,
                                atol=atol, method=method, options=options)
    except AssertionError as error:
        if not _is_numerical_failure(error):
            raise
        splitter = _Splitter(vector_field, _owner_of(vector_field if owner is None else owner),
                             layout, y0_flat, times.to(layout.device), method=method, rtol=rtol,
                             atol=atol, options=options, divergence_bound=divergence_bound)
        ys, failed = splitter.isolate(last_y, last_rate)
        evaluations += splitter.evaluations
        isolation = {"attempts": splitter.attempts, "failed_attempts": splitter.failures,
                     "failed_alone": torch.nonzero(failed).flatten().tolist()}
    seconds = time.perf_counter() - start
    ok = layout.replica_absmax(ys) <= divergence_bound                 # [T, S]; NaN: False
    good_so_far = ok.long().cumprod(dim=0).bool()
    last_good = good_so_far.long().sum(dim=0).clamp(min=1) - 1          # [S]
    diverged = ~good_so_far[-1]
    if failed is not None:
        diverged = diverged | failed
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
    stats = {"steps": None, "evaluations": evaluations, "seconds": seconds,
             "method": method, "dt": dt, "replicas": layout.replicas}
    if isolation is not None:
        stats["isolation"] = isolation
    return Solution(ts=times.to(layout.device), ys=saved,
                    y1={k: v.clone() for k, v in layout.unpack(y1).items()},
                    status=status.long(), t_stop=t_stop.to(layout.dtype), stats=stats)


class _Splitter:
    """Integrates a batch whose first attempt failed as parts that do not fail (see the module
    docstring). :meth:`isolate` returns ``ys [T, N]`` (a replica that failed alone holds NaN
    from its first unreachable save point on, which the caller's divergence rule replaces by its
    last good point) and the ``[S]`` mask of the replicas that failed alone."""

    def __init__(self, vector_field: Callable, owner, layout: Layout, y0: torch.Tensor,
                 times: torch.Tensor, *, method: str, rtol: float, atol: float, options: dict,
                 divergence_bound: float):
        self.vector_field, self.owner, self.layout = vector_field, owner, layout
        self.y0, self.times, self.method = y0, times, method
        self.rtol, self.atol, self.options = rtol, atol, options
        self.bound = divergence_bound
        self.evaluations = self.attempts = self.failures = 0
        self.checked_apart: set[tuple[int, ...]] = set()

    # -- one part: its field, its start, one integration --------------------------------------

    def _part(self, index: torch.Tensor) -> tuple[Layout, Callable, torch.Tensor]:
        layout, full = self.layout, self.layout.unpack(self.y0)
        part = layout.subset(int(index.numel()))
        start = part.pack({n: v[index] for n, v in full.items()})
        if self.owner is not None:
            field = self.owner.take(index).vector_field
        else:
            self._check_apart(index)
            template, vector_field = self.y0, self.vector_field

            def field(t: float, y: State) -> State:       # the others held at y0, ignored
                out = vector_field(t, layout.unpack(layout.scatter(template, index, y)))
                return {n: out[n][index] for n in layout.names}
        return part, field, start

    def _check_apart(self, index: torch.Tensor) -> None:
        """A plain callable may be evaluated for a part only if it mixes no replicas: NaN in
        every other replica must leave the part's rows of ``f(t0, y0)`` unchanged."""
        key = tuple(index.tolist())
        if key in self.checked_apart:
            return
        layout = self.layout
        others = torch.ones(layout.replicas, dtype=torch.bool, device=self.y0.device)
        others[index] = False
        poisoned = torch.where(layout.spread(others), torch.nan, self.y0)
        t0 = float(self.times[0])
        try:
            clean = self.vector_field(t0, layout.unpack(self.y0))
            probe = self.vector_field(t0, layout.unpack(poisoned))
            apart = all(torch.equal(clean[n][index], probe[n][index]) for n in layout.names)
        except Exception:                                  # noqa: BLE001 (f refused the probe)
            apart = False
        if not apart:
            raise ValueError(
                f"method: received {self.method!r}, whose step size underflowed for the batch "
                f"(replicas {index.tolist()[:20]}{' ...' if index.numel() > 20 else ''} include "
                "a diverging one), and f is a plain callable that cannot be integrated for some "
                "replicas apart (it has no take() and its replicas are not independent); use a "
                "fixed-step method (euler, rk4, exp_euler, ...), which flags and freezes "
                "diverging replicas one by one, or pass a circuit with take()")
        self.checked_apart.add(key)

    def _integrate(self, part: Layout, field: Callable, start: torch.Tensor,
                   times: torch.Tensor) -> torch.Tensor:
        last = rate = None

        def flat_field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            nonlocal last, rate
            self.evaluations += 1
            last = y
            rate = part.pack(field(float(t), part.unpack(y)))
            return rate

        self.attempts += 1
        try:
            return torchdiffeq.odeint(flat_field, start, times, rtol=self.rtol, atol=self.atol,
                                      method=self.method, options=self.options)
        except AssertionError as error:
            if not _is_numerical_failure(error):
                raise
            self.failures += 1
            raise _Failure(last, rate) from None

    # -- the splitting ------------------------------------------------------------------------

    def isolate(self, last: torch.Tensor | None, rate: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``last``, ``rate``: the state the failed first attempt was last evaluated at, and
        the field there."""
        layout = self.layout
        S, T = layout.replicas, self.times.numel()
        ys = torch.full((T, layout.numel), torch.nan, dtype=layout.dtype, device=self.y0.device)
        views = layout.unpack(ys)                                # {name: [T, S, ...]}
        failed = torch.zeros(S, dtype=torch.bool, device=self.y0.device)
        everyone = torch.arange(S, device=self.y0.device)
        pending = self._split(everyone, layout, last, rate)
        while pending:
            index, culprit = pending.pop()
            part, field, start = self._part(index)
            if culprit:                    # non-finite where its batch failed: alone at once
                part_ys, failed_alone = self._alone(part, field, start, known_to_fail=False)
            else:
                try:
                    part_ys, failed_alone = self._integrate(part, field, start, self.times), False
                except _Failure as failure:
                    if index.numel() > 1:
                        pending.extend(self._split(index, part, failure.last, failure.rate))
                        continue
                    part_ys, failed_alone = self._alone(part, field, start, known_to_fail=True)
            failed[index] = failed_alone
            for name, value in part.unpack(part_ys).items():
                views[name][:, index] = value
        return ys, failed

    def _split(self, index: torch.Tensor, part: Layout, last: torch.Tensor | None,
               rate: torch.Tensor | None) -> list[tuple[torch.Tensor, bool]]:
        """The parts ``(replicas, culprit)`` to try after the part ``index`` failed, from the
        last state (and field) it was evaluated at: each *culprit* (a non-finite state or field
        there) alone, the replicas beyond the bound together, the others together; two halves
        when that separates nothing."""
        n = index.numel()
        if last is not None:
            culprit = ~(part.replica_absmax(last) < torch.inf)
            if rate is not None:
                culprit |= ~(part.replica_absmax(rate) < torch.inf)
            beyond = ~(part.replica_absmax(last) <= self.bound) & ~culprit
            groups = [beyond, ~culprit & ~beyond]
            if bool(culprit.any()):
                return [(index[j:j + 1], True) for j in torch.nonzero(culprit).flatten()] \
                    + [(index[g], False) for g in groups if bool(g.any())]
            if 0 < int(beyond.sum()) < n:
                return [(index[g], False) for g in groups]
        half = n // 2
        return [(index[half:], False), (index[:half], False)]

    def _alone(self, part: Layout, field: Callable, start: torch.Tensor, *,
               known_to_fail: bool) -> tuple[torch.Tensor, bool]:
        """One replica integrated from save point to save point until a segment fails:
        ``[T, D]`` with NaN from the first point it could not reach, and whether it failed.
        ``known_to_fail``: its integration over the whole span failed already, so its last
        point is not attempted (it could not be trusted) and it is flagged."""
        T = self.times.numel()
        rows, y, failed = [start], start, known_to_fail
        for k in range(1, T - 1 if known_to_fail else T):
            try:
                y = self._integrate(part, field, y, self.times[k - 1:k + 1])[-1]
            except _Failure:
                failed = True
                break
            rows.append(y)
        out = torch.full((T, part.numel), torch.nan, dtype=start.dtype, device=start.device)
        out[:len(rows)] = torch.stack(rows)
        return out, failed
