"""The ``exp_partitioned`` step for training settling circuits: the credit populations by the
exact flow of their linearisation, the weights by Euler.

A settling credit circuit (DI, SDI, DFC, target propagation) is affine in its populations at
fixed weights, or nearly so, and its settle is what costs: Euler needs a step below its fastest
time constant for hundreds of steps per example. Here the populations step as
``z ← z + h φ₁(hJ̄) ż`` with ``J̄`` a batch-averaged Jacobian frozen between refreshes, which is
their exact flow while the gate holds the weights still and stays consistent (a fixed point of
the field is a fixed point of the step, for any ``J̄``) once they learn.
"""
from __future__ import annotations

from typing import Any

import torch

from .state import Layout, State


class PartitionedExponential:
    """The ``exp_partitioned`` step: the circuit's fast populations (``circuit.fast``, each
    ``[S, B, n]``) advance by exponential Rosenbrock–Euler with the batch-averaged Jacobian of
    their own dynamics, ``z ← z + h φ₁(hJ̄) ż`` (one batched matmul per step), the rest (the
    weights) by Euler. ``J̄`` (per replica, ``[S, D_f, D_f]``) is computed at a presentation's jump
    (every ``relinearise_every``-th, :func:`solvers.train`) with the weights there and frozen
    until the next refresh: the
    circuit's closed form ``fast_jacobian(y)`` where it has one, else Jacobian-vector products
    of its ``fast_field(t, y)`` (the credit populations' own dynamics at fixed weights, without
    the weight change, which the Jacobian does not need).

    Why: a settling credit circuit is affine in its populations at fixed weights (DI, SDI,
    DDTP-linear; DFC near its feed-forward pass), with a Jacobian that is the same for every
    example of the batch (DI and SDI with one hidden layer: the loop matrix; deeper nets and DFC
    get the batch mean), so this step *is* its exact flow whatever
    h while the gate holds the weights still, and stays consistent (fixed points of f are fixed
    points of the step, for any J̄) once the weights learn. A settle then takes a handful of
    steps instead of the hundreds Euler needs at the circuit's fastest time constant."""

    def __init__(self, circuit: Any, layout: Layout):
        fast = list(getattr(circuit, "fast", None) or [])
        if not fast:
            raise ValueError("method: received 'exp_partitioned' for a circuit without fast "
                             "populations (circuit.fast), expected a settling learning circuit "
                             "(circuits.Plastic with Settling or Targets); use 'euler'")
        shapes = dict(zip(layout.names, layout.shapes))
        if any(len(shapes[n]) != 2 for n in fast) or len({shapes[n][0] for n in fast}) != 1:
            raise ValueError(f"method: 'exp_partitioned' needs fast populations shaped "
                             f"[S, B, n]; received {({n: shapes[n] for n in fast})}")
        self.circuit, self.layout, self.fast = circuit, layout, fast
        self.widths = [shapes[n][1] for n in fast]
        self.field = circuit.vector_field
        self.P: dict[float, torch.Tensor] = {}
        self.J: torch.Tensor | None = None

    def _split(self, z: torch.Tensor) -> State:
        return dict(zip(self.fast, z.split(self.widths, dim=-1)))

    def jump(self, t: float, y: torch.Tensor) -> None:
        """Linearise the fast block at the state of the jump (weights frozen)."""
        state = self.layout.unpack(y)
        closed = getattr(self.circuit, "fast_jacobian", None)
        self.J = None if closed is None else closed(state)
        self.P = {}
        if self.J is not None:                    # the circuit's closed form
            return
        z = torch.cat([state[n] for n in self.fast], dim=-1)             # [S, B, D_f]
        S, B, D = z.shape

        field = getattr(self.circuit, "fast_field", None) or self.field

        def fast_field(zz: torch.Tensor) -> torch.Tensor:
            out = field(t, {**state, **self._split(zz)})
            return torch.cat([out[n] for n in self.fast], dim=-1)
        basis = torch.eye(D, dtype=z.dtype, device=z.device)[:, None, None, :].expand(D, S, B, D)
        cols = torch.func.vmap(lambda v: torch.func.jvp(fast_field, (z,), (v,))[1])(basis)
        self.J = cols.mean(2).permute(1, 2, 0)                           # [S, D_f, D_f]

    def _propagator(self, h: float) -> torch.Tensor:
        """``(h φ₁(hJ̄))ᵀ`` from one ``matrix_exp`` of ``[[hJ̄, hI], [0, 0]]``."""
        if h not in self.P:
            J = self.J
            S, D, _ = J.shape
            M = torch.zeros(S, 2 * D, 2 * D, dtype=J.dtype, device=J.device)
            M[:, :D, :D] = h * J
            M[:, :D, D:] = h * torch.eye(D, dtype=J.dtype, device=J.device)
            self.P[h] = torch.linalg.matrix_exp(M)[:, :D, D:].transpose(-1, -2).contiguous()
        return self.P[h]

    def __call__(self, t: float, y: torch.Tensor, h: float) -> torch.Tensor:
        state = self.layout.unpack(y)
        out = self.field(t, state)
        z = torch.cat([state[n] for n in self.fast], dim=-1)
        dz = torch.cat([out[n] for n in self.fast], dim=-1)
        new = self._split(torch.baddbmm(z, dz, self._propagator(h)))
        return torch.cat([(new[n] if n in new else torch.add(state[n], out[n], alpha=h))
                          .reshape(-1) for n in self.layout.names])


#: fixed-step methods :func:`train` takes besides the tableaux of :mod:`solvers.methods`
TRAINING_METHODS = ("exp_partitioned",)

__all__ = ["PartitionedExponential", "TRAINING_METHODS"]
