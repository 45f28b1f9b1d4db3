"""Stiff methods that use the per-replica Jacobian: linearly implicit (Rosenbrock) Euler and
exponential Rosenbrock–Euler.

One step from ``(t_n, y_n)`` with step ``h``, per replica,

    y_{n+1} = y_n + (I − h J)⁻¹ h f(t_n, y_n),        J = ∂f/∂y (t_n, y_n),

which is exactly backward Euler when ``f`` is affine in ``y`` (``f = A y + c`` gives
``y_{n+1} = (I − hA)⁻¹ (y_n + h c)``) and one Newton iteration of it otherwise. Its stability
function ``R(z) = 1/(1 − z)`` is A- and L-stable: every decaying mode decays for every ``h``, and
infinitely stiff modes are removed in one step; as ``h → ∞`` the step becomes Newton's step
``−J⁻¹ f`` towards the fixed point. So the step is set by the accuracy wanted, not by the
fastest time constant as for the explicit methods of :mod:`solvers.methods`; the price is
accuracy (order 1; slow modes decay as ``(1 + h|λ|)⁻¹`` per step instead of ``e^{−h|λ|}``), and
a trap: ``|R(z)| < 1`` also for unstable modes once ``h Re λ > 2``, so with large steps it
"settles" onto fixed points that the circuit itself runs away from. Check stability
(:func:`circuits.stability.analyse_circuit`) or use ``exp_rosenbrock``, which diverges with them.

``exp_rosenbrock`` (exponential Rosenbrock–Euler; Hochbruck, Ostermann & Schweitzer 2009)
replaces the resolvent by the exact flow of the linearisation,

    y_{n+1} = y_n + h φ₁(hJ) f(t_n, y_n),        φ₁(z) = (eᶻ − 1)/z,

(the matrix function from one ``matrix_exp`` of ``[[hJ, h f], [0, 0]]``, ``(D + 1)²`` per
replica; for large ``‖hJ‖`` as ``J⁻¹(e^{hJ} − I) f``, see :func:`exp_rosenbrock_increment`). It is *exact* for affine fields whatever ``h`` (order 2 otherwise), decays exactly as
the circuit does, so times read off its grid are the circuit's times, and removes infinitely
stiff modes like backward Euler; each step costs a matrix exponential instead of a linear solve.

``J`` is built per replica, replicas being independent: ``D`` Jacobian-vector products, each
pushing the same basis vector ``e_j`` through every replica at once (``torch.func.jvp`` under
``torch.func.vmap`` over the basis), then one batched LU solve ``[S, D, D]``. Memory and time
grow as ``O(S D²)`` and ``O(S D³)`` with ``D`` the size of one replica's state, so ``D`` is limited
to :data:`MAX_SIZE`; large states should use an explicit method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .state import Layout

#: The largest per-replica state size D the implicit method accepts (J is ``[S, D, D]``).
MAX_SIZE = 4096


@dataclass(frozen=True)
class ImplicitMethod:
    """A stiff method that needs the per-replica Jacobian (see the module docstring).

    Carries the fields the solvers read from a :class:`solvers.methods.Tableau` (``name``,
    ``order``, ``stages``, ``exponential``) so it can be looked up with ``get_method``;
    ``stages`` counts vector-field evaluations besides the ``D`` Jacobian-vector products."""

    name: str
    order: int
    stages: int = 1
    exponential: bool = False
    implicit: bool = True


IMPLICIT_EULER = ImplicitMethod("implicit_euler", 1)
EXP_ROSENBROCK = ImplicitMethod("exp_rosenbrock", 2)
IMPLICIT: dict[str, ImplicitMethod] = {m.name: m for m in (IMPLICIT_EULER, EXP_ROSENBROCK)}


def check_size(layout: Layout, method: str) -> None:
    if layout.size > MAX_SIZE:
        raise ValueError(
            f"method: received {method!r} for a state of D = {layout.size} numbers per replica "
            f"(populations {dict(zip(layout.names, layout.sizes))}), expected D ≤ {MAX_SIZE}: "
            f"the implicit step builds and factors a D × D Jacobian per replica "
            f"({layout.replicas} × {layout.size}² numbers). Use an explicit method such as "
            "'exp_euler' or 'rk4' for states this large")


def replica_jacobian(f: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """``∂f/∂y`` of a replica-wise map ``f: [S, D] → [S, D]`` at ``y [S, D]``: ``[S, D, D]``.

    ``f`` must not mix replicas (row s of the output depends on row s of the input only); the
    j-th column of every replica's Jacobian comes from one JVP with ``e_j`` in every row."""
    S, D = y.shape
    basis = torch.eye(D, dtype=y.dtype, device=y.device)[:, None, :].expand(D, S, D)
    try:
        cols = torch.func.vmap(lambda v: torch.func.jvp(f, (y,), (v,))[1])(basis)   # [D, S, D]
    except RuntimeError:          # code vmap cannot batch: one JVP per basis vector instead
        cols = torch.stack([torch.func.jvp(f, (y,), (basis[j],))[1] for j in range(D)])
    return cols.permute(1, 2, 0)


