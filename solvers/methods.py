"""Stepping methods as validated data.

An explicit Runge-Kutta method is its Butcher tableau ``(a, b, c)``; one function
(:func:`rk_step`) takes a step with any of them. Exponential Euler is the one method that is
not a tableau: it treats a declared linear leak ``-λ y`` exactly and the rest explicitly,

    y_{n+1} = y_n + h · φ₁(−λh) · f(t_n, y_n),      φ₁(z) = (eᶻ − 1)/z,

which equals ``e^{−λh} y_n + (1 − e^{−λh})/λ · N(y_n)`` for ``f = −λ y + N(y)``. With λ = 0 it
is forward Euler. Every method is a first-class value with a name and an order, so tests can
loop over :data:`METHODS` and check each order against the matrix exponential.

The stiff method ``implicit_euler`` (linearly implicit Euler) needs the per-replica Jacobian, so
it is not a tableau and :func:`rk_step` does not take it; it lives in :mod:`solvers.implicit`,
:func:`get_method` finds it there and :func:`solvers.solve` steps it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .implicit import IMPLICIT, ImplicitMethod

Field = Callable[[float, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta method: stages ``k_i = f(t + c_i h, y + h Σ_j a_ij k_j)``,
    step ``y + h Σ_i b_i k_i``. Validated on construction (explicit, consistent, order ≥ 1)."""

    name: str
    order: int
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    exponential: bool = field(default=False)

    def __post_init__(self) -> None:
        s = len(self.b)
        if len(self.c) != s or len(self.a) != s:
            raise ValueError(f"tableau {self.name!r}: a, b and c must all have {s} stages")
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(
                    f"tableau {self.name!r}: row {i} of a has {len(row)} entries, expected {i} "
                    "(explicit methods are strictly lower triangular)")
            if abs(sum(row) - self.c[i]) > 1e-12:
                raise ValueError(f"tableau {self.name!r}: row {i} of a sums to {sum(row)}, "
                                 f"expected c[{i}] = {self.c[i]}")
        if abs(sum(self.b) - 1.0) > 1e-12:
            raise ValueError(f"tableau {self.name!r}: b sums to {sum(self.b)}, expected 1")

    @property
    def stages(self) -> int:
        return len(self.b)


EULER = Tableau("euler", 1, ((),), (1.0,), (0.0,))
HEUN = Tableau("heun", 2, ((), (1.0,)), (0.5, 0.5), (0.0, 1.0))
MIDPOINT = Tableau("midpoint", 2, ((), (0.5,)), (0.0, 1.0), (0.0, 0.5))
RK4 = Tableau("rk4", 4, ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
              (1 / 6, 1 / 3, 1 / 3, 1 / 6), (0.0, 0.5, 0.5, 1.0))
EXP_EULER = Tableau("exp_euler", 1, ((),), (1.0,), (0.0,), exponential=True)

METHODS: dict[str, Tableau] = {m.name: m for m in (EULER, HEUN, MIDPOINT, RK4, EXP_EULER)}
#: Adaptive methods handed to torchdiffeq (see :mod:`solvers.adapter`).
ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


def get_method(name: str) -> Tableau | ImplicitMethod:
    """The fixed-step method called ``name``: a :class:`Tableau`, or the
    :class:`~solvers.implicit.ImplicitMethod` ``implicit_euler``."""
    if isinstance(name, str) and name in IMPLICIT:
        return IMPLICIT[name]
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"method: received {name!r}, expected one of "
                         f"{sorted(METHODS) + sorted(IMPLICIT) + list(ADAPTIVE)}")
    return METHODS[name]


def phi1(z: torch.Tensor) -> torch.Tensor:
    """φ₁(z) = (eᶻ − 1)/z, with φ₁(0) = 1, accurate near 0 (expm1)."""
    small = z.abs() < 1e-8
    safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1.0 + z / 2, torch.expm1(safe) / safe)


def rk_step(method: Tableau, f: Field, t: float, y: torch.Tensor, h: float,
            leak: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of ``method`` from ``(t, y)`` with step ``h``.

    Returns ``(y_next, k1)`` where ``k1 = f(t, y)`` (the solver reuses it for the steady-state
    test, so stopping costs no extra evaluation). ``leak`` (broadcastable to y) is the linear
    decay rate λ that exponential Euler integrates exactly; other methods ignore it.
    """
    if getattr(method, "implicit", False):
        raise ValueError(f"method: received {method.name!r}, expected an explicit tableau "
                         f"({sorted(METHODS)}): the implicit step needs the per-replica Jacobian "
                         "and is taken by solvers.solve (or solvers.implicit.ImplicitEulerStep)")
    k1 = f(t, y)
    if method.exponential:
        if leak is None:
            return torch.add(y, k1, alpha=h), k1
        return torch.addcmul(y, h * phi1(-h * leak), k1), k1
    ks = [k1]
    for i in range(1, method.stages):
        yi = y
        for aij, kj in zip(method.a[i], ks):
            if aij != 0.0:
                yi = torch.add(yi, kj, alpha=h * aij)
        ks.append(f(t + method.c[i] * h, yi))
    out = y
    for bi, ki in zip(method.b, ks):
        if bi != 0.0:
            out = torch.add(out, ki, alpha=h * bi)
    return out, k1
