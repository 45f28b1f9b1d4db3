"""What every circuit is: a vector field over named populations.

A circuit declares its state populations (name, role, width, layer), builds its initial state,
and returns time derivatives. It never steps, never owns dt and never records: that is
:func:`solvers.solve`'s job. ``observe`` adds the populations that are functions of the state
(feedback delivered, credit, forward rates) for plotting and monitors, and works on any leading
axes, so it can be applied to a whole recorded trajectory ``[T, S, ...]`` at once.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .parameters import Population, Role

State = dict[str, torch.Tensor]


class Circuit(ABC):
    """Abstract base: subclasses set ``self.populations`` and implement the methods below."""

    populations: list[Population]

    @abstractmethod
    def initial_state(self) -> State:
        """``{name: [S, B, n]}`` at t0."""

    @abstractmethod
    def vector_field(self, t: float, y: State) -> State:
        """``dy/dt`` with the keys and shapes of ``y``."""

    def leak(self, y: State) -> dict[str, torch.Tensor]:
        """Linear decay rate λ per population (``dy/dt = −λ y + ...``) for exponential Euler."""
        return {}

    def observe(self, y: State) -> State:
        """State plus derived populations; default: the state itself."""
        return dict(y)

    def roles(self) -> dict[str, Role]:
        return {p.name: p.role for p in self.populations}

    def __call__(self, t: float, y: State) -> State:
        return self.vector_field(t, y)
