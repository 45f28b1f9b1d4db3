"""Pointwise rate functions φ and their derivatives φ', by name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Activation:
    """φ, φ' of the pre-activation, and (where it is cheaper) φ' written through the rate
    ``r = φ(a)``: ``dphi_of_rate(r) = φ'(a)`` bit for bit (tanh: 1 − r², saving a tanh)."""

    name: str
    phi: Fn
    dphi: Fn
    dphi_of_rate: Fn | None = None

    def derivative(self, a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """φ'(a) given a and r = φ(a)."""
        return self.dphi(a) if self.dphi_of_rate is None else self.dphi_of_rate(r)


def _sigmoid_prime(a: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(a)
    return s * (1 - s)


def _mish_prime(a: torch.Tensor) -> torch.Tensor:
    sp = F.softplus(a)
    t = torch.tanh(sp)
    return t + a * torch.sigmoid(a) * (1 - t * t)


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("linear", lambda a: a, torch.ones_like),
    Activation("tanh", torch.tanh, lambda a: 1 - torch.tanh(a) ** 2, lambda r: 1 - r ** 2),
    Activation("relu", torch.relu, lambda a: (a > 0).to(a.dtype)),
    Activation("sigmoid", torch.sigmoid, _sigmoid_prime),
    Activation("mish", F.mish, _mish_prime),
)}


def get_activation(name: str, parameter: str = "activation") -> Activation:
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"{parameter}: received {name!r}, expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]
