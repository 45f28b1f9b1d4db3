"""Linear stability per replica, and stabilisation of a random feedback matrix.

* :func:`jacobian` linearises any circuit's vector field at a state, per replica, with forward-
  mode autodiff (one ``jvp`` per state coordinate, all replicas at once): ``[S, D, D]``.
* :func:`analyse` gives the eigenvalues, the spectral abscissa ``max Re λ`` (continuous-time
  stability: < 0) and, for a fixed-step method and dt, the spectral radius of the method's
  one-step amplification matrix (discrete stability: < 1). The amplification matrix is the
  method's stability function evaluated at ``dt J`` (:func:`amplification`): e^z's Taylor
  polynomial of degree p for the explicit Runge-Kutta methods with p stages and order p (Euler,
  Heun, midpoint, RK4), and ``I + dt φ₁(−dt λ) J`` for exponential Euler with leak λ.
* :func:`stabilise_feedback` descends the smoothed spectral abscissa (Vanbiervliet et al. 2009,
  as Podlaski & Machens did for random B), two Lyapunov solves per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Callable

import torch

from .circuit import Circuit, State
from .parameters import (check_finite_tensor, describe, nonnegative_float, positive_float)

#: Explicit Runge-Kutta methods whose order equals their number of stages (p ≤ 4): whatever the
#: tableau, their stability function is ``Σ_{k ≤ p} z^k / k!``.
RUNGE_KUTTA_ORDER = {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4}
#: The fixed-step methods :func:`amplification` knows the stability function of.
STEPPING_METHODS = (*RUNGE_KUTTA_ORDER, "exp_euler")


def flatten_replicas(y: State, like: State | None = None) -> torch.Tensor:
    """``{name: [S, ...]}`` → ``[S, D]``: each population flattened per replica, populations in
    the key order of ``like`` (default: ``y``'s own)."""
    names = list(y if like is None else like)
    S = y[names[0]].shape[0]
    return torch.cat([y[n].reshape(S, -1) for n in names], dim=1)


def unflatten_replicas(flat: torch.Tensor, like: State) -> State:
    """``[S, D]`` → ``{name: [S, ...]}`` with the names and shapes of ``like`` (the inverse of
    :func:`flatten_replicas`)."""
    sizes = [math.prod(v.shape[1:]) for v in like.values()]
    return {name: part.reshape(v.shape)
            for (name, v), part in zip(like.items(), flat.split(sizes, dim=-1))}


def check_state(name: str, y, circuit=None) -> State:
    """``y``: a non-empty mapping of finite real tensors ``[S, ...]`` with one leading replica
    axis (and, when ``circuit`` declares populations, exactly its state's names)."""
    if not isinstance(y, Mapping) or not y:
        raise TypeError(f"{name}: received {describe(y)}, expected a non-empty dict "
                        "{population: tensor [S, B, n]}")
    S = None
    for k, v in y.items():
        check_finite_tensor(f"{name}[{k!r}]", v)
        if v.dim() < 1 or v.shape[0] < 1 or v.numel() == 0:
            raise ValueError(f"{name}[{k!r}]: received shape {tuple(v.shape)}, expected "
                             "[S, B, n] with S, B, n ≥ 1")
        if S is None:
            S = v.shape[0]
        elif v.shape[0] != S:
            raise ValueError(f"{name}[{k!r}]: received {v.shape[0]} replicas, expected S = {S} "
                             "like the other populations")
    pops = getattr(circuit, "populations", None)
    if pops:
        want = {p.name for p in pops}
        if set(y) != want:
            raise ValueError(f"{name}: received populations {sorted(y)}, expected "
                             f"{sorted(want)} (the circuit's state)")
    return y


def check_time(name: str, t) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise ValueError(f"{name}: received {t!r}, expected a finite number")
    return float(t)


def jacobian(circuit: Circuit, y: State, t: float = 0.0) -> torch.Tensor:
    """``∂f/∂y`` per replica, ``[S, D, D]``, in the order of :func:`flatten_replicas`."""
    if not callable(getattr(circuit, "vector_field", None)):
        raise TypeError(f"circuit: received {type(circuit).__name__}, expected a circuit with "
                        "a vector_field(t, y) method")
    check_state("y", y, circuit)
    check_time("t", t)
    y_flat = flatten_replicas(y)

    def f(flat: torch.Tensor) -> torch.Tensor:
        # a vector field may return its populations in another order than the state's
        return flatten_replicas(circuit.vector_field(t, unflatten_replicas(flat, y)), like=y)

    S, D = y_flat.shape
    basis = torch.eye(D, dtype=y_flat.dtype, device=y_flat.device)[:, None, :]
    basis = basis.expand(D, S, D)
    cols = torch.func.vmap(lambda v: torch.func.jvp(f, (y_flat,), (v,))[1])(basis)
    return cols.permute(1, 2, 0)


@dataclass
class StabilityReport:
    """eigenvalues ``[S, D]`` (complex), spectral_abscissa ``[S]``, stable ``[S]`` (continuous
    time); with a method: spectral_radius ``[S]`` and step_stable ``[S]``; predicted
    ``converges = stable & step_stable``."""

    eigenvalues: torch.Tensor
    spectral_abscissa: torch.Tensor
    stable: torch.Tensor
    spectral_radius: torch.Tensor | None = None
    step_stable: torch.Tensor | None = None

    @property
    def converges(self) -> torch.Tensor:
        return self.stable if self.step_stable is None else self.stable & self.step_stable


def check_stepping_method(method: str) -> None:
    if not isinstance(method, str) or method not in STEPPING_METHODS:
        raise ValueError(f"method: received {method!r}, expected one of {list(STEPPING_METHODS)} "
                         "(the fixed-step methods whose stability function is known here; an "
                         "adaptive method has none: pass method=None)")


def taylor_polynomial(Z: torch.Tensor, degree: int) -> torch.Tensor:
    """``Σ_{k ≤ degree} Z^k / k!`` of square matrices ``Z [..., D, D]`` (Horner's scheme)."""
    eye = torch.eye(Z.shape[-1], dtype=Z.dtype, device=Z.device).expand_as(Z)
    R = eye
    for k in range(degree, 0, -1):
        R = eye + (Z @ R) / k
    return R


def phi1(z: torch.Tensor) -> torch.Tensor:
    """φ₁(z) = (eᶻ − 1)/z, with φ₁(0) = 1, accurate near 0 (expm1)."""
    small = z.abs() < 1e-8
    safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1.0 + z / 2, torch.expm1(safe) / safe)


