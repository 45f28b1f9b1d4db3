"""Deep feedback control's sleep/wake schedule (Meulemans et al. 2021): the feedback weights Q
learn in sleep phases (:class:`circuits.DFCSleep`: noise into the apical compartments, Q from the
controller's response), the forward weights in wake phases (:func:`solvers.train` of
``Plastic(Settling(DeepFeedbackControl, feedback=Q))``), alternately.

It lives here, beside tasks and datasets, because it drives circuits with solvers: the
``circuits`` package integrates nothing, and ``solvers`` knows no circuit.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from circuits import DeepFeedbackControl, DFCSleep, ForwardNetwork, Plastic, Settling
from circuits.parameters import positive_float
from solvers import solve, train


def learn_dfc_feedback(network: ForwardNetwork, x: torch.Tensor, *, time: float, seed: int = 0,
                       dt: float = 0.01, feedback: str | Sequence[torch.Tensor] = "random",
                       save_every: int | None = None, **settings) -> list[torch.Tensor]:
    """One sleep phase of ``time`` on ``network`` and inputs ``x [B, n_0]``: Euler–Maruyama
    (``solvers.solve``, ``method="euler"``, step ``dt``) of :class:`circuits.DFCSleep` from rest,
    with Q starting at ``feedback`` (``"random"`` or the ``Q_ℓ`` of an earlier phase).
    ``settings``: :class:`DFCSleep`'s other arguments (``sigma``, ``tau_A``, ``tau_Q``,
    ``alpha``, ``k_p``, ``beta`` ...). Returns the learned ``Q_ℓ`` ``[S, n_ℓ, n_L]`` (ℓ = 1..L),
    ready for ``DeepFeedbackControl(..., feedback=Q)``. Deterministic given ``seed``."""
    time = positive_float("time", time)
    circuit = DFCSleep(network, x, feedback=feedback, dt=dt, seed=seed, **settings)
    sol = solve(circuit, circuit.initial_state(), 0.0, time, dt=dt, method="euler",
                steady_state=False, progress=False, compact=None, save_every=save_every)
    return circuit.feedback(sol.y1)


def sleep_wake(network: ForwardNetwork, stream: Callable[[int], tuple[torch.Tensor,
                                                                       torch.Tensor]], *,
               cycles: int, presentations: int, sleep_time: float, pretrain_time: float = 0.0,
               sleep: Mapping[str, Any] | None = None, dfc: Mapping[str, Any] | None = None,
               wake: Mapping[str, Any] | None = None, eta: float = 0.5, seed: int = 0,
               feedback: str | Sequence[torch.Tensor] = "random"
               ) -> tuple[ForwardNetwork, list[torch.Tensor], list[dict[str, Any]]]:
    """The authors' schedule: ``pretrain_time`` of sleep, then ``cycles`` × (a wake phase of
    ``presentations`` minibatches of ``stream`` — one :func:`solvers.train` — and a sleep phase
    of ``sleep_time`` on the inputs of the wake phase's last minibatch, starting from the
    previous Q, with a new noise seed).

    ``sleep``: :func:`learn_dfc_feedback`'s settings (``dt``, ``sigma``, ``tau_Q`` ...);
    ``dfc``: :class:`DeepFeedbackControl`'s (``alpha``, ``k_p`` ...; ``feedback`` is Q);
    ``wake``: :func:`solvers.train`'s (``period``, ``dt``, ``method`` ...); ``eta``: the forward
    weights' rate. Returns the trained network, the last Q and one record per cycle (the
    presentations done, the largest weight change, the divergence flags)."""
    for name, value in (("cycles", cycles), ("presentations", presentations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: received {value!r}, expected an integer ≥ 1")
    positive_float("sleep_time", sleep_time)
    sleep, dfc, wake = dict(sleep or {}), dict(dfc or {}), dict(wake or {})
    Q = feedback
    if pretrain_time > 0 or isinstance(Q, str):          # wake needs a learned Q to start
        Q = learn_dfc_feedback(network, stream(0)[0], seed=seed, feedback=Q,
                               time=pretrain_time if pretrain_time > 0 else sleep_time, **sleep)
    records, done = [], 0
    for cycle in range(cycles):
        x0, t0 = stream(done)
        plastic = Plastic(Settling(DeepFeedbackControl, feedback=Q, **dfc), network, x0, t0,
                          eta=eta, gate="settled")
        y0 = plastic.initial_state()
        result = train(plastic, y0, lambda k: stream(done + k), presentations=presentations,
                       progress=False, **wake)
        before = network
        network = plastic.network_of(result.y)
        done += presentations
        Q = learn_dfc_feedback(network, stream(done - 1)[0], time=sleep_time,
                               seed=seed + cycle + 1, feedback=Q, **sleep)
        change = max(float((a - b).abs().max()) for a, b in zip(network.weights, before.weights))
        records.append({"cycle": cycle, "presentations": done, "max_weight_change": change,
                        "diverged": result.diverged.tolist()})
    return network, Q, records


__all__ = ["learn_dfc_feedback", "sleep_wake"]
