"""How the weights move under their update: plain gradient flow, or Adam as dynamics.

A :class:`~circuits.plasticity.Plastic` circuit's family gives, per weight (``W_ℓ`` or
``b_ℓ``), the update ``u = ΔW_ℓ`` its state implies and a gate ``g ∈ [0, 1]``. A weight flow
turns them into the weight's time derivative:

* :class:`GradientFlow` (the default): ``dW/dt = η g u``. Euler with step h is SGD at learning
  rate ``η h``.
* :class:`AdamFlow`: Adam (Kingma & Ba 2015) written as an ODE. Each weight gets two moment
  populations and a clock:

      dm/dt = g (u − m) / τ_m,        dv/dt = g (u² − v) / τ_v,
      dc/dt = g (1 − c) ⊙ (1/τ_m, 1/τ_v),       c(0) = 0,
      dW/dt = η g m̂ / (√v̂ + ε),       m̂ = m / c_m,  v̂ = v / c_v.

  ``c`` is the bias correction as state: it is ``1 − exp(−s/τ)`` in plastic time ``s`` (the
  time the gate was open), and Euler gives exactly Adam's ``1 − β^k``. Euler with step h is
  Adam with ``β₁ = 1 − h/τ_m``, ``β₂ = 1 − h/τ_v`` and learning rate ``η h``, except that the
  weight moves with the moments *before* the step's update (one step behind; the first step
  does not move it). The defaults ``τ_m = 10``, ``τ_v = 1000`` are Adam's ``β₁ = 0.9``,
  ``β₂ = 0.999`` at ``h = 1``.

  The gate multiplies every one of these derivatives, so while it is closed (a settle) the
  moments and the clock stand still: the optimiser runs on plastic time. This is how the
  authors of DFC and TP train their forward weights (their updates are written into ``.grad``
  and Adam steps them); here it is part of the integration, and each weight's step is
  normalised by its own running update size, so a method whose update shrinks over training
  (a weak nudge, a falling controller gain) keeps its rate.

Moment populations have role ``moment``; a weight ``W_1`` has ``adam_m:W_1``, ``adam_v:W_1``
(its shape) and ``adam_c:W_1`` (``[S, 1, 2]``).
"""
from __future__ import annotations

import inspect
from typing import Any

import torch

from .parameters import Population, Role, positive_float

State = dict[str, torch.Tensor]


class GradientFlow:
    """``dW/dt = η g u``: no state of its own."""

    def populations(self, weights: list[Population]) -> list[Population]:
        return []

    def initial_state(self, weights: State) -> State:
        return {}

    def field(self, name: str, update: torch.Tensor, rate: Any, gate: Any, y: State) -> State:
        """``{name: dW/dt}`` for the weight ``name`` with update ``u``, ``rate = η g`` and the
        gate ``g`` (None: open)."""
        return {name: rate * update}

    def __repr__(self) -> str:
        return "GradientFlow()"


class AdamFlow(GradientFlow):
    """Adam as an ODE (module docstring). ``tau_m``, ``tau_v``: the moments' time constants
    (plastic time; > 0); ``eps``: the denominator's floor (> 0)."""

    def __init__(self, tau_m: float = 10.0, tau_v: float = 1000.0, eps: float = 1e-8):
        self.tau_m = positive_float("flow.tau_m", tau_m)
        self.tau_v = positive_float("flow.tau_v", tau_v)
        self.eps = positive_float("flow.eps", eps)

    @staticmethod
    def names(name: str) -> tuple[str, str, str]:
        """The moment populations of weight ``name``: ``(m, v, clock)``."""
        return f"adam_m:{name}", f"adam_v:{name}", f"adam_c:{name}"

    def populations(self, weights: list[Population]) -> list[Population]:
        out = []
        for p in weights:
            m, v, c = self.names(p.name)
            out += [Population(m, Role.MOMENT, p.size, p.layer),
                    Population(v, Role.MOMENT, p.size, p.layer),
                    Population(c, Role.MOMENT, 2, p.layer)]
        return out

    def initial_state(self, weights: State) -> State:
        out = {}
        for name, w in weights.items():
            m, v, c = self.names(name)
            out[m], out[v] = torch.zeros_like(w), torch.zeros_like(w)
            out[c] = w.new_zeros(w.shape[0], 1, 2)
        return out

    def field(self, name, update, rate, gate, y):
        m_name, v_name, c_name = self.names(name)
        m, v, c = y[m_name], y[v_name], y[c_name]
        tiny = torch.finfo(m.dtype).tiny
        m_hat = m / c[..., :1].clamp_min(tiny)      # 0 before the clock starts (m = 0 there)
        v_hat = v / c[..., 1:].clamp_min(tiny)
        dm = (update - m) / self.tau_m
        dv = (update * update - v) / self.tau_v
        dc = torch.cat([(1 - c[..., :1]) / self.tau_m, (1 - c[..., 1:]) / self.tau_v], dim=-1)
        if gate is not None:
            dm, dv, dc = gate * dm, gate * dv, gate * dc
        return {name: rate * m_hat / (v_hat.sqrt() + self.eps), m_name: dm, v_name: dv,
                c_name: dc}

    def __repr__(self) -> str:
        return f"AdamFlow(tau_m={self.tau_m}, tau_v={self.tau_v}, eps={self.eps})"


FLOWS = {"gradient": GradientFlow, "adam": AdamFlow}


def weight_flow(spec: Any) -> GradientFlow:
    """A weight flow from ``spec``: None or ``"gradient"`` (:class:`GradientFlow`), ``"adam"``
    (:class:`AdamFlow` with its defaults), a mapping ``{"adam": {tau_m: ..., ...}}`` or a flow."""
    if spec is None:
        return GradientFlow()
    if isinstance(spec, GradientFlow):
        return spec
    if isinstance(spec, str) and spec in FLOWS:
        return FLOWS[spec]()
    if isinstance(spec, dict) and len(spec) == 1:
        (kind, args), = spec.items()
        if kind in FLOWS and isinstance(args, dict):
            known = [k for k in inspect.signature(FLOWS[kind]).parameters]
            unknown = sorted(set(args) - set(known))
            if unknown:
                raise ValueError(f"flow.{kind}: received keys {unknown}, expected some of "
                                 f"{known}")
            return FLOWS[kind](**args)
    raise ValueError(f"flow: received {spec!r}, expected None, one of {list(FLOWS)}, a mapping "
                     "{'adam': {'tau_m': ..., 'tau_v': ..., 'eps': ...}} or a "
                     "circuits.weight_flow flow (GradientFlow, AdamFlow)")


__all__ = ["GradientFlow", "AdamFlow", "FLOWS", "weight_flow"]
