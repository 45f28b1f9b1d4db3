"""Deep feedback control's feedback learning, the "sleep phase" (Meulemans et al. 2021; SPEC §2).

No target: the controller holds the output at the noise-free feed-forward output ``r_L^ff``, so
its error is zero apart from the noise the apical compartments carry. Q learns from the
controller's response to that noise:

    τ_A dv_ℓ^fb = (−v_ℓ^fb + Q_ℓ u) dt + σ_ℓ dW_ℓ              apical compartment [S, B, n_ℓ]
    v_ℓ         = W_ℓ φ(v_{ℓ-1}) + b_ℓ + v_ℓ^fb                soma (instantaneous), φ(v_0) = x
    e           = r_L^ff − φ_L(v_L),   u = u_int + k_p e
    τ_u du_int  = (k_i e − α ρ) dt                              ρ = u_int or u (``leak``)
    τ_Q dQ_ℓ    = (−(1/σ²) mean_B v_ℓ^fb uᵀ − β Q_ℓ) dt         Q_ℓ [S, n_ℓ, n_L]

σ_ℓ = σ for hidden layers and ``sigma_output`` for the output layer; the 1/σ² uses σ. Signs and
scalings follow the authors' ``normal_controller`` rule (their ``.grad`` is
``(1/σ²) mean v^A uᵀ + β Q``, descended); their soma relaxes with ``τ_v/τ_u ≈ 3 dt`` and
instantaneous transmission, which we take to the limit (the soma is algebraic). The rule's fixed
point aligns Q with Jᵀ (J = ∂r_L/∂v, layers stacked): white noise in ``v^fb`` drives
``u ≈ −∫ e^{−α(t−s)} J v^fb(s) ds``, so ``−⟨v^fb uᵀ⟩/σ² ∝ Jᵀ``, balanced by the decay
``Q(⟨u uᵀ⟩/σ² + β)``: ``Q = Jᵀ M`` with M an ``n_L × n_L`` matrix.

**Noise as a drive.** :mod:`solvers` has no SDE method, so the Wiener increments enter as a
piecewise-constant drive: on ``[t0 + kΔ, t0 + (k+1)Δ)`` the apical field carries
``σ_ℓ ξ_k / (τ_A √Δ)`` with ``ξ_k ~ N(0, I)`` ``[S, B, n_ℓ]`` drawn from a generator seeded by
``(seed, k)`` alone. :func:`solvers.solve` with ``method="euler"`` and ``dt = Δ`` is then exactly
Euler–Maruyama, ``v^fb ← v^fb + Δ/τ_A (−v^fb + Q u) + σ √Δ/τ_A ξ_k`` (the authors' update),
deterministic given the seed and independent of chunking. Other methods see the same
piecewise-constant drive (not an SDE scheme).

**Sleep/wake schedule.** :func:`workbench.sleep.learn_dfc_feedback` runs one sleep phase on a
network and a batch of inputs (a ``solvers.solve`` of this circuit) and returns the learned ``Q``; pass it on as ``feedback=Q`` to
:class:`~circuits.feedback_control.DeepFeedbackControl` (or ``Settling(DeepFeedbackControl,
feedback=Q)`` for training). Pre-train with a few sleep phases (the authors: 10–20 epochs of
sleep), then alternate: a wake epoch (``solvers.train`` on the Plastic circuit), read the weights
off its final state (``plastic.network_of(result.y)``), a sleep phase on that network starting
from the previous Q (``feedback=Q``, a new ``seed`` per phase), a new Plastic circuit from the
learned weights and Q, and so on: :func:`workbench.sleep.sleep_wake`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .circuit import Circuit, State
from .feedback import random_feedback
from .network import ForwardNetwork
from .parameters import Population, Role, check_seed, given_matrices, positive_float

LEAKS = ("integral", "total")
_GOLDEN = 0x9E37_79B9_7F4A_7C15            # mixes (seed, step) into one 64-bit generator seed


class DFCSleep(Circuit):
    """The sleep phase of DFC: apical compartments with noise, the PI controller and Q as state.

    Args:
        network: the forward network (S replicas; held fixed during the sleep phase).
        x: inputs ``[B, n_0]`` (or ``[S, B, n_0]``); the controller's target is the noise-free
            feed-forward output on them.
        feedback: initial ``Q_ℓ`` ``[S, n_ℓ, n_L]`` per layer (ℓ = 1..L), or ``"random"``
            (N(0, ``init_scale``²/n_L) entries, from ``feedback_seed``).
        sigma: noise standard deviation σ of the hidden apical compartments (> 0).
        sigma_output: σ of the output layer's (default: ``sigma``).
        tau_A, tau_u, tau_Q: time constants of the apical compartment, the controller and Q.
        alpha, k_i, k_p, leak: the controller's leak, gains and leak convention (``integral``
            leaks ``u_int``, ``total`` leaks ``u``, as the authors' code).
        beta: decay of Q (≥ 0).
        dt: the noise step Δ (solve with ``method="euler", dt=dt`` for Euler–Maruyama).
        seed: the noise seed (an int); ``t0``: the time the noise grid starts at.

    State: ``fb_ℓ`` (apical voltage ``v_ℓ^fb``, [S, B, n_ℓ]), ``u`` (integral controller
    ``[S, B, n_L]``), ``Q_ℓ`` (``[S, n_ℓ, n_L]``). Observed as well: ``r_ℓ``, the error ``e``.
    """

    def __init__(self, network: ForwardNetwork, x: torch.Tensor, *,
                 feedback: str | Sequence[torch.Tensor] = "random", feedback_seed: int = 0,
                 init_scale: float = 0.1, sigma: float = 0.1, sigma_output: float | None = None,
                 tau_A: float = 0.3, tau_u: float = 1.0, tau_Q: float = 10.0, alpha=0.5,
                 k_i=1.0, k_p=0.0, leak: str = "total", beta=0.0, dt: float = 0.01,
                 seed: int = 0, t0: float = 0.0):
        if leak not in LEAKS:
            raise ValueError(f"leak: received {leak!r}, expected one of {list(LEAKS)}")
        self.leak_on = leak
        self.sigma = positive_float("sigma", sigma)
        self.sigma_output = (self.sigma if sigma_output is None
                             else positive_float("sigma_output", sigma_output))
        self.dt = positive_float("dt", dt)
        self.seed = check_seed("seed", seed)
        self.t0 = float(t0)
        if not math.isfinite(self.t0):
            raise ValueError(f"t0: received {t0!r}, expected a finite number")
        self._bind(network, ("tau_A", "tau_u", "tau_Q", "k_i"), alpha=alpha, k_i=k_i,
                   k_p=k_p, tau_A=tau_A, tau_u=tau_u, tau_Q=tau_Q, beta=beta)
        net = self.network
        self.x = net.input(x)
        self.r_ff = net.forward(self.x, prepared=True).r[-1]
        nL = net.widths[-1]
        shapes = [(n, nL) for n in net.widths[1:]]
        if isinstance(feedback, str):
            if feedback != "random":
                raise ValueError(f"feedback: received {feedback!r}, expected 'random' or a "
                                 "list of Q_ℓ tensors [S, n_ℓ, n_L]")
            init_scale = positive_float("init_scale", init_scale)
            self.initial_feedback = random_feedback(shapes, self.S, feedback_seed, net.dtype,
                                                    net.device, scale=init_scale)
        else:
            self.initial_feedback = given_matrices("feedback", feedback, shapes, self.S,
                                                   net.dtype, net.device, "'random'")
        self.populations = (
            [Population(f"fb_{l}", Role.FEEDBACK, n, l) for l, n in enumerate(net.widths[1:], 1)]
            + [Population("u", Role.CONTROLLER, nL, net.L)]
            + [Population(f"Q_{l}", Role.WEIGHT, n, l) for l, n in enumerate(net.widths[1:], 1)])

    def initial_state(self) -> State:
        """Apical compartments and controller at rest, Q at its initial value."""
        net = self.network
        B = self.x.shape[1]
        y = {f"fb_{l}": torch.zeros(self.S, B, n, dtype=net.dtype, device=net.device)
             for l, n in enumerate(net.widths[1:], 1)}
        y["u"] = torch.zeros_like(self.r_ff)
        y.update({f"Q_{l}": q.expand(self.S, -1, -1).clone()
                  for l, q in enumerate(self.initial_feedback, 1)})
        return y

    def noise(self, t: float) -> list[torch.Tensor]:
        """``ξ_k`` per layer ``[S, B, n_ℓ]`` (standard normal) for the step k containing t,
        ``k = round((t − t0)/Δ)`` (Euler evaluates at the grid points ``t0 + kΔ``); drawn in
        float64 on the CPU from a generator seeded by ``(seed, k)``, then cast."""
        k = int(round((t - self.t0) / self.dt))
        g = torch.Generator().manual_seed((self.seed * _GOLDEN + k) % (1 << 64))
        net = self.network
        B = self.x.shape[1]
        xi = torch.randn(self.S, B, sum(net.widths[1:]), generator=g, dtype=torch.float64)
        xi = xi.to(dtype=net.dtype, device=net.device)
        return list(torch.split(xi, list(net.widths[1:]), dim=-1))

    def rates(self, y: State) -> list[torch.Tensor]:
        """``[φ(v_1), ..., φ(v_L)]`` with the soma ``v_ℓ = W_ℓ φ(v_{ℓ-1}) + b_ℓ + v_ℓ^fb``."""
        net = self.network
        r, out = self.x, []
        for l in range(1, net.L + 1):
            v = r @ net.weights[l - 1].transpose(-1, -2) + y[f"fb_{l}"]
            if net.biases is not None:
                v = v + net.biases[l - 1]
            r = net.activation(l).phi(v)
            out.append(r)
        return out

    def control(self, y: State) -> tuple[torch.Tensor, torch.Tensor]:
        """The error ``e = r_L^ff − φ_L(v_L)`` and the control ``u = u_int + k_p e``."""
        e = self.r_ff - self.rates(y)[-1]
        return e, y["u"] + self.k_p * e

    def vector_field(self, t: float, y: State) -> State:
        net = self.network
        e, u = self.control(y)
        xi = self.noise(t)
        B = u.shape[-2]
        out: State = {}
        for l in range(1, net.L + 1):
            fb, Q = y[f"fb_{l}"], y[f"Q_{l}"]
            s = self.sigma_output if l == net.L else self.sigma
            out[f"fb_{l}"] = (u @ Q.transpose(-1, -2) - fb + (s / math.sqrt(self.dt)) * xi[l - 1]
                              ) / self.tau_A
            correlation = fb.transpose(-1, -2) @ u / B                  # mean_B v^fb uᵀ
            out[f"Q_{l}"] = (-correlation / self.sigma ** 2 - self.beta * Q) / self.tau_Q
        leaked = y["u"] if self.leak_on == "integral" else u
        out["u"] = (self.k_i * e - self.alpha * leaked) / self.tau_u
        return out

    def observe(self, y: State) -> State:
        obs = dict(y)
        for l, r in enumerate(self.rates(y), 1):
            obs[f"r_{l}"] = r
        obs["e"] = self.r_ff - obs[f"r_{self.network.L}"]
        return obs

    def feedback(self, y: State) -> list[torch.Tensor]:
        """The ``Q_ℓ`` of state ``y``, ``[S, n_ℓ, n_L]`` per layer."""
        return [y[f"Q_{l}"] for l in range(1, self.network.L + 1)]


def stacked_jacobian(network: ForwardNetwork, x: torch.Tensor) -> torch.Tensor:
    """``J = [∂r_L/∂v_1 ... ∂r_L/∂v_L]`` at the feed-forward pass on ``x``, averaged over the
    batch: ``[S, n_L, Σ n_ℓ]`` (what Q should align with as ``Jᵀ``)."""
    fwd = network.forward(x)
    Js = [fwd.dphi[-1][..., :, None] * J for J in network.output_jacobians(fwd)]
    return torch.cat(Js, dim=-1).mean(1)


__all__ = ["DFCSleep", "stacked_jacobian"]