def exponential_euler_amplification(J: torch.Tensor, dt: float,
                                    leak: torch.Tensor | None = None) -> torch.Tensor:
    """``I + dt diag(φ₁(−dt λ)) J``: exponential Euler's step ``y + dt φ₁(−dt λ) f(y)`` on
    ``f = J y`` (``leak`` λ ``[S, D]``; None: λ = 0, forward Euler)."""
    eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device).expand_as(J)
    if leak is None:
        return eye + dt * J
    return eye + (dt * phi1(-dt * leak))[..., None] * J


def amplification(J: torch.Tensor, method: str, dt: float,
                  leak: torch.Tensor | None = None) -> torch.Tensor:
    """One-step matrix ``A [S, D, D]`` with ``y_{n+1} = A y_n`` for ``dy/dt = J y`` (``J``
    ``[S, D, D]``; ``leak`` ``[S, D]`` is the decay rate exponential Euler treats exactly)."""
    check_stepping_method(method)
    dt = positive_float("dt", dt)
    if method == "exp_euler":
        return exponential_euler_amplification(J, dt, leak)
    return taylor_polynomial(dt * J, RUNGE_KUTTA_ORDER[method])


def _check_method_and_step(method: str | None, dt: float | None) -> None:
    """A stepping method comes with a step ``dt > 0``; a step without a method is an error."""
    if method is not None:
        check_stepping_method(method)
        if dt is None:
            raise ValueError("dt: received None, expected a step size with method "
                             f"{method!r}")
        positive_float("dt", dt)
    elif dt is not None:
        raise ValueError(f"dt: received {dt!r} without a method, expected method= one of "
                         f"{list(STEPPING_METHODS)} (the step size is for a method's "
                         "amplification matrix) or dt=None")


def analyse(J: torch.Tensor, method: str | None = None, dt: float | None = None,
            leak: torch.Tensor | None = None, tol: float = 1e-10) -> StabilityReport:
    """Stability of ``dy/dt = J y`` per replica (``J`` ``[S, D, D]``)."""
    check_finite_tensor("J", J, dims=(3,))
    if J.shape[-1] != J.shape[-2] or J.numel() == 0:
        raise ValueError(f"J: received shape {tuple(J.shape)}, expected [S, D, D] with S, D ≥ 1")
    tol = nonnegative_float("tol", tol)
    _check_method_and_step(method, dt)
    if leak is not None:
        check_finite_tensor("leak", leak, dims=(2,))
    ev = torch.linalg.eigvals(J)
    abscissa = ev.real.amax(dim=-1)
    report = StabilityReport(ev, abscissa, abscissa < -tol)
    if method is not None:
        radius = torch.linalg.eigvals(amplification(J, method, dt, leak)).abs().amax(dim=-1)
        report.spectral_radius = radius
        report.step_stable = radius < 1 - tol
    return report


