"""Closed-form credit signals (SPEC §7) and the alignment monitor.

Each function returns the per-layer credit ``δ_ℓ`` (on pre-activations, ``[S, B, n_ℓ]``) for
ℓ = 1..L given the output credit ``δ_L``. Backprop, feedback alignment, pseudo-backprop and
NDI are one *cascade* with different maps from ``δ_ℓ`` to the signal below, then
``δ_{ℓ-1} = φ'(a_{ℓ-1}) ⊙ signal``; damped Gauss-Newton inverts the whole output Jacobian.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .network import Forward, ForwardNetwork
from .parameters import nonnegative_float

Invert = Callable[[int, torch.Tensor], torch.Tensor]


def cascade(net: ForwardNetwork, fwd: Forward, delta_L: torch.Tensor,
            invert: Invert) -> list[torch.Tensor]:
    """``δ_{ℓ-1} = φ'(a_{ℓ-1}) ⊙ invert(ℓ, δ_ℓ)`` from the top; returns ``[δ_1, ..., δ_L]``."""
    deltas = [delta_L]
    for l in range(net.L, 1, -1):
        deltas.append(fwd.dphi[l - 2] * invert(l, deltas[-1]))
    return deltas[::-1]


def backprop(net: ForwardNetwork, fwd: Forward, delta_L: torch.Tensor) -> list[torch.Tensor]:
    return cascade(net, fwd, delta_L, lambda l, d: d @ net.weights[l - 1])


