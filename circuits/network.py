"""The forward network every circuit family shares.

Layers ℓ = 1..L, ``a_ℓ = W_ℓ r_{ℓ-1} + b_ℓ``, ``r_ℓ = φ_ℓ(a_ℓ)``, ``r_0 = x``. Weights are
``[S, n_ℓ, n_{ℓ-1}]``, biases ``[S, 1, n_ℓ]``, populations ``[S, B, n]``: replica s is an
independent network (its own weights), so a sweep over seeds or initial scales is one batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .activations import Activation, get_activation
from .parameters import (check_device, check_dtype, check_finite_tensor, check_real_tensor,
                         check_seed, describe)

INITS = ("uniform", "normal", "orthogonal")


def compact(weight: torch.Tensor) -> torch.Tensor:
    """``[S, n, m]`` → ``[n, m]`` when S > 1 replicas all hold the same matrix, else unchanged.

    Sweeps over gains and leak copy one network to S replicas; a shared matrix turns S small
    batched matmuls into one GEMM over all S·B rows (2.5× faster per step for S = 1024 on a
    2-core CPU). For S = 1 the batched path has less overhead, so it is kept."""
    if weight.dim() == 3 and weight.shape[0] > 1 \
            and torch.equal(weight, weight[:1].expand_as(weight)):
        return weight[0]
    return weight


def affine(x: torch.Tensor, weight_t: torch.Tensor, add: torch.Tensor | None = None
           ) -> torch.Tensor:
    """``add + x @ weight_t`` for ``x [S, B, n]`` and ``weight_t`` either per replica
    ``[S, n, m]`` or shared ``[n, m]`` (see :func:`compact`); ``add`` broadcasts to ``[S, B, m]``."""
    if weight_t.dim() == 3:
        return torch.bmm(x, weight_t) if add is None else torch.baddbmm(add, x, weight_t)
    S, B, n = x.shape
    rows = x.reshape(S * B, n)
    if add is None:
        return (rows @ weight_t).view(S, B, -1)
    m = weight_t.shape[-1]
    return torch.addmm(add.expand(S, B, m).reshape(S * B, m), rows, weight_t).view(S, B, m)


@dataclass
class Forward:
    """One forward pass: ``a[ℓ-1]`` and ``r[ℓ]`` for ℓ = 1..L (``r[0] = x``), and φ'(a)."""

    a: list[torch.Tensor]
    r: list[torch.Tensor]
    dphi: list[torch.Tensor]


