"""End-to-end backprop by autograd, the reference the demos hold their circuits against.

* :mod:`demos.train_pc`: θ laid out as a learning circuit holds it (``W_ℓ [1, n_ℓ, n_{ℓ-1}]``,
  ``b_ℓ [1, 1, n_ℓ]``), one SGD step on ``½‖y − a_L‖²`` and the relative L1 distance of two θ;
* :mod:`demos.reproduce_mertens`: the L2-normalised Mish network of
  :class:`circuits.LocalDecoders` trained end to end by full-batch Rprop on its BCE.
"""
from __future__ import annotations

import math
import time
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from circuits import ForwardNetwork
from solvers import State


# -- θ as a learning circuit holds it: W_ℓ [1, n_ℓ, n_{ℓ-1}] then b_ℓ [1, 1, n_ℓ] ---------------

def circuit_parameters(y: Mapping[str, torch.Tensor], layers: int, biases: bool) -> State:
    """θ read from a state."""
    return {f"{p}_{l}": y[f"{p}_{l}"] for p in (("W", "b") if biases else ("W",))
            for l in range(1, layers + 1)}


def network_parameters(net: ForwardNetwork) -> State:
    """θ_0, the network's initial parameters (replica 0)."""
    return {**{f"W_{l}": W[:1].clone() for l, W in enumerate(net.weights, 1)},
            **{f"b_{l}": b[:1].clone() for l, b in enumerate(net.biases or [], 1)}}


def output(theta: State, phi, x: torch.Tensor) -> torch.Tensor:
    """``a_L [N, n_L]`` for ``x [N, n_0]``: ``a_ℓ = W_ℓ φ(a_{ℓ-1}) + b_ℓ`` (φ(a_0) = x)."""
    a = x
    for l in range(1, sum(k.startswith("W_") for k in theta) + 1):
        b = theta.get(f"b_{l}")
        a = (a if l == 1 else phi(a)) @ theta[f"W_{l}"][0].T + (0 if b is None else b[0, 0])
    return a


def sgd_step(theta: State, phi, x: torch.Tensor, y: torch.Tensor, eta: float) -> State:
    """One step of backprop: ``θ ← θ − η ∇_θ mean_B ½‖y − a_L‖²`` (torch autograd)."""
    leaves = {k: v.detach().requires_grad_() for k, v in theta.items()}
    loss = 0.5 * (y - output(leaves, phi, x)).pow(2).sum(-1).mean()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return {k: v.detach() - eta * g for (k, v), g in zip(leaves.items(), grads)}


def relative_divergence(circuit: State, baseline: State, initial: State) -> float:
    """``‖θ_PC − θ_bp‖₁ / ‖θ_bp − θ_0‖₁`` (NaN before backprop has moved)."""
    def l1(a, b):
        return float(sum((a[k] - b[k]).abs().sum() for k in a))
    moved = l1(baseline, initial)
    return l1(circuit, baseline) / moved if moved > 0 else math.nan


# -- the network of Mertens' local decoders, end to end ----------------------------------------

def backprop_forward(weights, biases, x):
    """The network's forward pass (autograd-friendly): Mish, L2 normalisation, sigmoid output
    logit. Returns the output pre-activation ``[S, B, 1]``."""
    r = x
    for W, b in zip(weights[:-1], biases[:-1]):
        r = F.normalize(F.mish(r @ W.transpose(-1, -2) + b), dim=-1)
    return r @ weights[-1].transpose(-1, -2) + biases[-1]


def run_backprop(net: ForwardNetwork, data: Mapping[str, torch.Tensor], steps: int, lr: float,
                 record_every: int) -> dict[str, Any]:
    """``net`` trained end to end by ``steps`` full-batch Rprop steps (initial step size ``lr``)
    on the mean BCE, the test accuracy recorded every ``record_every`` steps (one optimiser over
    every replica's parameters: Rprop is elementwise, so replicas stay independent; the loss is
    the sum of the replicas' mean BCEs)."""
    weights = [w.clone().requires_grad_(True) for w in net.weights]
    biases = [b.clone().requires_grad_(True) for b in net.biases]
    opt = torch.optim.Rprop(weights + biases, lr=lr)
    x, y = net.input(data["x_train"]), data["y_train"]

    def accuracy(inputs, labels):                        # [S], logit > 0 against label > ½
        with torch.no_grad():
            hits = (backprop_forward(weights, biases, net.input(inputs)) > 0) == (labels > 0.5)
        return (hits.sum((-2, -1)).double() / labels.numel()).cpu().numpy()

    done, curve = [0], [accuracy(data["x_test"], data["y_test"])]
    start = time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc="backprop (Rprop)", leave=False,
                     disable=None):
        opt.zero_grad()
        logit = backprop_forward(weights, biases, x)
        F.binary_cross_entropy_with_logits(logit, y.expand_as(logit), reduction="none").mean(
            (-2, -1)).sum().backward()
        opt.step()
        if step % record_every == 0 or step == steps:
            done.append(step)
            curve.append(accuracy(data["x_test"], data["y_test"]))
    return {"weights": [w.detach() for w in weights], "biases": [b.detach() for b in biases],
            "test": curve[-1], "train": accuracy(data["x_train"], y), "steps": np.asarray(done),
            "curve": np.stack(curve), "seconds": time.perf_counter() - start}
