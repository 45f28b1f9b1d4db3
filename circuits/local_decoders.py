"""Local learning through linear decoders (Mertens, seed 004; SPEC §6).

Every hidden layer ℓ = 1..L-1 has a bias-free linear decoder ``D_ℓ: n_ℓ → n_y`` and learns on
its own loss; the last layer learns on the task loss of its own output. No signal comes from
above: layer ℓ's parameters see only ℒ_ℓ (the gradient stops at every layer's input).

    r_0 = x,   a_ℓ = W_ℓ r_{ℓ-1} + b_ℓ,   m_ℓ = φ(a_ℓ),   r_ℓ = m_ℓ / max(‖m_ℓ‖, ε)   (ℓ < L)
    r_L = φ_L(a_L)                                      (the output: no normalisation)
    ℒ_ℓ = mean_{B, n_y} (D_ℓ r_ℓ − y)²                  hidden layers (mean squared error)
    ℒ_L = mean_{B, n_y} BCE(r_L, y)   (sigmoid output)  or  mean (r_L − y)²   (``output_loss``)

    dW_ℓ/dt = −η g_ℓ(t) ∂ℒ_ℓ/∂W_ℓ,   db_ℓ/dt = −η g_ℓ(t) ∂ℒ_ℓ/∂b_ℓ
    dD_ℓ/dt = −η_D g_ℓ(t) ∂ℒ_ℓ/∂D_ℓ   (``train_decoders=True``; else 0: fixed random read-outs)

The per-example L2 normalisation of each hidden layer's output (``normalize=True``, the
notebook's ``LambdaLayer(normalize)``; ε = 1e-12 as in ``torch.nn.functional.normalize``) puts
every hidden representation on the unit sphere, so a decoder's output is bounded by its norm
and a layer cannot lower its loss by growing its rates. The gate g_ℓ(t) is a
:class:`LayerSchedule`: ``sequential`` (layer ℓ learns during [(ℓ−1)T, ℓT), then freezes) or
``parallel`` (every layer on for the whole time), both as gates of one integration.

Why closed-form gradients rather than ``torch.autograd.grad`` inside the vector field: the
vector field is called once per step on tiny tensors, where autograd's graph building costs
more than the arithmetic; closed forms keep a step a fixed sequence of batched matmuls with no
graph and no ``enable_grad`` (so it also runs under ``torch.no_grad`` or inside a captured
graph), and the stop-gradient between layers is structural rather than a ``detach`` one could
forget. ``tests/test_local_decoders.py`` checks them against autograd in float64.

State (weights lead with the replica axis S): ``W_ℓ [S, n_ℓ, n_{ℓ-1}]``, ``b_ℓ [S, 1, n_ℓ]``
(ℓ = 1..L), ``D_ℓ [S, n_y, n_ℓ]`` (ℓ = 1..L-1; constant when fixed). :meth:`observe` adds
``loss_ℓ [S, 1, 1]`` (ℓ = 1..L) and ``accuracy_ℓ [S, 1, 1]`` (decoded / output accuracy at
threshold ½, for targets in {0, 1}). The gates are not part of the state or of the
observations: they are functions of t alone, read from the schedule with
``circuit.schedule.gates(t, y, Signals(like=x, layers=L))`` (:class:`circuits.gates.LayerSchedule`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .circuit import Circuit, State
from .gates import LayerSchedule, Signals
from .feedback import replica_seeds
from .network import ForwardNetwork
from .parameters import Population, Role, check_real_tensor, check_seed, replica_count

OUTPUT_LOSSES = ("bce", "mse")
NORM_EPS = 1e-12


class LocalDecoders(Circuit):
    """Layer-local learning by gradient flow on per-layer decoder losses (SPEC §6).

    Args:
        network: the forward network (S replicas; its hidden activation is φ, e.g. ``mish``;
            its output activation φ_L must be ``sigmoid`` for ``output_loss="bce"``). Its
            weights and biases are the initial state; it must have biases.
        x: the whole training set (or a fixed batch) ``[B, n_0]`` or ``[S, B, n_0]``.
        y: targets ``[B, n_L]`` or ``[S, B, n_L]`` (in [0, 1] for ``bce``).
        schedule: a :class:`LayerSchedule` with L windows (default: ``parallel``).
        eta: learning rate η of W, b (number or S numbers; rates are per unit time).
        eta_decoders: η_D of the decoders (default η).
        train_decoders: learn D_ℓ on ℒ_ℓ (True) or keep them at their random start (False, the
            public code: fixed random read-outs).
        decoders: initial decoders, a list of L−1 tensors ``[S, n_L, n_ℓ]``; default: drawn
            U(−1/√n_ℓ, 1/√n_ℓ) (``nn.Linear``'s init) from ``decoder_seed``.
        decoder_seed: an int (every replica the same decoders) or S ints (replica s's drawn from
            ``decoder_seed[s]`` alone, as an S = 1 circuit with that int draws them).
        normalize: per-example L2 normalisation of each hidden layer's output.
        output_loss: ``bce`` (binary cross-entropy on the sigmoid output) or ``mse``.
    """

    def __init__(self, network: ForwardNetwork, x: torch.Tensor, y: torch.Tensor, *,
                 schedule: LayerSchedule | None = None, eta=1.0, eta_decoders=None,
                 train_decoders: bool = True, decoders: Sequence[torch.Tensor] | None = None,
                 decoder_seed: int | Sequence[int] = 0, normalize: bool = True,
                 output_loss: str = "bce"):
        if not isinstance(network, ForwardNetwork):
            raise TypeError(f"network: received {type(network).__name__}, expected a "
                            "circuits.ForwardNetwork")
        if network.biases is None:
            raise ValueError("network: received a network without biases, expected one built "
                             "with bias=True (every layer learns W_ℓ and b_ℓ)")
        if network.L < 2:
            raise ValueError(f"network: received L = {network.L} layer(s), expected L ≥ 2 (at "
                             "least one hidden layer with a decoder)")
        if output_loss not in OUTPUT_LOSSES:
            raise ValueError(f"output_loss: received {output_loss!r}, expected one of "
                             f"{list(OUTPUT_LOSSES)}")
        if output_loss == "bce" and network.output_activation.name != "sigmoid":
            raise ValueError(f"network.output_activation: received "
                             f"{network.output_activation.name!r} with output_loss='bce', "
                             "expected 'sigmoid' (or use output_loss='mse')")
        for name, v in (("train_decoders", train_decoders), ("normalize", normalize)):
            if not isinstance(v, bool):
                raise ValueError(f"{name}: received {v!r}, expected True or False")
        L = network.L
        if schedule is None:
            schedule = LayerSchedule.parallel(L)
        if not isinstance(schedule, LayerSchedule):
            raise TypeError(f"schedule: received {type(schedule).__name__}, expected a "
                            "circuits.local_decoders.LayerSchedule (sequential or parallel)")
        if schedule.layers != L:
            raise ValueError(f"schedule: received {schedule.layers} windows, expected one per "
                             f"layer (L = {L})")
        eta_d = eta if eta_decoders is None else eta_decoders
        if network.replicas > 1:      # name the rate, not the network, when the counts clash
            for name, value in (("eta", eta), ("eta_decoders", eta_d)):
                n = replica_count(name, value)
                if n not in (1, network.replicas):
                    raise ValueError(f"{name}: received {n} replica values, expected 1 or the "
                                     f"network's S = {network.replicas}")
        seeds = decoder_seed
        self._bind(network, eta=eta, eta_decoders=eta_d)
        net = self.network
        self.L, self.schedule = L, schedule
        self.train_decoders, self.normalize, self.output_loss = (train_decoders, normalize,
                                                                 output_loss)
        self.phi, self.phi_L = net.hidden_activation, net.output_activation
        self.x = net.input(x, "x")
        self.y = net.output_like(y, "y")
        if self.y.shape[1] != self.x.shape[1]:
            raise ValueError(f"y: received {self.y.shape[1]} examples, expected B = "
                             f"{self.x.shape[1]} like x")
        if output_loss == "bce" and ((self.y < 0) | (self.y > 1)).any():
            raise ValueError("y: received values outside [0, 1], expected targets in [0, 1] for "
                             "output_loss='bce'")
        self.batch, self.n_y = self.x.shape[1], net.widths[-1]
        self._N = self.batch * self.n_y          # mean over B and n_y
        self._train = 1.0 if train_decoders else 0.0
        self.decoders0 = (self._given_decoders(decoders) if decoders is not None
                          else self._draw_decoders(seeds))
        widths = net.widths
        self.populations = (
            [Population(f"W_{l}", Role.WEIGHT, widths[l], l) for l in range(1, L + 1)]
            + [Population(f"b_{l}", Role.WEIGHT, widths[l], l) for l in range(1, L + 1)]
            + [Population(f"D_{l}", Role.WEIGHT, widths[l], l) for l in range(1, L)])

    def present(self, x: torch.Tensor, y: torch.Tensor, state: State | None = None, *,
                check: bool = True) -> None:
        """Change the batch the losses are computed on (B must stay the same), for
        :func:`solvers.train`: training on a stream of minibatches in one integration.
        ``check=False`` checks shapes only (no host synchronisation)."""
        x = self.network.input(x, "x", check_finite=check)
        y = self.network.output_like(y, "y", check_finite=check)
        if x.shape[1] != self.batch or y.shape[1] != self.batch:
            raise ValueError(f"x, y: received {x.shape[1]} and {y.shape[1]} examples, expected "
                             f"B = {self.batch} (the batch size fixed at construction)")
        if check and self.output_loss == "bce" and ((y < 0) | (y > 1)).any():
            raise ValueError("y: received values outside [0, 1], expected targets in [0, 1] for "
                             "output_loss='bce'")
        self.x, self.y = x, y

    # -- set-up ------------------------------------------------------------------------------

    def _draw_decoders(self, seed) -> list[torch.Tensor]:
        S, net = self.S, self.network
        # an int: every replica the same decoders; S ints (list, tuple, 1-D integer tensor or
        # array): replica s's from seed[s] alone (circuits.feedback's seed rule)
        seeds = replica_seeds("decoder_seed", seed, S)
        for s in seeds:                    # layer ℓ draws from seed·1000 + ℓ
            check_seed("decoder_seed", s * 1000 + self.L)
        out = []
        for l in range(1, self.L):
            n = net.widths[l]
            mats = []
            for s in seeds:
                g = torch.Generator().manual_seed(int(s) * 1000 + l)
                mats.append((torch.rand(self.n_y, n, generator=g, dtype=torch.float64) * 2 - 1)
                            * n ** -0.5)
            out.append(torch.stack(mats).to(dtype=net.dtype, device=net.device))
        return out

    def _given_decoders(self, decoders) -> list[torch.Tensor]:
        net = self.network
        if not isinstance(decoders, (list, tuple)) or len(decoders) != self.L - 1:
            raise ValueError(f"decoders: received {type(decoders).__name__} of length "
                             f"{len(decoders) if hasattr(decoders, '__len__') else '?'}, "
                             f"expected a list of L − 1 = {self.L - 1} tensors")
        out = []
        for l, D in enumerate(decoders, start=1):
            shape = (self.S, self.n_y, net.widths[l])
            if isinstance(D, torch.Tensor):
                check_real_tensor(f"decoders[{l - 1}]", D)
            if not isinstance(D, torch.Tensor) or tuple(D.shape) != shape \
                    or not torch.isfinite(D).all():
                got = tuple(D.shape) if isinstance(D, torch.Tensor) else type(D).__name__
                raise ValueError(f"decoders[{l - 1}]: received {got}, expected a finite tensor "
                                 f"of shape {shape} [S, n_y, n_{l}]")
            out.append(D.to(dtype=net.dtype, device=net.device).clone())
        return out

    def initial_state(self) -> State:
        net = self.network
        y: State = {f"W_{l}": W.clone() for l, W in enumerate(net.weights, start=1)}
        y.update({f"b_{l}": b.clone() for l, b in enumerate(net.biases, start=1)})
        y.update({f"D_{l}": D.clone() for l, D in enumerate(self.decoders0, start=1)})
        return y

    # -- forward pass and local gradients -----------------------------------------------------

    def _layer(self, l: int, r_in: torch.Tensor, W: torch.Tensor, b: torch.Tensor):
        """Layer ℓ on input r_{ℓ-1}: ``(a, r, norm)`` (norm None when not normalised)."""
        a = r_in @ W.transpose(-1, -2) + b
        if l == self.L:
            return a, self.phi_L.phi(a), None
        m = self.phi.phi(a)
        if not self.normalize:
            return a, m, None
        norm = m.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
        return a, m / norm, norm

    def forward(self, y: State, x: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Rates ``[r_0, r_1, ..., r_L]`` with the state's weights (any leading axes before
        ``[S, ...]``); ``x`` defaults to the bound training set."""
        r = [self.x if x is None else self.network.input(x, "x")]
        for l in range(1, self.L + 1):
            r.append(self._layer(l, r[-1], y[f"W_{l}"], y[f"b_{l}"])[1])
        return r

    def outputs(self, y: State, x: torch.Tensor) -> torch.Tensor:
        """The network's output ``r_L [S, M, n_L]`` on inputs ``x [M, n_0]`` with the weights of
        ``y`` (for evaluation; every learning circuit has this)."""
        return self.forward(y, x)[-1]

    def local_losses(self, y: State) -> list[torch.Tensor]:
        """ℒ_ℓ for ℓ = 1..L, each ``[S, 1, 1]`` (any leading axes before S)."""
        r = self.forward(y)
        out = []
        for l in range(1, self.L):
            o = r[l] @ y[f"D_{l}"].transpose(-1, -2)
            out.append(((o - self.y) ** 2).mean((-2, -1), keepdim=True))
        out.append(self._output_loss(r[-2] @ y[f"W_{self.L}"].transpose(-1, -2)
                                     + y[f"b_{self.L}"], r[-1]))
        return out

    def _output_loss(self, a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.output_loss == "bce":       # BCE(σ(a), y) = softplus(a) − y·a, computed stably
            return (F.softplus(a) - self.y * a).mean((-2, -1), keepdim=True)
        return ((out - self.y) ** 2).mean((-2, -1), keepdim=True)

    def gradients(self, y: State) -> dict[str, torch.Tensor]:
        """``∂ℒ_ℓ/∂θ_ℓ`` for every parameter θ_ℓ of layer ℓ (W, b, D), closed form; layer ℓ's
        input r_{ℓ-1} is a constant of ℒ_ℓ (the stop-gradient between layers)."""
        L, N = self.L, self._N
        grads: dict[str, torch.Tensor] = {}
        r_in = self.x
        for l in range(1, L + 1):
            W, b = y[f"W_{l}"], y[f"b_{l}"]
            a, r, norm = self._layer(l, r_in, W, b)
            if l < L:
                D = y[f"D_{l}"]
                g_o = (2.0 / N) * (r @ D.transpose(-1, -2) - self.y)      # ∂ℒ/∂(D r)
                grads[f"D_{l}"] = g_o.transpose(-1, -2) @ r
                g_r = g_o @ D
                if norm is not None:     # r = m/‖m‖: ∂r/∂m = (I − r rᵀ)/‖m‖
                    g_r = (g_r - r * (r * g_r).sum(-1, keepdim=True)) / norm
                g_a = g_r * self.phi.dphi(a)
            elif self.output_loss == "bce":
                g_a = (r - self.y) / N                                      # σ(a) − y
            else:
                g_a = (2.0 / N) * (r - self.y) * self.phi_L.dphi(a)
            grads[f"W_{l}"] = g_a.transpose(-1, -2) @ r_in
            grads[f"b_{l}"] = g_a.sum(-2, keepdim=True)
            r_in = r
        return grads

    # -- the dynamics ------------------------------------------------------------------------

    def vector_field(self, t: float, y: State) -> State:
        grads = self.gradients(y)
        gates, _ = self.schedule.gates(t, y, Signals(like=self.x, layers=self.L))
        out: State = {}
        for l in range(1, self.L + 1):
            rate = -self.eta * gates[l - 1]
            out[f"W_{l}"] = rate * grads[f"W_{l}"]
            out[f"b_{l}"] = rate * grads[f"b_{l}"]
            if l < self.L:
                out[f"D_{l}"] = (-self._train * gates[l - 1]) * self.eta_decoders \
                    * grads[f"D_{l}"]
        return out

    def observe(self, y: State) -> State:
        obs = dict(y)
        r = self.forward(y)
        for l, loss in enumerate(self.local_losses(y), start=1):
            obs[f"loss_{l}"] = loss
        label = self.y > 0.5
        for l in range(1, self.L + 1):
            out = r[l] @ y[f"D_{l}"].transpose(-1, -2) if l < self.L else r[l]
            obs[f"accuracy_{l}"] = ((out > 0.5) == label).to(out.dtype).mean(
                (-2, -1), keepdim=True)
        return obs

    def accuracy(self, y: State, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-replica accuracy ``[S]`` of the network's output (threshold ½) on ``(x, target)``
        (``y`` a final state ``[S, ...]``)."""
        out = self.forward(y, x)[-1]
        label = self.network.output_like(target, "target") > 0.5
        return ((out > 0.5) == label).to(out.dtype).mean((-2, -1))

    def readouts(self, y: State, x: torch.Tensor | None = None) -> list[torch.Tensor]:
        """What each layer's loss ℒ_ℓ compares with the target, for ℓ = 1..L, each
        ``[S, B, n_y]``: the decoded ``D_ℓ r_ℓ`` of a hidden layer, the output ``r_L`` for
        ℓ = L; on ``x`` (default: the presented batch), with the state's weights."""
        r = self.forward(y, x)
        return [r[l] @ y[f"D_{l}"].transpose(-1, -2) if l < self.L else r[l]
                for l in range(1, self.L + 1)]

    def readout_accuracy(self, y: State, x: torch.Tensor | None = None,
                         target: torch.Tensor | None = None) -> torch.Tensor:
        """``[L, S]`` accuracy of each layer's read-out (:meth:`readouts`, threshold ½) on
        ``(x, target)``, by default the presented batch; counted exactly and returned in
        float64 whatever the circuit's dtype (targets in {0, 1})."""
        if (x is None) != (target is None):
            raise ValueError(f"x, target: received {'x' if target is None else 'target'} "
                             "alone, expected both (a labelled set) or neither (the presented "
                             "batch)")
        label = (self.y if target is None else self.network.output_like(target, "target")) > 0.5
        if x is not None and x.shape[-2] != label.shape[-2]:
            raise ValueError(f"x, target: received {x.shape[-2]} and {label.shape[-2]} "
                             "examples, expected the same number")
        hits = [((o > 0.5) == label).sum((-2, -1)) for o in self.readouts(y, x)]
        return torch.stack(hits).to(torch.float64) / label[0].numel()


__all__ = ["LayerSchedule", "LocalDecoders"]
