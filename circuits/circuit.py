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
from typing import Any, Callable

import torch

from .network import ForwardNetwork
from .parameters import (FLOAT_DTYPES, Population, Role, as_replica_parameter, check_device,
                         resolve_replicas)

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
        indexed when it has at least 3 dimensions and S leading ones; everything else is
        reached as :func:`map_tensors` walks it. A circuit that keeps per-replica data in
        another form overrides this."""
        index = torch.as_tensor(index, dtype=torch.long)
        return _take(self, index, self.S)

    def to(self, device: str | torch.device | torch.dtype | None = None,
           dtype: torch.dtype | None = None) -> "Circuit":
        """A copy of this circuit with every tensor it reaches on ``device`` and, for the
        floating ones, of ``dtype`` (``torch.float32`` or ``torch.float64``); see
        :func:`converted`. ``circuit.to(torch.float32)`` and ``circuit.to("cuda")`` work as
        for a tensor.

        **A copy, not in place** (unlike ``nn.Module.to``): a circuit caches matrices derived
        from its weights and drive (compacted weights, ``−Wᵀ``, Jacobians, the forward pass),
        so converting it piecemeal in place could leave a half-converted object behind an
        error, and code holding the original (a solve in progress, a sweep's template) keeps
        working on it. The original is left untouched; tensors that already have the
        requested device and dtype are shared with it (as ``Tensor.to`` returns the tensor
        itself), objects and containers are new. Derived matrices are converted, not
        recomputed: ``circuit.to(torch.float32)`` carries float64-computed values rounded to
        float32, which agree with a circuit built in float32 to float32 rounding."""
        return converted(self, device, dtype)

    def __call__(self, t: float, y: State) -> State:
        return self.vector_field(t, y)


def _take(value, index: torch.Tensor, S: int):
    """``value`` with every per-replica tensor (≥ 3-D, leading S) restricted to ``index``, and
    each walked object's replica count (``ForwardNetwork.replicas``, a circuit's ``S``) set to
    ``len(index)``."""
    n = int(index.numel())

    def pick(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() >= 3 and tensor.shape[0] == S and S > 1:
            return tensor[index.to(tensor.device)]
        return tensor

    def adjust(old, new) -> None:
        if isinstance(old, ForwardNetwork):
            if old.replicas == S:
                new.replicas = n
        elif old.__dict__.get("S") == S:
            new.S = n

    return map_tensors(value, pick, adjust)


def converted(value, device: str | torch.device | torch.dtype | None = None,
              dtype: torch.dtype | None = None):
    """A copy of ``value`` (a circuit, a forward network, or anything :func:`map_tensors`
    walks) with every reachable tensor moved to ``device``; floating tensors are also cast to
    ``dtype``, integer and boolean ones (indices, seeds, masks) keep their dtype. Every copied
    object's ``dtype`` attribute (a floating ``torch.dtype``, e.g. ``ForwardNetwork.dtype``)
    and ``device`` attribute (a ``torch.device``) are set to the new ones, so tensors the
    object creates later (``torch.eye(n, dtype=net.dtype, device=net.device)``) follow.

    ``device`` may be given a ``torch.dtype`` instead (``value.to(torch.float32)``, as for a
    tensor). ``"cuda"`` is resolved to the current CUDA device (``cuda:0``), the device
    tensors moved there report, so that a solver's device checks agree. An expanded tensor
    (stride 0, e.g. a drive shared by all replicas) is converted once and expanded again.
    Tensors inside objects this walker does not enter (instances of classes from outside
    :mod:`circuits` that are not circuits, e.g. a user's callable object) are not moved."""
    device, dtype = _to_arguments(device, dtype)

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return _moved_tensor(tensor, device, dtype)

    def adjust(old, new) -> None:
        attrs = old.__dict__
        if dtype is not None and isinstance(attrs.get("dtype"), torch.dtype) \
                and attrs["dtype"].is_floating_point:
            new.dtype = dtype
        if device is not None and isinstance(attrs.get("device"), torch.device):
            new.device = device

    return map_tensors(value, move, adjust)


def _to_arguments(device, dtype) -> tuple[torch.device | None, torch.dtype | None]:
    """``(device, dtype)`` of a ``.to`` call, checked: a device that exists here (``cuda``
    resolved to the current CUDA device) and a floating dtype this package computes in."""
    if isinstance(device, torch.dtype):
        if dtype is not None:
            raise TypeError(f"device: received the dtype {device} and dtype={dtype}, expected "
                            "a device (or give the dtype once)")
        device, dtype = None, device
    if dtype is not None:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype: received {type(dtype).__name__} {dtype!r}, expected a "
                            "floating torch dtype (torch.float32 or torch.float64)")
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"dtype: received {dtype}, expected a floating dtype "
                             "(torch.float32 or torch.float64); integer tensors (indices, "
                             "seeds) keep their own dtype whatever floating dtype is asked for")
    if device is not None:
        device = check_device("device", device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device, dtype


def _moved_tensor(tensor: torch.Tensor, device: torch.device | None,
                  dtype: torch.dtype | None) -> torch.Tensor:
    """``tensor`` on ``device``, cast to ``dtype`` if it is floating; ``tensor`` itself when
    nothing changes. Stride-0 (expanded) axes stay expanded instead of being materialised."""
    dtype = dtype if tensor.is_floating_point() else None
    if (device is None or tensor.device == device) and (dtype is None or tensor.dtype == dtype):
        return tensor
    strides = tensor.stride()
    if tensor.numel() > 1 and 0 in strides:
        base = tensor.as_strided([1 if st == 0 else n for n, st in zip(tensor.shape, strides)],
                                 strides)
        return base.to(device=device, dtype=dtype).expand(tensor.shape)
    return tensor.to(device=device, dtype=dtype)


def map_tensors(value, fn: Callable[[torch.Tensor], torch.Tensor],
                adjust: Callable[[Any, Any], None] | None = None):
    """A copy of ``value`` in which every reachable tensor ``t`` is replaced by ``fn(t)``: the
    one walker behind :meth:`Circuit.take` and :meth:`Circuit.to` (:func:`converted`).

    Walked (copied): tensors (``fn``); lists, tuples (namedtuples too) and dicts (as plain
    dicts); circuits, forward networks and the other objects of this package that a circuit
    holds (feedback, decoders, gates, families, forward passes: a new object of the same class
    with its ``__dict__`` walked, ``__init__`` not called); bound methods of walked objects
    (bound to the copy); functions with a closure (a new function whose cells hold the walked
    contents, e.g. a cached tensor in a feedback function). Anything else (numbers, strings,
    enums, populations, classes, plain functions, other objects) is kept as it is.

    Sharing is kept: an object or tensor reached twice (``Plastic.template`` and
    ``Plastic.network``) maps to one copy, and cycles terminate. ``adjust(old, new)`` is
    called on each copied object once its attributes are filled (to fix bookkeeping such as
    a replica count or a recorded dtype)."""
    return _Walker(fn, adjust)(value)


class _Walker:
    """One walk of :func:`map_tensors` (its memo of what was copied)."""

    def __init__(self, fn: Callable, adjust: Callable | None):
        self.fn, self.adjust = fn, adjust
        self.memo: dict[int, Any] = {}
        self.keep: list[Any] = []           # originals kept alive so their ids stay unique

    def __call__(self, value):
        key = id(value)
        if key in self.memo:
            return self.memo[key]
        if isinstance(value, torch.Tensor):
            return self._remember(value, self.fn(value))
        if isinstance(value, list):
            out = self._remember(value, [])
            out.extend(self(v) for v in value)
            return out
        if isinstance(value, tuple):
            items = [self(v) for v in value]
            return self._remember(value, type(value)(*items) if hasattr(value, "_fields")
                                  else type(value)(items))
        if isinstance(value, dict):
            out = self._remember(value, {})
            out.update((k, self(v)) for k, v in value.items())
            return out
        if isinstance(value, types.MethodType):
            owner = value.__self__
            if not _walks(owner):
                return value
            return self._remember(value, types.MethodType(value.__func__, self(owner)))
        if isinstance(value, types.FunctionType):
            return self._function(value)
        if _walks(value):
            new = self._remember(value, object.__new__(type(value)))
            new.__dict__.update({k: self(v) for k, v in value.__dict__.items()})
            if self.adjust is not None:
                self.adjust(value, new)
            return new
        return value

    def _remember(self, value, out):
        self.memo[id(value)] = out
        self.keep.append(value)
        return out

    def _function(self, f: types.FunctionType):
        """``f`` itself without a closure, else a copy whose cells hold the walked contents."""
        if not f.__closure__:
            return f
        cells = [types.CellType() for _ in f.__closure__]
        new = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__,
                                 tuple(cells))
        new.__kwdefaults__, new.__dict__ = f.__kwdefaults__, dict(f.__dict__)
        new.__qualname__, new.__doc__, new.__module__ = f.__qualname__, f.__doc__, f.__module__
        self._remember(f, new)
        for cell, old in zip(cells, f.__closure__):
            try:
                contents = old.cell_contents
            except ValueError:              # an empty cell (a name not yet bound)
                continue
            cell.cell_contents = self(contents)
        return new


def _walks(value) -> bool:
    """Whether :func:`map_tensors` copies ``value`` attribute by attribute."""
    return isinstance(value, (Circuit, ForwardNetwork)) or _is_replica_holder(value)


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
