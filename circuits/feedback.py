"""Feedback pathways that do not follow the forward weights: fixed random matrices.

Every family that offers ``feedback="random"`` (feedback alignment, DI, SDI, DFC, DFA) draws it
here, so one seed gives the same matrices whichever circuit asks.
"""
from __future__ import annotations

from typing import Sequence

import torch


def random_feedback(shapes: Sequence[tuple[int, int]], replicas: int, seed: int,
                    dtype: torch.dtype, device: torch.device | str, *, scale: float = 1.0
                    ) -> list[torch.Tensor]:
    """One matrix ``[S, n, m]`` per shape ``(n, m)``, entries N(0, scale²/m) (variance 1/m keeps
    a feedback signal's size independent of the width it comes from), drawn in float64 from a
    generator seeded with ``seed`` (layer after layer), then cast."""
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(replicas, n, m, generator=g, dtype=torch.float64) / m ** 0.5)
            .to(device=device, dtype=dtype) for n, m in shapes]


__all__ = ["random_feedback"]