class ForwardNetwork:
    """A fully connected network with per-replica weights.

    Args:
        widths: ``[n_0, n_1, ..., n_L]``.
        activation: φ of the hidden layers (``tanh``, ``relu``, ``sigmoid``, ``linear``, ``mish``).
        output_activation: φ_L (default ``linear``).
        bias: whether layers have biases (initialised to zero).
        init: ``uniform`` U(−scale, scale), ``normal`` N(0, scale²) or ``orthogonal`` (× scale).
        scale: default ``1/sqrt(n_in)`` (uniform, normal) or 1 (orthogonal).
        replicas: S.
        seed: an int (every replica gets the same network, drawn from this seed) or a sequence of
            S ints (replica s drawn from seed[s]; S defaults to its length).
        weights, biases: give the parameters directly instead (lists of ``[S, n_ℓ, n_{ℓ-1}]`` and
            ``[S, 1, n_ℓ]``); widths must agree.
    """

    def __init__(self, widths: Sequence[int], activation: str = "tanh",
                 output_activation: str = "linear", bias: bool = True, init: str = "uniform",
                 scale: float | None = None, replicas: int = 1, seed: int | Sequence[int] = 0,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                 weights: Sequence[torch.Tensor] | None = None,
                 biases: Sequence[torch.Tensor] | None = None):
        if not isinstance(widths, (list, tuple)) or len(widths) < 2 or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in widths):
            raise ValueError(f"widths: received {widths!r}, expected a list of at least two "
                             "positive integers [n_0, ..., n_L]")
        if isinstance(seed, (list, tuple)):
            if not seed:
                raise ValueError("seed: received an empty sequence, expected an int or one int "
                                 "per replica")
            if replicas == 1:
                replicas = len(seed)          # one replica per seed
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas: received {replicas!r}, expected an integer ≥ 1")
        if not isinstance(init, str) or init not in INITS:
            raise ValueError(f"init: received {init!r}, expected one of {list(INITS)}")
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                                  or not math.isfinite(scale) or not scale > 0):
            raise ValueError(f"scale: received {scale!r}, expected a number > 0 (finite) or None")
        if not isinstance(bias, bool):
            raise ValueError(f"bias: received {bias!r}, expected True or False")
        self.widths = list(widths)
        self.L = len(widths) - 1
        self.hidden_activation = get_activation(activation, "activation")
        self.output_activation = get_activation(output_activation, "output_activation")
        self.dtype = check_dtype("dtype", dtype)
        self.device = check_device("device", device)
        if weights is not None:
            self.weights = self._given("weights", weights, [(n, m) for m, n in
                                                            zip(widths, widths[1:])])
            replicas = self.weights[0].shape[0]
        else:
            self.weights = self._draw(init, scale, replicas, seed)
        if biases is not None:
            self.biases = self._given("biases", biases, [(1, n) for n in widths[1:]],
                                      replicas)
        elif bias:
            self.biases = [torch.zeros(replicas, 1, n, dtype=dtype, device=self.device)
                           for n in widths[1:]]
        else:
            self.biases = None
        self.replicas = replicas

    def _given(self, name: str, tensors: Sequence[torch.Tensor], shapes: list[tuple[int, int]],
               replicas: int | None = None):
        if not isinstance(tensors, (list, tuple)):
            raise TypeError(f"{name}: received {describe(tensors)}, expected a list of "
                            f"{len(shapes)} tensors (one per layer of widths {self.widths})")
        if len(tensors) != len(shapes):
            raise ValueError(f"{name}: received {len(tensors)} tensors, expected {len(shapes)} "
                             f"(one per layer of widths {self.widths})")
        out = []
        S = tensors[0].shape[0] if isinstance(tensors[0], torch.Tensor) \
            and tensors[0].dim() == 3 else None
        if S == 0:
            raise ValueError(f"{name}[0]: received shape {tuple(tensors[0].shape)}, expected at "
                             "least one replica (S ≥ 1)")
        if replicas is not None and S is not None and S != replicas:
            raise ValueError(f"{name}[0]: received {S} replicas, expected S = {replicas} like "
                             "the weights")
        for i, (w, shape) in enumerate(zip(tensors, shapes)):
            check_finite_tensor(f"{name}[{i}]", w, dims=(3,))
            if tuple(w.shape) != (S, *shape):
                raise ValueError(f"{name}[{i}]: received shape {tuple(w.shape)}, expected "
                                 f"{(S, *shape)}")
            out.append(w.to(device=self.device, dtype=self.dtype))
        return out

    def _draw(self, init: str, scale: float | None, replicas: int, seed):
        seeds = [seed] * replicas if isinstance(seed, int) and not isinstance(seed, bool) \
            else list(seed) if isinstance(seed, (list, tuple)) else None
        if seeds is None or len(seeds) != replicas or any(isinstance(s, bool)
                                                          or not isinstance(s, int)
                                                          for s in seeds):
            raise ValueError(f"seed: received {seed!r}, expected an int or {replicas} ints")
        for s in seeds:
            check_seed("seed", s)
        # Draw each distinct seed once, so identical seeds give bit-identical replicas.
        cache: dict[int, list[torch.Tensor]] = {}
        for s in set(seeds):
            g = torch.Generator().manual_seed(s)
            layers = []
            for n_in, n_out in zip(self.widths, self.widths[1:]):
                c = scale if scale is not None else (1.0 if init == "orthogonal"
                                                     else n_in ** -0.5)
                if init == "uniform":
                    w = (torch.rand(n_out, n_in, generator=g, dtype=torch.float64) * 2 - 1) * c
                elif init == "normal":
                    w = torch.randn(n_out, n_in, generator=g, dtype=torch.float64) * c
                else:
                    q, _ = torch.linalg.qr(torch.randn(max(n_out, n_in), min(n_out, n_in),
                                                       generator=g, dtype=torch.float64))
                    w = (q if n_out >= n_in else q.T) * c
                layers.append(w)
            cache[s] = layers
        return [torch.stack([cache[s][l] for s in seeds]).to(device=self.device, dtype=self.dtype)
                for l in range(self.L)]

    def activation(self, layer: int) -> Activation:
        """φ_ℓ for ℓ = 1..L."""
        return self.output_activation if layer == self.L else self.hidden_activation

    def expand(self, replicas: int) -> "ForwardNetwork":
        """The same network copied to ``replicas`` replicas (from S = 1)."""
        if self.replicas == replicas:
            return self
        if self.replicas != 1:
            raise ValueError(f"replicas: received {replicas}, expected the network's own "
                             f"S = {self.replicas} (only an S = 1 network can be expanded)")
        return ForwardNetwork(
            self.widths, self.hidden_activation.name, self.output_activation.name,
            dtype=self.dtype, device=self.device,
            weights=[w.expand(replicas, -1, -1).clone() for w in self.weights],
            biases=None if self.biases is None else
            [b.expand(replicas, -1, -1).clone() for b in self.biases],
            bias=self.biases is not None)

    def to(self, device: str | torch.device | torch.dtype | None = None,
           dtype: torch.dtype | None = None) -> "ForwardNetwork":
        """A copy of this network with its weights and biases on ``device`` and of ``dtype``
        (``torch.float32`` or ``torch.float64``), and ``self.dtype``/``self.device`` recording
        them; the original is untouched (tensors already there are shared). ``net.to("cuda")``
        and ``net.to(torch.float32)`` work as for a tensor. See :meth:`Circuit.to` for why this
        returns a copy rather than converting in place."""
        from .circuit import converted      # the one tensor walker lives with Circuit.take
        return converted(self, device, dtype)

    def with_parameters(self, weights: Sequence[torch.Tensor],
                        biases: Sequence[torch.Tensor] | None) -> "ForwardNetwork":
        """The same architecture with these weights and biases, used as they are (no copy, no
        validation: for code that reads weights out of a circuit's state on every step)."""
        net = object.__new__(ForwardNetwork)
        net.__dict__.update(self.__dict__)
        net.weights, net.biases = list(weights), None if biases is None else list(biases)
        net.replicas = net.weights[0].shape[0]
        return net

    def input(self, x: torch.Tensor, name: str = "x", *, check_finite: bool = True
              ) -> torch.Tensor:
        """``x`` as ``[S, B, n_0]`` (a ``[B, n_0]`` input is shared by every replica).
        ``check_finite=False`` checks shapes only: no host synchronisation (for a drive that
        presents data validated once, inside a chunk of steps)."""
        if check_finite:
            check_finite_tensor(name, x, dims=(2, 3))
        elif not isinstance(x, torch.Tensor) or x.dim() not in (2, 3):
            raise ValueError(f"{name}: received {getattr(x, 'shape', type(x).__name__)}, "
                             "expected a tensor [B, n] or [S, B, n]")
        else:
            check_real_tensor(name, x)
        _check_examples(name, x)
        if x.shape[-1] != self.widths[0]:
            raise ValueError(f"{name}: received shape {tuple(x.shape)}, expected [B, {self.widths[0]}]"
                             f" or [S, B, {self.widths[0]}] (n_0 = {self.widths[0]})")
        if x.dim() == 3 and x.shape[0] not in (1, self.replicas):
            raise ValueError(f"{name}: received {x.shape[0]} replicas, expected 1 or "
                             f"S = {self.replicas}")
        x = x.to(device=self.device, dtype=self.dtype)
        return (x if x.dim() == 3 else x[None]).expand(self.replicas, -1, -1)

    def output_like(self, y: torch.Tensor, name: str = "target", *, check_finite: bool = True
                    ) -> torch.Tensor:
        """A target/error ``[B, n_L]`` or ``[S, B, n_L]`` as ``[S, B, n_L]``."""
        if check_finite:
            check_finite_tensor(name, y, dims=(2, 3))
        elif not isinstance(y, torch.Tensor) or y.dim() not in (2, 3):
            raise ValueError(f"{name}: received {getattr(y, 'shape', type(y).__name__)}, "
                             "expected a tensor [B, n] or [S, B, n]")
        else:
            check_real_tensor(name, y)
        _check_examples(name, y)
        if y.shape[-1] != self.widths[-1]:
            raise ValueError(f"{name}: received shape {tuple(y.shape)}, expected last dimension "
                             f"n_L = {self.widths[-1]}")
        if y.dim() == 3 and y.shape[0] not in (1, self.replicas):
            raise ValueError(f"{name}: received {y.shape[0]} replicas, expected 1 or "
                             f"S = {self.replicas}")
        y = y.to(device=self.device, dtype=self.dtype)
        return (y if y.dim() == 3 else y[None]).expand(self.replicas, -1, -1)

    def forward(self, x: torch.Tensor, *, prepared: bool = False) -> Forward:
        """The forward pass on ``x``; ``prepared=True`` takes ``x`` as it is (already
        ``[S, B, n_0]`` from :meth:`input`: no checks, no host synchronisation)."""
        r = [x if prepared else self.input(x)]
        a, dphi = [], []
        for l in range(1, self.L + 1):
            W = self.weights[l - 1]
            z = r[-1] @ W.transpose(-1, -2)
            if self.biases is not None:
                z = z + self.biases[l - 1]
            act = self.activation(l)
            a.append(z)
            r.append(act.phi(z))
            dphi.append(act.derivative(z, r[-1]))
        return Forward(a, r, dphi)

    def layer(self, l: int, h_below: torch.Tensor) -> torch.Tensor:
        """``f_ℓ(h_{ℓ-1}) = W_ℓ φ_{ℓ-1}(h_{ℓ-1}) + b_ℓ``: layer ℓ's pre-activation from layer
        ℓ−1's (φ_0 the identity: ``h_0 = x``). Extra leading axes broadcast."""
        r = h_below if l == 1 else self.activation(l - 1).phi(h_below)
        out = r @ self.weights[l - 1].transpose(-1, -2)
        return out if self.biases is None else out + self.biases[l - 1]

    def propagate(self, h: torch.Tensor, l: int) -> torch.Tensor:
        """The output pre-activation ``a_L`` reached from layer ℓ's pre-activation ``h``
        (``f_L ∘ … ∘ f_{ℓ+1}``; ℓ = L returns h)."""
        for k in range(l + 1, self.L + 1):
            h = self.layer(k, h)
        return h

    def output_jacobians(self, fwd: Forward) -> list[torch.Tensor]:
        """``J̄_ℓ = ∂a_L/∂a_ℓ`` for ℓ = 1..L, each ``[S, B, n_L, n_ℓ]`` (``J̄_L = I``)."""
        S, B, nL = fwd.a[-1].shape
        J = torch.eye(nL, dtype=self.dtype, device=self.device).expand(S, B, nL, nL)
        out = [J]
        for l in range(self.L - 1, 0, -1):
            J = (J @ self.weights[l][:, None]) * fwd.dphi[l - 1][:, :, None, :]
            out.append(J)
        return out[::-1]


