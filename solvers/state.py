"""Named state ↔ one flat tensor.

A circuit's state is a mapping of named tensors that all lead with the replica axis S
(populations ``[S, B, n]``, weights ``[S, n_out, n_in]``). The solver works on one flat tensor
so that a step is a handful of kernels whatever the number of populations, and recording is one
copy. The flat tensor is *population-major*: population k occupies one contiguous block of
``S × size_k`` numbers, so ``unpack`` hands the circuit contiguous ``[S, ...]`` views (a strided
view would make every matmul in a vector field copy or fall off the fast batched-GEMM path).
Per-replica quantities (norms for the stopping rules, freezing masks) are reduced block by block.

``pack_by_replica`` / ``unpack_by_replica`` give the other order, ``[S, D]``, for the few places
that need one vector per replica (linearisation, comparisons).
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
        self.sizes = [math.prod(s) for s in self.shapes]          # per replica
        self.size = sum(self.sizes)                                # D
        self.blocks = [self.replicas * n for n in self.sizes]     # flat block lengths
        self.numel = sum(self.blocks)                              # N = S · D

    # -- population-major flat vector [..., N] (what solve integrates) -------------------------

    def pack(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{name: [S, *shape]}`` → ``[N]`` (a new tensor)."""
        return torch.cat([state[n].reshape(-1) for n in self.names])

    def unpack(self, flat: torch.Tensor) -> State:
        """``[..., N]`` → ``{name: [..., S, *shape]}`` as contiguous views of ``flat``."""
        lead = flat.shape[:-1]
        parts = flat.split(self.blocks, dim=-1)
        return {n: p.view(*lead, self.replicas, *s)
                for n, p, s in zip(self.names, parts, self.shapes)}

    def _per_replica_blocks(self, flat: torch.Tensor):
        lead = flat.shape[:-1]
        return [p.view(*lead, self.replicas, -1) for p in flat.split(self.blocks, dim=-1)]

    def replica_norm(self, flat: torch.Tensor) -> torch.Tensor:
        """Euclidean norm of each replica's whole state: ``[..., N]`` → ``[..., S]``."""
        blocks = self._per_replica_blocks(flat)
        if len(blocks) == 1:
            return torch.linalg.vector_norm(blocks[0], dim=-1)
        return torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(b, dim=-1) for b in blocks]), dim=0)

    def replica_absmax(self, flat: torch.Tensor) -> torch.Tensor:
        """``max |y|`` per replica (NaN if any entry is NaN): ``[..., N]`` → ``[..., S]``."""
        blocks = self._per_replica_blocks(flat)
        norms = [torch.linalg.vector_norm(b, ord=math.inf, dim=-1) for b in blocks]
        return norms[0] if len(norms) == 1 else torch.stack(norms).amax(0)

    def spread(self, per_replica: torch.Tensor) -> torch.Tensor:
        """A per-replica tensor ``[..., S]`` broadcast to every entry: ``[..., N]``."""
        lead = per_replica.shape[:-1]
        return torch.cat([per_replica[..., :, None].expand(*lead, self.replicas, n)
                          .reshape(*lead, -1) for n in self.sizes], dim=-1)

    def subset(self, replicas: int) -> "Layout":
        """The same populations for another number of replicas (a compacted batch)."""
        new = object.__new__(Layout)
        new.__dict__.update(self.__dict__)
        new.replicas = replicas
        new.blocks = [replicas * n for n in self.sizes]
        new.numel = sum(new.blocks)
        return new

    def scatter(self, flat: torch.Tensor, index: torch.Tensor,
                part: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A copy of ``flat [N]`` with replicas ``index`` replaced by ``part``
        (``{name: [len(index), ...]}``)."""
        out = flat.clone()
        views = self.unpack(out)
        for n in self.names:
            views[n][index] = part[n]
        return out

    # -- replica-major [S, D] (one vector per replica) ----------------------------------------

    def pack_by_replica(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{name: [S, *shape]}`` → ``[S, D]``."""
        return torch.cat([state[n].reshape(self.replicas, -1) for n in self.names], dim=1)

    def unpack_by_replica(self, flat: torch.Tensor) -> State:
        """``[S, D]`` → ``{name: [S, *shape]}`` (strided views)."""
        parts = flat.split(self.sizes, dim=-1)
        return {n: p.reshape(self.replicas, *s) for n, p, s in zip(self.names, parts, self.shapes)}
