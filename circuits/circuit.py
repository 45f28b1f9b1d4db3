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

from .network import ForwardNetwork
from .parameters import Population, Role, as_replica_parameter, resolve_replicas

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

    def _bind(self, network: ForwardNetwork, strictly_positive: tuple[str, ...] = (),
              **parameters) -> None:
        """Set ``self.network`` (copied to S replicas), ``self.S`` and each scalar parameter
        as a ``[S, 1, 1]`` attribute; S is the longest per-replica parameter (or the network's).
        Parameters must be ≥ 0, those named in ``strictly_positive`` > 0."""
        if not isinstance(network, ForwardNetwork):
            raise TypeError(f"network: received {type(network).__name__}, expected a "
                            "circuits.ForwardNetwork")
        S = resolve_replicas(network=[0] * network.replicas, **parameters)
        self.network = net = network.expand(S)
        self.S = S
        for name, value in parameters.items():
            setattr(self, name, as_replica_parameter(name, value, S, net.dtype, net.device,
                                                     allow_minimum=name not in strictly_positive))

    def roles(self) -> dict[str, Role]:
        return {p.name: p.role for p in self.populations}

    def __call__(self, t: float, y: State) -> State:
        return self.vector_field(t, y)