def _check_examples(name: str, x: torch.Tensor) -> None:
    """At least one example (B ≥ 1) and, for ``[S, B, n]``, at least one replica."""
    if x.shape[-2] < 1 or (x.dim() == 3 and x.shape[0] < 1):
        raise ValueError(f"{name}: received shape {tuple(x.shape)}, expected at least one "
                         "example (B ≥ 1) and one replica")


def _per_replica_values(name: str, value) -> list:
    """A number, sequence, array or tensor as a flat Python list (a number: one entry) of real
    numbers; anything else is an error naming ``name``."""
    if isinstance(value, torch.Tensor):
        check_real_tensor(name, value)
    elif isinstance(value, (list, tuple)):
        if any(isinstance(v, (bool, complex, str)) for v in value):
            raise TypeError(f"{name}: received {value!r}, expected real numbers")
    elif isinstance(value, (bool, complex, str)) or value is None:
        raise TypeError(f"{name}: received {describe(value)} {value!r}, expected a number or "
                        "a sequence of numbers (one per replica)")
    try:
        values = torch.as_tensor(value).reshape(-1).tolist()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name}: received {describe(value)}, expected a number or a sequence "
                        f"of numbers ({error})") from None
    if not values:
        raise ValueError(f"{name}: received no values, expected at least one")
    return values


