"""Output targets from a loss's gradient, for every family (SPEC §1–§5).

Every family takes a *target* ``[S, B, n_L]`` and builds its output error from ``target − r_L``
with its own convention: DI's ``δ_L = φ'(a_L) ⊙ (target − r_L)``, DFC's nudged output
``r_L* = r_L^ff + λ (target − r_L^ff)``, target propagation's ``τ_L = h_L − β ∂ℒ/∂h_L`` with
``ℒ = ½‖target − r_L‖²``, predictive coding's output clamped to the target (error divided by
``σ²_L``). The target whose squared error has the gradient of another loss ℒ at the current
output ``r_L``,

    target = r_L − ∂ℒ/∂r_L,

therefore turns every one of those conventions into its loss-gradient form, with the family's own
nudge untouched: DI's ``δ_L = −∂ℒ/∂a_L``, DFC's ``r_L* = r_L^ff − λ ∂ℒ/∂r_L`` (Meulemans et al.
2021), TP's ``τ_L = h_L − β ∂ℒ/∂h_L`` (Bengio 2020; Meulemans et al. 2020), PC's output error
``−∂ℒ/∂r_L / σ²_L``. For the squared error the target is the label itself (returned as given, so
nothing changes bit for bit).

Losses, per example, on the network's output ``r_L`` (for cross-entropy: the logits, so the
output layer should be linear):

* ``squared_error``: ``ℒ = ½‖r_L − y‖²``, ``∂ℒ/∂r_L = r_L − y``;
* ``cross_entropy``: ``ℒ = −Σ_k y_k log softmax(r_L)_k`` (y one-hot, or any distribution),
  ``∂ℒ/∂r_L = softmax(r_L) − y``.

The equivalent target depends on the output, hence on the weights: a learning circuit computes it
when an example is presented, at the weights of the state then (:class:`circuits.Plastic`,
``loss=``).
"""
from __future__ import annotations

import torch

LOSSES = ("squared_error", "cross_entropy")


def _check(loss: str, output: torch.Tensor, labels: torch.Tensor) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss: received {loss!r}, expected one of {list(LOSSES)}")
    if labels.shape[-1] != output.shape[-1]:
        raise ValueError(f"labels: received last dimension {labels.shape[-1]}, expected "
                         f"n_L = {output.shape[-1]} like the output (one-hot labels for "
                         "cross_entropy)")


def loss_value(loss: str, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ℒ per example ``[..., B]`` for outputs ``[..., B, n_L]`` and labels broadcastable to them."""
    _check(loss, output, labels)
    if loss == "squared_error":
        return 0.5 * ((output - labels) ** 2).sum(-1)
    return -(labels * torch.log_softmax(output, dim=-1)).sum(-1)


def loss_gradient(loss: str, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``∂ℒ/∂r_L`` per example, shaped like ``output``."""
    _check(loss, output, labels)
    if loss == "squared_error":
        return output - labels
    return torch.softmax(output, dim=-1) - labels


def equivalent_target(loss: str, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``r_L − ∂ℒ/∂r_L``: the target whose squared error has ℒ's gradient at ``output`` (the
    labels themselves for ``squared_error``)."""
    if loss == "squared_error":
        _check(loss, output, labels)
        return labels.expand_as(output) if labels.shape != output.shape else labels
    return output - loss_gradient(loss, output, labels)


__all__ = ["LOSSES", "loss_value", "loss_gradient", "equivalent_target"]