def analyse_circuit(circuit: Circuit, y: State | None = None, method: str | None = None,
                    dt: float | None = None) -> StabilityReport:
    """:func:`analyse` of a circuit's linearisation at ``y`` (default: its initial state).
    Method and step are checked before any work (the Jacobian costs D forward-mode passes)."""
    _check_method_and_step(method, dt)
    if not callable(getattr(circuit, "initial_state", None)):
        raise TypeError(f"circuit: received {type(circuit).__name__}, expected a circuit "
                        "(initial_state() and vector_field(t, y))")
    y = circuit.initial_state() if y is None else check_state("y", y, circuit)
    leak = None
    if method == "exp_euler":
        rates = circuit.leak(y)
        leak = flatten_replicas({n: torch.as_tensor(rates.get(n, 0.0), dtype=v.dtype,
                                                    device=v.device).expand_as(v)
                                 for n, v in y.items()})
    return analyse(jacobian(circuit, y), method, dt, leak)


# -- smoothed spectral abscissa ---------------------------------------------------------------

def _lyapunov_parts(A: torch.Tensor):
    """Eigendecomposition pieces for solving ``(A − sI)P + P(A − sI)ᵀ = −I`` for many s."""
    lam, V = torch.linalg.eig(A)
    Vinv = torch.linalg.inv(V)
    C = Vinv @ Vinv.mH                  # P = V P̃ Vᴴ,  P̃_ij = C_ij / (2s − λ_i − λ̄_j)
    G = V.mH @ V                        # Q = V⁻ᴴ Q̃ V⁻¹, Q̃_ij = G_ij / (2s − λ̄_i − λ_j)
    return lam, V, Vinv, C, G


def smoothed_spectral_abscissa(A: torch.Tensor, epsilon: float = 0.01, iters: int = 80):
    """``s̃_ε(A)``: the s > max Re λ(A) with ``∫₀^∞ ‖e^{(A−sI)t}‖_F² dt = 1/ε``, and its
    gradient ``QP / tr(QP)`` with respect to ``A`` (both batched over leading axes)."""
    check_finite_tensor("A", A)
    if A.dim() < 2 or A.shape[-1] != A.shape[-2] or A.numel() == 0:
        raise ValueError(f"A: received shape {tuple(A.shape)}, expected square matrices "
                         "[..., D, D] with D ≥ 1")
    epsilon = positive_float("epsilon", epsilon)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters: received {iters!r}, expected an integer ≥ 1")
    lam, V, Vinv, C, G = _lyapunov_parts(A)
    denom = lambda s: 2 * s[..., None, None] - lam[..., :, None] - lam.conj()[..., None, :]

    def trace_p(s):
        Pt = C / denom(s)
        return (Pt * G.transpose(-1, -2)).sum((-1, -2)).real

    lo = lam.real.amax(-1)
    hi = lo + 1.0
    for _ in range(60):                 # grow hi until f(hi) < 1/ε
        over = trace_p(hi) > 1 / epsilon
        if not bool(over.any()):
            break
        hi = torch.where(over, lo + 2 * (hi - lo), hi)
    for _ in range(iters):              # f decreases in s: bisection
        mid = (lo + hi) / 2
        above = trace_p(mid) > 1 / epsilon
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    s = (lo + hi) / 2
    P = V @ (C / denom(s)) @ V.mH
    Qm = Vinv.mH @ (G / denom(s).transpose(-1, -2).conj()) @ Vinv
    QP = (Qm @ P).real
    grad = QP / QP.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    return s, grad


def stabilise_feedback(loop_matrix: Callable[[int, torch.Tensor], torch.Tensor], layer: int,
                       B: torch.Tensor, margin: float = 1e-2, epsilon: float = 0.01,
                       rate: float = 0.1, max_steps: int = 2000) -> torch.Tensor:
    """Descend the smoothed spectral abscissa of ``loop_matrix(layer, B)`` with respect to B
    until every replica's spectral abscissa is below ``−margin``. Replicas already stable are
    left untouched. Raises if ``max_steps`` is not enough."""
    if not callable(loop_matrix):
        raise TypeError(f"loop_matrix: received {type(loop_matrix).__name__}, expected a "
                        "function (layer, B) → M")
    check_finite_tensor("B", B, dims=(3,))
    margin = nonnegative_float("margin", margin)
    epsilon = positive_float("epsilon", epsilon)
    rate = positive_float("rate", rate)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps: received {max_steps!r}, expected an integer ≥ 1")
    B = B.clone()
    for _ in range(max_steps):
        M = loop_matrix(layer, B)
        unstable = torch.linalg.eigvals(M).real.amax(-1) >= -margin
        if not bool(unstable.any()):
            return B
        Bv = B.detach().requires_grad_(True)
        Mv = loop_matrix(layer, Bv)
        _, grad_M = smoothed_spectral_abscissa(Mv.detach(), epsilon)
        (grad_B,) = torch.autograd.grad((Mv * grad_M).sum(), Bv)
        step = rate * grad_B / grad_B.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        B = torch.where(unstable[:, None, None], B - step * B.flatten(1).norm(dim=1)[:, None, None],
                        B)
    raise RuntimeError(f"stabilise_feedback: layer {layer} still unstable after {max_steps} "
                       "steps; pass a larger max_steps or rate, or start from feedback='transpose'")
