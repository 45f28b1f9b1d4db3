"""Named state ↔ one flat tensor per replica.

A circuit's state is a mapping of named tensors that all lead with the replica axis S
(populations ``[S, B, n]``, weights ``[S, n_out, n_in]``). The solver works on one flat tensor
``[S, D]`` so that a step is a handful of kernels whatever the number of populations, and so
that per-replica norms, freezing and recording are single operations. :class:`Layout` converts
between the two; ``unpack`` returns views, so it costs no copy.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

State = dict[str, torch.Tensor]


class Layout:
    """Names, per-replica shapes, dtype and device of a state mapping."""

    def __init__(self, example: Mapping[str, torch.Tensor]):
        if not isinstance(example, Mapping) or not example:
            raise TypeError(f"y0: received {type(example).__name__}, expected a non-empty mapping "
                            "of names to tensors shaped [S, ...]")
        first = next(iter(example.values()))
        if not isinstance(first, torch.Tensor) or first.dim() < 1:
            raise TypeError(f"y0: values must be tensors with a leading replica axis S, "
                            f"received {type(first).__name__}")
        self.replicas = first.shape[0]
        self.dtype, self.device = first.dtype, first.device
        self.names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []
        for name, value in example.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"y0[{name!r}]: received {type(value).__name__}, expected a tensor")
            if value.dim() < 1 or value.shape[0] != self.replicas:
                raise ValueError(f"y0[{name!r}]: received shape {tuple(value.shape)}, expected a "
                                 f"leading replica axis of size S = {self.replicas}")
            if value.dtype != self.dtype or value.device != self.device:
                raise ValueError(f"y0[{name!r}]: received {value.dtype} on {value.device}, expected "
                                 f"{self.dtype} on {self.device} like the other populations")
            if not value.is_floating_point():
                raise TypeError(f"y0[{name!r}]: received dtype {value.dtype}, expected a floating "
                                "point dtype")
            self.names.append(name)
            self.shapes.append(tuple(value.shape[1:]))
        self.sizes = [math.prod(s) for s in self.shapes]
        self.size = sum(self.sizes)

    def pack(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{name: [S, *shape]}`` → ``[S, D]`` (a new tensor)."""
        return torch.cat([state[n].reshape(self.replicas, -1) for n in self.names], dim=1)

    def unpack(self, flat: torch.Tensor) -> State:
        """``[..., S, D]`` → ``{name: [..., S, *shape]}`` as views of ``flat``."""
        lead = flat.shape[:-1]
        parts = flat.split(self.sizes, dim=-1)
        return {n: p.view(*lead, *s) for n, p, s in zip(self.names, parts, self.shapes)}