class ImplicitEulerStep:
    """The step :func:`solvers.solve` takes for ``method="implicit_euler"`` (or
    ``"exp_rosenbrock"``) on its flat, population-major state (see :class:`solvers.state.Layout`).

    ``field(t, {name: [S, ...]}) -> {name: [S, ...]}`` is the vector field on named states.
    Calling it with ``(t, y, h)``, ``y [N]`` flat, returns ``(y_next, k1)`` with ``k1 = f(t, y)``
    (flat), like :func:`solvers.methods.rk_step`. ``jacobian_every`` n > 1 reuses J for n steps,
    ``None`` for the whole integration (a W-method: still exact for affine fields, whose
    Jacobian is constant, and still converging to f = 0 otherwise, with less stability)."""

    def __init__(self, layout: Layout, field: Callable, method: str = "implicit_euler",
                 jacobian_every: int | None = 1):
        check_size(layout, method)
        if method not in IMPLICIT:
            raise ValueError(f"method: received {method!r}, expected one of {sorted(IMPLICIT)}")
        if jacobian_every is not None and (isinstance(jacobian_every, bool)
                                           or not isinstance(jacobian_every, int)
                                           or jacobian_every < 1):
            raise ValueError(f"jacobian_every: received {jacobian_every!r}, expected an "
                             "integer ≥ 1 or None (one Jacobian for the whole integration)")
        self.layout = layout
        self.field = field
        self.increment = (implicit_euler_increment if method == "implicit_euler"
                          else exp_rosenbrock_increment)
        self.every = jacobian_every
        self.J: torch.Tensor | None = None
        self.steps = 0
        self.jacobians = 0

    def by_replica(self, t: float) -> Callable[[torch.Tensor], torch.Tensor]:
        lay = self.layout
        return lambda yr: lay.pack_by_replica(self.field(t, lay.unpack_by_replica(yr)))

    def __call__(self, t: float, y: torch.Tensor, h: float) -> tuple[torch.Tensor, torch.Tensor]:
        lay = self.layout
        state = lay.unpack(y)
        k1_state = self.field(t, state)
        k1 = lay.pack(k1_state)
        yr = lay.pack_by_replica(state)
        if self.J is None or (self.every is not None and self.steps % self.every == 0):
            self.J = replica_jacobian(self.by_replica(t), yr)
            self.jacobians += 1
        self.steps += 1
        step = self.increment(self.J, lay.pack_by_replica(k1_state), h)
        return lay.pack(lay.unpack_by_replica(yr + step)), k1


def implicit_euler_increment(J: torch.Tensor, k1: torch.Tensor, h: float) -> torch.Tensor:
    """``(I − hJ)⁻¹ h k1`` per replica, written as ``(I/h − J)⁻¹ k1`` (no overflow for huge h):
    ``J [S, D, D]``, ``k1 [S, D]`` → ``[S, D]``."""
    eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
    return torch.linalg.solve(eye / h - J, k1)


def exp_rosenbrock_increment(J: torch.Tensor, k1: torch.Tensor, h: float) -> torch.Tensor:
    """``h φ₁(hJ) k1`` per replica: ``J [S, D, D]``, ``k1 [S, D]`` → ``[S, D]``.

    One ``matrix_exp`` of ``[[hJ, h k1], [0, 0]]`` gives ``E = e^{hJ}`` (top left) and the
    increment (last column). The last column loses accuracy as ``‖hJ‖`` grows (the squarings
    amplify rounding: ~1e-10 relative at ‖hJ‖ = 1e8), so where ``‖hJ‖₁ > 1`` the equal
    ``J⁻¹ (E − I) k1`` is used instead, which tends to Newton's step ``−J⁻¹ k1`` as E → 0 (and
    keeps the column where J is singular)."""
    S, D = k1.shape
    M = torch.zeros(S, D + 1, D + 1, dtype=J.dtype, device=J.device)
    M[:, :D, :D] = J * h
    M[:, :D, D] = k1 * h
    X = torch.linalg.matrix_exp(M)
    column = X[:, :D, D]
    E_minus_I_k1 = (X[:, :D, :D] @ k1[..., None])[..., 0] - k1
    solved, info = torch.linalg.solve_ex(J, E_minus_I_k1)
    large = (M[:, :D, :D].abs().sum(-2).amax(-1) > 1) & (info == 0) \
        & torch.isfinite(solved).all(-1)
    return torch.where(large[:, None], solved, column)