def feedback_alignment(net: ForwardNetwork, fwd: Forward, delta_L: torch.Tensor,
                       feedback: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``feedback[ℓ-2]`` is ``B_ℓ`` ``[S, n_{ℓ-1}, n_ℓ]`` for ℓ = 2..L (fixed, random)."""
    if not isinstance(feedback, (list, tuple)) or len(feedback) != net.L - 1:
        raise ValueError(f"feedback: received {type(feedback).__name__}"
                         f"{' of %d' % len(feedback) if hasattr(feedback, '__len__') else ''}, "
                         f"expected {net.L - 1} matrices B_ℓ [S, n_{{ℓ-1}}, n_ℓ] (ℓ = 2..L)")
    return cascade(net, fwd, delta_L, lambda l, d: d @ feedback[l - 2].transpose(-1, -2))


def pseudo_backprop(net: ForwardNetwork, fwd: Forward, delta_L: torch.Tensor
                    ) -> list[torch.Tensor]:
    pinv = [torch.linalg.pinv(W) for W in net.weights]
    return cascade(net, fwd, delta_L, lambda l, d: d @ pinv[l - 1].transpose(-1, -2))


def gauss_newton_step(J: torch.Tensor, v: torch.Tensor, damping: float = 0.0,
                      rtol: float | None = None) -> torch.Tensor:
    """The damped Gauss-Newton step ``x = J⁺_λ v`` for a batch of Jacobians (SPEC §5).

    ``J`` ``[..., m, n]`` (e.g. ``[S, B, n_L, n_ℓ]``), ``v`` ``[..., m]``; returns ``[..., n]``:

    * λ = ``damping`` = 0: ``x = J⁺ v``, the Moore–Penrose pseudo-inverse, from the SVD
      ``J = U diag(s) Vᵀ``: ``x = V diag(1/s) Uᵀ v`` over the singular values ``s_i >
      rtol·s_max`` (the others, numerically zero, are dropped: the minimum-norm least-squares
      solution). Its error grows like cond(J)·ε, not cond(J)²·ε as a solve of the Gram matrix
      ``J Jᵀ`` does, and it is right when ``J Jᵀ`` is singular (a layer narrower than the output).
      ``rtol`` None: ``max(m, n)·ε`` of the dtype (numpy's and ``torch.linalg.pinv``'s default).
    * λ > 0: ``x = Jᵀ(J Jᵀ + λI)⁻¹ v = (JᵀJ + λI)⁻¹ Jᵀ v``, solving the smaller Gram system
      (``m × m`` when ``m ≤ n``, else ``n × n``); positive definite, so well posed. As λ → 0 it
      tends to ``J⁺ v`` (for any rank: each singular direction is scaled by ``s/(s² + λ)``).

    Batched over all leading axes (replicas and examples alike)."""
    damping = nonnegative_float("damping", damping)
    m, n = J.shape[-2], J.shape[-1]
    if v.shape[-1] != m:
        raise ValueError(f"v: received shape {tuple(v.shape)}, expected [..., {m}] (the rows "
                         f"of J, shape {tuple(J.shape)})")
    if damping == 0.0:
        if rtol is None:
            rtol = max(m, n) * torch.finfo(J.dtype).eps
        elif isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol >= 0 \
                or rtol == float("inf"):
            raise ValueError(f"rtol: received {rtol!r}, expected a finite number ≥ 0 (the "
                             "rank cutoff relative to the largest singular value) or None")
        U, s, Vh = torch.linalg.svd(J, full_matrices=False)     # [.., m, k], [.., k], [.., k, n]
        keep = s > rtol * s[..., :1]
        inv_s = torch.where(keep, 1 / torch.where(keep, s, torch.ones_like(s)),
                            torch.zeros_like(s))
        coeff = (v[..., None, :] @ U)[..., 0, :] * inv_s                  # diag(1/s) Uᵀ v
        return (coeff[..., None, :] @ Vh)[..., 0, :]
    Jt = J.transpose(-1, -2)
    if m <= n:
        eye = damping * torch.eye(m, dtype=J.dtype, device=J.device)
        return (Jt @ torch.linalg.solve(J @ Jt + eye, v[..., None]))[..., 0]
    eye = damping * torch.eye(n, dtype=J.dtype, device=J.device)
    return torch.linalg.solve(Jt @ J + eye, (Jt @ v[..., None]))[..., 0]


def damped_pseudo_inverse(J: torch.Tensor, damping: float = 0.0,
                          rtol: float | None = None) -> torch.Tensor:
    """The matrix ``J⁺_λ = Jᵀ(J Jᵀ + λI)⁻¹ = (JᵀJ + λI)⁻¹Jᵀ`` ``[..., n, m]`` of
    :func:`gauss_newton_step` (λ = 0: the pseudo-inverse ``torch.linalg.pinv`` with relative
    cutoff ``rtol``, default ``max(m, n)·ε``; λ > 0: the smaller Gram system solved)."""
    damping = nonnegative_float("damping", damping)
    m, n = J.shape[-2], J.shape[-1]
    if damping == 0.0:
        if rtol is None:
            rtol = max(m, n) * torch.finfo(J.dtype).eps
        return torch.linalg.pinv(J, rtol=rtol)
    Jt = J.transpose(-1, -2)
    if m <= n:
        eye = damping * torch.eye(m, dtype=J.dtype, device=J.device)
        return torch.linalg.solve(J @ Jt + eye, J).transpose(-1, -2)    # (JJᵀ+λI) symmetric
    eye = damping * torch.eye(n, dtype=J.dtype, device=J.device)
    return torch.linalg.solve(Jt @ J + eye, Jt)


def gauss_newton(net: ForwardNetwork, fwd: Forward, delta_L: torch.Tensor,
                 damping: float = 1e-3, joint: bool = False,
                 rtol: float | None = None) -> list[torch.Tensor]:
    """Damped Gauss-Newton credit: ``J̄_ℓᵀ (G + λI)⁻¹ δ_L`` with ``J̄_ℓ = ∂a_L/∂a_ℓ``
    ``[S, B, n_L, n_ℓ]`` (pre-activations; ``δ_L`` ``[S, B, n_L]``; returns ``[δ_1..δ_L]``).

    Per layer (default) ``G = J̄_ℓ J̄_ℓᵀ``: each layer on its own takes the minimum-norm change
    of its pre-activations that produces δ_L (SPEC §5's GN targets), by
    :func:`gauss_newton_step`: λ = 0 is the Moore–Penrose pseudo-inverse ``J̄_ℓ⁺ δ_L`` from an
    SVD with relative rank cutoff ``rtol`` (right, and accurate, also when a layer is narrower
    than the output and ``J̄ J̄ᵀ`` is singular), λ > 0 the damped solve. ``joint=True`` uses
    ``G = Σ_k J̄_k J̄_kᵀ``: the minimum-norm change spread over *all* layers at once, which is what
    deep feedback control with ``Q = Jᵀ`` delivers as α → 0 (SPEC §2); G ⪰ I there (J̄_L = I),
    so it is solved directly. Large λ gives the gradient direction / λ."""
    nonnegative_float("damping", damping)
    Js = net.output_jacobians(fwd)
    nL = Js[-1].shape[-2]
    if joint:
        eye = damping * torch.eye(nL, dtype=delta_L.dtype, device=delta_L.device)
        G = sum(J @ J.transpose(-1, -2) for J in Js) + eye
        solved = torch.linalg.solve(G, delta_L[..., None])
        return [(J.transpose(-1, -2) @ solved)[..., 0] for J in Js]
    return [gauss_newton_step(J, delta_L, damping, rtol) for J in Js]


def clip_hidden(deltas: Sequence[torch.Tensor], clip: float | None) -> list[torch.Tensor]:
    """The credits with each example's hidden ``‖δ_ℓ‖`` (ℓ < L, over units) capped at ``clip``
    (the output credit untouched; ``None``: unchanged). Podlaski & Machens clip their updates
    so that an inversion of tiny initial weights does not blow them up."""
    if clip is None:
        return list(deltas)
    capped = [d * torch.clamp(clip / d.norm(dim=-1, keepdim=True).clamp_min(1e-300), max=1.0)
              for d in deltas[:-1]]
    return capped + [deltas[-1]]


def weight_updates(fwd: Forward, deltas: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``ΔW_ℓ = Σ_b δ_ℓ r_{ℓ-1}ᵀ`` for each layer; ``δ`` may carry extra leading axes
    (e.g. time: ``[T, S, B, n]`` → ``[T, S, n_ℓ, n_{ℓ-1}]``)."""
    return [d.transpose(-1, -2) @ r for d, r in zip(deltas, fwd.r[:-1])]


def angle(a: torch.Tensor | Sequence[torch.Tensor], b: torch.Tensor | Sequence[torch.Tensor],
          dims: int = 2) -> torch.Tensor:
    """Angle in degrees between ``a`` and ``b``, flattening their last ``dims`` axes (and
    concatenating lists: the angle between whole weight updates). Leading axes are kept."""
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise ValueError(f"dims: received {dims!r}, expected an integer ≥ 1 (trailing axes "
                         "to flatten)")
    def flat(x):
        xs = [x] if isinstance(x, torch.Tensor) else list(x)
        return torch.cat([t.flatten(-dims) for t in xs], dim=-1)
    fa, fb = flat(a), flat(b)
    fa, fb = torch.broadcast_tensors(fa, fb)
    tiny = torch.finfo(fa.dtype).tiny
    ua = fa / fa.norm(dim=-1, keepdim=True).clamp_min(tiny)
    ub = fb / fb.norm(dim=-1, keepdim=True).clamp_min(tiny)
    # 2·atan2(‖â − b̂‖, ‖â + b̂‖) is accurate near 0° and 180°, where arccos(cos) is not.
    return torch.rad2deg(2 * torch.atan2((ua - ub).norm(dim=-1), (ua + ub).norm(dim=-1)))


def alignment(fwd: Forward, deltas: Sequence[torch.Tensor],
              references: dict[str, Sequence[torch.Tensor]],
              layers: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Angle between the weight update a circuit's credit ``deltas`` implies and each
    reference's, over the hidden layers (default ℓ = 1..L-1, where methods differ).

    ``deltas[ℓ-1]`` may be a trajectory ``[T, S, B, n_ℓ]``: the result is then ``[T, S]``.
    """
    L = len(deltas)
    layers = list(range(1, L)) if layers is None else list(layers)
    bad = [l for l in layers if isinstance(l, bool) or not isinstance(l, int) or not 1 <= l <= L]
    if bad:
        raise ValueError(f"layers: received {layers!r}, expected layer numbers 1..{L}")
    if not layers:
        layers = [L]
    mine = weight_updates(fwd, deltas)
    out = {}
    for name, ref in references.items():
        theirs = weight_updates(fwd, ref)
        out[name] = angle([mine[l - 1] for l in layers], [theirs[l - 1] for l in layers])
    return out


def reference_credits(net: ForwardNetwork, fwd: Forward, delta_L: torch.Tensor,
                      feedback: Sequence[torch.Tensor] | None = None,
                      damping: float = 1e-3) -> dict[str, list[torch.Tensor]]:
    """The closed-form credit of every baseline, keyed by name (FA only if ``feedback`` given)."""
    refs = {"backprop": backprop(net, fwd, delta_L),
            "pseudo_backprop": pseudo_backprop(net, fwd, delta_L),
            "gauss_newton": gauss_newton(net, fwd, delta_L, damping),
            "gauss_newton_joint": gauss_newton(net, fwd, delta_L, damping, joint=True)}
    if feedback is not None:
        refs["feedback_alignment"] = feedback_alignment(net, fwd, delta_L, feedback)
    return refs


__all__ = ["clip_hidden", "cascade", "backprop", "feedback_alignment", "pseudo_backprop", "gauss_newton",
           "gauss_newton_step", "damped_pseudo_inverse",
           "weight_updates", "angle", "alignment", "reference_credits"]