def replica_network(widths: Sequence[int], seeds: Sequence[int] | torch.Tensor | int,
                    scales: Sequence[float] | torch.Tensor | float | None = None,
                    **kwargs) -> ForwardNetwork:
    """A :class:`ForwardNetwork` with one network per replica: replica s is the network
    ``ForwardNetwork(widths, seed=seeds[s], **kwargs)`` with its weights multiplied by
    ``scales[s]`` (the initial weight scale relative to the init's default). A single number is
    shared by every replica; S is the longer of ``seeds`` and ``scales``."""
    seeds_l = _per_replica_values("seeds", seeds)
    if any(isinstance(s, float) and not s.is_integer() for s in seeds_l):
        raise ValueError(f"seeds: received {seeds!r}, expected integers")
    seeds_l = [check_seed("seeds", int(s)) for s in seeds_l]
    scales_l = [1.0] if scales is None else [float(c) for c in
                                             _per_replica_values("scales", scales)]
    if not all(math.isfinite(c) and c > 0 for c in scales_l):
        raise ValueError(f"scales: received {scales_l}, expected finite numbers > 0")
    S = max(len(seeds_l), len(scales_l))
    for name, values in (("seeds", seeds_l), ("scales", scales_l)):
        if len(values) not in (1, S):
            raise ValueError(f"{name}: received {len(values)} values, expected 1 or S = {S}")
    seeds_l = seeds_l * S if len(seeds_l) == 1 else seeds_l
    scales_l = scales_l * S if len(scales_l) == 1 else scales_l
    base = ForwardNetwork(widths, seed=seeds_l if S > 1 else seeds_l[0], **kwargs)
    if all(c == 1.0 for c in scales_l):
        return base
    c = torch.tensor(scales_l, dtype=base.dtype, device=base.device)[:, None, None]
    return ForwardNetwork(widths, base.hidden_activation.name, base.output_activation.name,
                          bias=base.biases is not None, dtype=base.dtype, device=base.device,
                          weights=[w * c for w in base.weights], biases=base.biases)
