"""Streams of examples for training as one integration: which minibatch is shown when."""
from __future__ import annotations

import torch


def minibatch_order(n: int, batch: int, epochs: int, seed: int) -> torch.Tensor:
    """``[epochs · ⌊n/B⌋, B]`` indices: each epoch a fresh permutation of ``0..n-1`` cut into
    minibatches (the remainder dropped). A pure function of its arguments, so a resumed run
    finds the rest of the order from its position alone."""
    g = torch.Generator().manual_seed(seed)
    per_epoch = n // batch
    return torch.cat([torch.randperm(n, generator=g)[:per_epoch * batch].view(per_epoch, batch)
                      for _ in range(epochs)])


__all__ = ["minibatch_order"]
