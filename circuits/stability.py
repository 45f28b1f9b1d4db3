"""Linear stability per replica, and stabilisation of a random feedback matrix.

* :func:`jacobian` linearises any circuit's vector field at a state, per replica, with forward-
  mode autodiff (one ``jvp`` per state coordinate, all replicas at once): ``[S, D, D]``.
* :func:`analyse` gives the eigenvalues, the spectral abscissa ``max Re λ`` (continuous-time
  stability: < 0) and, for a fixed-step method and dt, the spectral radius of the method's
  one-step amplification matrix (discrete stability: < 1). The amplification matrix is obtained by
  taking one step of the method itself on the linear field ``Y ↦ J Y`` from ``Y = I``, so every
  method in :mod:`solvers.methods` (exponential Euler included) is covered without a table of
  stability functions.
* :func:`stabilise_feedback` descends the smoothed spectral abscissa (Vanbiervliet et al. 2009,
  as Podlaski & Machens did for random B), two Lyapunov solves per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from solvers.methods import get_method, rk_step
from solvers.state import Layout

from .circuit import Circuit, State


def jacobian(circuit: Circuit, y: State, t: float = 0.0) -> torch.Tensor:
    """``∂f/∂y`` per replica, ``[S, D, D]``, in the order of
    :meth:`solvers.Layout.pack_by_replica`."""
    layout = Layout(y)
    y_flat = layout.pack_by_replica(y)

    def f(flat: torch.Tensor) -> torch.Tensor:
        return layout.pack_by_replica(circuit.vector_field(t, layout.unpack_by_replica(flat)))

    D = layout.size
    basis = torch.eye(D, dtype=y_flat.dtype, device=y_flat.device)[:, None, :]
    basis = basis.expand(D, layout.replicas, D)
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


def amplification(J: torch.Tensor, method: str, dt: float,
                  leak: torch.Tensor | None = None) -> torch.Tensor:
    """One-step matrix ``A`` with ``y_{n+1} = A y_n`` for ``dy/dt = J y`` (``leak`` ``[S, D]``
    is the decay rate exponential Euler treats exactly)."""
    tableau = get_method(method)
    eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device).expand_as(J)
    return rk_step(tableau, lambda t, Y: J @ Y, 0.0, eye, dt,
                   None if leak is None else leak[..., None])[0]


def analyse(J: torch.Tensor, method: str | None = None, dt: float | None = None,
            leak: torch.Tensor | None = None, tol: float = 1e-10) -> StabilityReport:
    """Stability of ``dy/dt = J y`` per replica (``J`` ``[S, D, D]``)."""
    ev = torch.linalg.eigvals(J)
    abscissa = ev.real.amax(dim=-1)
    report = StabilityReport(ev, abscissa, abscissa < -tol)
    if method is not None:
        if dt is None:
            raise ValueError("dt: received None, expected a step size with method "
                             f"{method!r}")
        radius = torch.linalg.eigvals(amplification(J, method, dt, leak)).abs().amax(dim=-1)
        report.spectral_radius = radius
        report.step_stable = radius < 1 - tol
    return report


def analyse_circuit(circuit: Circuit, y: State | None = None, method: str | None = None,
                    dt: float | None = None) -> StabilityReport:
    """:func:`analyse` of a circuit's linearisation at ``y`` (default: its initial state)."""
    y = circuit.initial_state() if y is None else y
    layout = Layout(y)
    leak = None
    if method is not None and get_method(method).exponential:
        rates = circuit.leak(y)
        leak = layout.pack_by_replica({n: torch.as_tensor(rates.get(n, 0.0), dtype=layout.dtype,
                                               device=layout.device).expand_as(y[n])
                            for n in layout.names})
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
