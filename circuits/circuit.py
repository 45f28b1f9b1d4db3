"""What every circuit is: a vector field over named populations.

A circuit declares its state populations (name, role, width, layer), builds its initial state,
and returns time derivatives. It never steps, never owns dt and never records: that is
:func:`solvers.solve`'s job. ``observe`` adds the populations that are functions of the state
(feedback delivered, credit, forward rates) for plotting and monitors, and works on any leading
axes, so it can be applied to a whole recorded trajectory ``[T, S, ...]`` at once.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
import types

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

    def _prepare_drive(self, x: torch.Tensor, given: torch.Tensor, name: str = "target") -> None:
        """Check and store the drive once: ``self.x [S, B, n_0]`` and ``self.given
        [S, B, n_L]`` (a target or an output error), with matching batch sizes."""
        net = self.network
        self.x = net.input(x)
        self.given = net.output_like(given, name)
        if self.given.shape[1] != self.x.shape[1]:
            raise ValueError(f"{name}: received {self.given.shape[1]} examples, expected B = "
                             f"{self.x.shape[1]} like x")
        self.batch = self.x.shape[1]

    def roles(self) -> dict[str, Role]:
        return {p.name: p.role for p in self.populations}

    def take(self, index: torch.Tensor) -> "Circuit":
        """This circuit restricted to the replicas ``index`` (a 1-D long tensor of replica
        indices): what :func:`solvers.solve` calls to shrink a batch once replicas have stopped.

        Every per-replica tensor leads with the replica axis S (parameters ``[S, 1, 1]``, drives
        ``[S, B, n]``, per-replica matrices ``[S, n, m]``); shared ones lead with 1 or have no
        replica axis (a matrix shared by all replicas is stored ``[n, m]``). So a tensor is
        indexed when it has at least 3 dimensions and S leading ones; the forward network,
        lists, tuples and dicts are walked. A circuit that keeps per-replica data in another
        form overrides this."""
        index = torch.as_tensor(index, dtype=torch.long)
        return _take(self, index, self.S)

    def __call__(self, t: float, y: State) -> State:
        return self.vector_field(t, y)


def _take(value, index: torch.Tensor, S: int):
    """``value`` with every per-replica tensor (≥ 3-D, leading S) restricted to ``index``."""
    if isinstance(value, torch.Tensor):
        if value.dim() >= 3 and value.shape[0] == S and S > 1:
            return value[index.to(value.device)]
        return value
    if isinstance(value, (list, tuple)) and not isinstance(value, str):
        items = [_take(v, index, S) for v in value]
        return items if isinstance(value, list) else type(value)(items) \
            if not hasattr(value, "_fields") else type(value)(*items)
    if isinstance(value, dict):
        return {k: _take(v, index, S) for k, v in value.items()}
    if isinstance(value, (Circuit, ForwardNetwork)) or _is_replica_holder(value):
        new = object.__new__(type(value))
        new.__dict__.update({k: _take(v, index, S) for k, v in value.__dict__.items()})
        n = int(index.numel())
        if isinstance(value, ForwardNetwork):
            if value.replicas == S:
                new.replicas = n
        elif getattr(value, "S", None) == S:
            new.S = n
        return new
    return value


def _is_replica_holder(value) -> bool:
    """Objects held by circuits that carry per-replica tensors themselves (feedback and
    decoder objects): instances of this package's classes (not functions or methods)."""
    return hasattr(value, "__dict__") and type(value).__module__.startswith("circuits.") \
        and not isinstance(value, (Enum, Population, types.FunctionType, types.MethodType))


class CreditCircuit(Circuit):
    """A circuit that assigns credit to the weights of a forward network for a presented input
    ``x`` and target (DI, SDI, DFC, target propagation).

    What is fixed (widths, gains, leak, time constants, feedback rule) is set and validated once
    by the constructor; what depends on the weights and the drive (the forward pass, the output
    error, weight-dependent feedback such as ``−Wᵀ``) is computed by :meth:`_derive`. A learning
    circuit whose weights are state calls :meth:`rebind` with the weights of the current state
    and the presented example: the same circuit on other weights or another example, with no
    validation, no copies of parameters and no host synchronisation."""

    @abstractmethod
    def _derive(self, compact_weights: bool) -> None:
        """Compute the weight- and drive-dependent quantities from ``self.network``,
        ``self.x`` and ``self.given``. ``compact_weights``: share matrices that are equal across
        replicas (a check with a host sync: done at construction only)."""

    @abstractmethod
    def credits(self, y: State) -> list[torch.Tensor]:
        """``[credit_1, ..., credit_L]`` ``[S, B, n_ℓ]``: what each layer's weights learn from."""

    def rebind(self, network: ForwardNetwork | None = None, x: torch.Tensor | None = None,
               given: torch.Tensor | None = None) -> "CreditCircuit":
        """This circuit on other weights (``network``, same architecture and S) and/or another
        drive (``x [S, B, n_0]``, ``given [S, B, n_L]``, already prepared: not checked)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        if network is not None:
            new.network = network
        if x is not None:
            new.x = x
        if given is not None:
            new.given = given
        new._derive(False)
        return new
