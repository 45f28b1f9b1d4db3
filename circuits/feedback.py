"""Feedback pathways that do not follow the forward weights: fixed random matrices.

Every family that offers ``feedback="random"`` (feedback alignment, DI, SDI, DFC, DFA) draws it
here, so one seed gives the same matrices whichever circuit asks.

The seed rule (every per-replica random draw of :mod:`circuits` follows it): a seed is

* an int: every replica gets the *same* matrices, the ones an S = 1 circuit with that seed gets
  (the common sweep use: one feedback, many gains);
* a sequence, 1-D integer tensor or array of S ints, one per replica: replica s gets exactly the
  matrices an S = 1 circuit with ``seed[s]`` gets;
* ``None`` (the default of the ``feedback_seed`` arguments): one seed per replica, replica s
  from seed s (distinct matrices per replica; the same as ``list(range(S))``). Replica s here
  is the position inside the circuit, which a sweep's chunk restarts at 0: in a sweep pass an
  int (shared) or put ``feedback_seed`` on the grid.

A replica's matrices are a function of its own seed (and the shapes) only: never of S, of the
other replicas or of its position, so a replica can be rerun alone, in any S, in any chunk of a
sweep, in any order (a ``feedback_seed`` axis of :class:`solvers.sweep.Grid` hands each replica its
own seed).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import numpy as np
import torch

_SEED_LOW, _SEED_HIGH = -(1 << 63), (1 << 64) - 1         # what torch.Generator.manual_seed takes


def _as_seed(value: Any) -> int | None:
    """``value`` as a Python int if it is an integer (not a bool), else None."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype.is_floating_point or value.dtype.is_complex \
                or value.dtype == torch.bool:
            return None
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        return None
    value = int(value)
    return value if _SEED_LOW <= value <= _SEED_HIGH else None


def replica_seeds(name: str, seed: Any, replicas: int, *, allow_none: bool = False
                  ) -> list[int]:
    """One int per replica by the seed rule (module docstring): an int is repeated, a sequence
    (list, tuple, 1-D integer tensor or array) of ``replicas`` ints is taken as it is, and with
    ``allow_none`` None is ``0, 1, ..., replicas − 1``.

    Raises ``ValueError`` naming ``name`` for anything else (floats, bools, a wrong length)."""
    if seed is None and allow_none:
        return list(range(replicas))
    one = _as_seed(seed)
    if one is not None:
        return [one] * replicas
    values: list[Any] | None = None
    if isinstance(seed, torch.Tensor) and seed.dim() == 1:
        values = list(seed.detach().cpu().unbind(0))
    elif isinstance(seed, np.ndarray) and seed.ndim == 1:
        values = list(seed)
    elif isinstance(seed, (list, tuple)):
        values = list(seed)
    seeds = None if values is None else [_as_seed(v) for v in values]
    if seeds is None or len(seeds) != replicas or any(s is None for s in seeds):
        raise ValueError(f"{name}: received {seed!r}, expected an int or S = {replicas} ints "
                         "(one seed per replica)")
    return seeds  # type: ignore[return-value]


def per_seed(seeds: Sequence[int], draw: Callable[[torch.Generator], list[torch.Tensor]]
             ) -> list[torch.Tensor]:
    """``[S, ...]`` stacks of ``draw(generator seeded with seed[s])``, layer by layer. Each
    distinct seed is drawn once, so replicas with equal seeds are bit-identical."""
    cache: dict[int, list[torch.Tensor]] = {}
    for s in seeds:
        if s not in cache:
            cache[s] = draw(torch.Generator().manual_seed(s))
    layers = len(cache[seeds[0]])
    return [torch.stack([cache[s][l] for s in seeds]) for l in range(layers)]


def random_feedback(shapes: Sequence[tuple[int, int]], replicas: int, seed: Any,
                    dtype: torch.dtype, device: torch.device | str, *, scale: float = 1.0,
                    name: str = "feedback_seed") -> list[torch.Tensor]:
    """One matrix ``[S, n, m]`` per shape ``(n, m)``, entries N(0, scale²/m) (variance 1/m keeps
    a feedback signal's size independent of the width it comes from).

    ``seed``: an int (every replica the same matrices), S ints (replica s from ``seed[s]``) or
    None (replica s from seed s), see the module docstring. Each replica's matrices are drawn
    in float64 from a generator seeded with its seed, layer after layer, then cast; ``name`` is
    the argument named in errors."""
    seeds = replica_seeds(name, seed, replicas, allow_none=True)

    def draw(g: torch.Generator) -> list[torch.Tensor]:
        return [scale * torch.randn(n, m, generator=g, dtype=torch.float64) / m ** 0.5
                for n, m in shapes]

    return [B.to(device=device, dtype=dtype) for B in per_seed(seeds, draw)]


__all__ = ["random_feedback", "replica_seeds", "per_seed"]
