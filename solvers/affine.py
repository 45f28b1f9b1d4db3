"""Exact stepping of affine settles: ``dy/dt = J y + c`` with ``J``, ``c`` constant per replica.

Many settles are affine in their state at a fixed input (dynamic inversion, single-loop DI with
the linear carry, linear decoders, any circuit linearised about a point). Their flow is known
exactly: with the augmented state ``ŷ = [y; 1]`` and generator ``A = [[J, c], [0, 0]]``,

    ŷ(t + h) = e^{hA} ŷ(t),       e^{hA} = [[e^{hJ}, h φ₁(hJ) c], [0, 1]],

which holds whether or not ``J`` is invertible (no fixed point ``y* = −J⁻¹c`` is needed) and
whatever ``h``: a step is not limited by the fastest time constant, and it does not smooth or
damp anything, so an unstable loop grows exactly as the circuit would (and is reported diverged
by :func:`solvers.solve`'s divergence check, never "settled").

:class:`AffineFlow` builds ``J`` once (``D`` Jacobian-vector products per replica, batched;
:func:`solvers.implicit.replica_jacobian`), ``c = f(y₀) − J y₀``, and one propagator
``e^{hA}`` per distinct step. On the doubling grid (``dt_growth = 2``) the next propagator is the
square of the last, ``e^{2hA} = (e^{hA})²``: one batched matmul per step, and a slow settle
needs a number of steps logarithmic in its settle time. Saved points off the grid are exact too
(:meth:`AffineFlow.advance` with the offset: one more ``matrix_exp``).

The circuit must say that its field is affine (``affine = True``, e.g.
:class:`circuits.DynamicInversion`); the claim is checked once on a random direction
(``f(y₀ + v) − f(y₀) = J v`` to a tolerance), so a wrong declaration is an error, not a wrong
result. Cost: ``O(S D³)`` per step (the squaring) and ``O(S D²)`` memory; ``D`` is limited to
:data:`solvers.implicit.MAX_SIZE` as for the other Jacobian methods.
"""
from __future__ import annotations

from typing import Callable

import torch

from .implicit import check_size, replica_jacobian
from .state import Layout

#: The method name :func:`solvers.solve` knows this stepper by.
AFFINE = "affine"


def is_affine(f) -> bool:
    """Whether ``f`` (a circuit, or a vector field bound to one) declares an affine field."""
    owner = getattr(f, "__self__", f)
    return bool(getattr(owner, "affine", False))


class AffineFlow:
    """The exact flow of an affine field on :func:`solvers.solve`'s flat state.

    ``field(t, {name: [S, ...]})`` is the vector field; it is linearised once at ``(t0, y0)``
    (``y0`` flat). Calling the flow with ``(t, y, h)`` returns ``(y(t + h), f(t, y))`` like
    :func:`solvers.methods.rk_step`, except that the rate is taken at ``y(t + h)``."""

    def __init__(self, layout: Layout, field: Callable, t0: float, y0: torch.Tensor, *,
                 check: bool = True):
        check_size(layout, AFFINE)
        self.layout, self.field = layout, field
        by_replica = (lambda yr: layout.pack_by_replica(field(t0, layout.unpack_by_replica(yr))))
        yr = layout.pack_by_replica(layout.unpack(y0))
        J = replica_jacobian(by_replica, yr)
        f0 = by_replica(yr)
        c = f0 - (J @ yr[..., None])[..., 0]
        if check:
            self._check(by_replica, yr, J, f0)
        S, D = yr.shape
        self.A = torch.zeros(S, D + 1, D + 1, dtype=yr.dtype, device=yr.device)
        self.A[:, :D, :D] = J
        self.A[:, :D, D] = c
        self.h: float | None = None
        self.E: torch.Tensor | None = None
        self.exponentials = 0                     # matrix_exp calls (the expensive part)
        self.squarings = 0

    @staticmethod
    def _check(by_replica, yr: torch.Tensor, J: torch.Tensor, f0: torch.Tensor) -> None:
        """``f(y₀ + v) − f(y₀) = J v`` on one random direction (an affine field satisfies it to
        rounding); one host synchronisation."""
        g = torch.Generator(device=yr.device).manual_seed(0)
        scale = yr.abs().amax(-1, keepdim=True).clamp_min(1.0)
        v = torch.randn(yr.shape, generator=g, dtype=yr.dtype, device=yr.device) * scale
        predicted = (J @ v[..., None])[..., 0]
        actual = by_replica(yr + v) - f0
        err = (actual - predicted).norm(dim=-1)
        size = predicted.norm(dim=-1) + f0.norm(dim=-1) + J.flatten(1).abs().amax(-1) * \
            v.norm(dim=-1)
        eps = torch.finfo(yr.dtype).eps
        bad = ~(err <= 1e4 * eps * size.clamp_min(eps))
        if bool(bad.any()):
            s = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"method: received 'affine' for a field that is not affine in its state "
                f"(replica {s}: f(y0 + v) − f(y0) differs from J v by {float(err[s]):.3g}, "
                f"relative {float(err[s] / size[s].clamp_min(eps)):.3g}); expected a circuit "
                "whose dynamics are affine at a fixed input (declared with affine = True). "
                "Use 'exp_rosenbrock' (relinearised) or an explicit method for nonlinear fields")

    def propagator(self, h: float) -> torch.Tensor:
        """``e^{hA}`` ``[S, D+1, D+1]``: squared from the last one when ``h`` doubled it (the
        doubling grid), reused when ``h`` is the same, else one ``matrix_exp``."""
        if self.E is not None and self.h is not None:
            if h == self.h:
                return self.E
            if abs(h - 2 * self.h) <= 1e-12 * h:
                self.E = self.E @ self.E
                self.h = h
                self.squarings += 1
                return self.E
        self.E = torch.linalg.matrix_exp(self.A * h)
        self.h = h
        self.exponentials += 1
        return self.E

    def _apply(self, E: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        yr = lay.pack_by_replica(lay.unpack(y))
        D = yr.shape[-1]
        new = torch.baddbmm(E[:, :D, D:], E[:, :D, :D], yr[..., None])[..., 0]
        return lay.pack(lay.unpack_by_replica(new))

    def advance(self, y: torch.Tensor, h: float) -> torch.Tensor:
        """``y(t + h)`` for one offset ``h`` without touching the step propagator (for saved
        points between grid times)."""
        if h == 0:
            return y
        return self._apply(torch.linalg.matrix_exp(self.A * h), y)

    def __call__(self, t: float, y: torch.Tensor, h: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y(t + h), f(t + h, y(t + h)))``: the rate at the *end* of the step (an explicit
        step returns it at the start), so a stopping check after a long exact step judges the
        state the step reached."""
        new = self._apply(self.propagator(h), y)
        return new, self.layout.pack(self.field(t + h, self.layout.unpack(new)))

    def take(self, keep: torch.Tensor, layout: Layout, field: Callable) -> "AffineFlow":
        """The same flow for the replicas ``keep`` (indices into the current ones)."""
        new = object.__new__(AffineFlow)
        new.__dict__.update(self.__dict__)
        new.layout, new.field = layout, field
        new.A = self.A[keep]
        new.E = None if self.E is None else self.E[keep]
        return new


__all__ = ["AFFINE", "AffineFlow", "is_affine"]
