"""Circuits as ``torchdiffeq.odeint`` functions.

``torchdiffeq.odeint(func, y0, t)`` integrates a tensor state; a circuit's state is a mapping of
named populations. :func:`as_odeint` bridges the two with the population-major packing of
:class:`solvers.state.Layout` (the one :func:`solvers.solve` uses)::

    func, y0_flat, unpack = as_odeint(circuit, circuit.initial_state())
    ys = torchdiffeq.odeint(func, y0_flat, ts, method="dopri5")      # [T, N]
    trajectory = unpack(ys)                                            # {name: [T, S, ...]}

Like everything in :mod:`solvers` this knows no circuit: ``f`` is a callable ``f(t, y)`` on
the mapping, or any object with a ``vector_field(t, y)`` method. Only the vector field is used:
a declared ``leak`` (exponential Euler), per-replica stopping, divergence freezing and batch
compaction are :func:`solvers.solve`'s and do not apply here.

``torchdiffeq.odeint_adjoint`` is not supported as such: it needs ``func`` to be a
``torch.nn.Module`` whose ``parameters()`` are the tensors to differentiate, and a circuit keeps
its weights as plain tensors (or, for learning circuits, in the state). Plain ``odeint``
backpropagates through the steps to any tensor the circuit holds that requires grad.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from .solve import _check_y0, _checked_first_output, _vector_field
from .state import Layout, State


class OdeintFunction:
    """``func(t, y_flat) -> dy_flat`` for ``torchdiffeq.odeint``: unpacks the flat state
    ``[N]`` (``N = S · D``, population-major, see :class:`~solvers.state.Layout`) into
    ``{name: [S, ...]}``, evaluates the vector field at ``float(t)`` and packs the derivative
    back into a new ``[N]`` tensor. ``evaluations`` counts the calls."""

    def __init__(self, f: Any, layout: Layout):
        field, _ = _vector_field(f)
        self.layout = layout
        self.field = _checked_first_output(field, layout)   # names, shapes, dtype: first call
        self.evaluations = 0

    def __call__(self, t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
        """``t``: a 0-d tensor (or number); ``y``: ``[N]``. Returns ``dy/dt`` ``[N]``."""
        if not isinstance(y, torch.Tensor) or y.shape != (self.layout.numel,):
            raise ValueError(f"y: received {getattr(y, 'shape', type(y).__name__)}, expected a "
                             f"flat state tensor of shape [{self.layout.numel}] (from as_odeint)")
        self.evaluations += 1
        return self.layout.pack(self.field(float(t), self.layout.unpack(y)))

    def unpack(self, ys: torch.Tensor) -> State:
        """``[..., N]`` (odeint's ``[T, N]`` output, or one state ``[N]``) →
        ``{name: [..., S, ...]}`` as views of ``ys``."""
        if not isinstance(ys, torch.Tensor) or ys.dim() < 1 or ys.shape[-1] != self.layout.numel:
            raise ValueError(f"ys: received {getattr(ys, 'shape', type(ys).__name__)}, expected a "
                             f"tensor [..., {self.layout.numel}] (odeint's [T, N] output)")
        return self.layout.unpack(ys)

    def pack(self, y: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{name: [S, ...]}`` → ``[N]`` (a new tensor)."""
        return self.layout.pack(y)


def as_odeint(f: Any, y0: Mapping[str, torch.Tensor]
              ) -> tuple[OdeintFunction, torch.Tensor, Callable[[torch.Tensor], State]]:
    """``(func, y0_flat, unpack)`` to integrate ``f`` from ``y0`` with ``torchdiffeq.odeint``.

    Args:
        f: ``f(t, y) -> dy/dt`` on ``{name: [S, ...]}``, or an object with a
            ``vector_field(t, y)`` method (a circuit; its populations, replica count, dtype and
            device are checked against ``y0`` as :func:`solvers.solve` does).
        y0: ``{name: [S, ...]}``, all of one floating dtype and device (e.g.
            ``circuit.initial_state()``).

    Returns:
        func: ``func(t, y_flat [N]) -> [N]`` (an :class:`OdeintFunction`).
        y0_flat: ``[N]``, the packed ``y0`` (a new tensor).
        unpack: ``ys [T, N] -> {name: [T, S, ...]}`` (views of ``ys``).
    """
    layout = Layout(y0)
    _check_y0(f, y0, layout)
    func = OdeintFunction(f, layout)
    return func, layout.pack(y0), func.unpack


__all__ = ["OdeintFunction", "as_odeint"]
