"""The method registry: a credit-assignment method's name → its learning circuit.

Every method of the method table is a *learning circuit* — weights in its state, a gate deciding
when they change, ``present(x, target, y)`` for the drive — that :func:`solvers.train` integrates
the same way. :func:`learning_circuit` builds one by name on a network and a first example; its
``outputs(y, x)`` reads the network's output off a state (for evaluation).

=================== ==========================================================================
``backprop``        ``Plastic(ClosedForm("backprop"))``: the reference (gate always open)
``feedback_alignment``  fixed random feedback per replica (``ClosedForm``)
``pseudo_backprop`` the pseudo-inverse ``W⁺`` as feedback (``ClosedForm``)
``ndi``             layer-wise dynamic inversion's closed-form steady state (``ClosedForm``)
``di``, ``sdi``     dynamic inversion simulated (layer-wise, single loop): ``Settling``
``dfc``             deep feedback control (PI controller): ``Settling``
``pc``              predictive coding with the arrival gate (Fa-Z-IL): a free phase, then the
                    teacher (``teacher_from`` in training); with ``circuit={"reset":
                    "feed_forward"}`` the values jump to the free phase's equilibrium instead
``z_il``            predictive coding, Z-IL in one integration: each example jumps the values to
                    the feed-forward pass, the schedule gate restarts every ``period``
``iterated_dtp``    Bengio's iterated inverse, decoders at their auto-encoder rule's fixed point
                    for the current weights (``Targets``)
``ddtp_linear``     direct feedback, the damped Gauss-Newton Q (``Targets``)
``local_decoders``  every layer learns on its own linear decoder's loss
=================== ==========================================================================
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

from .dynamic_inversion import DynamicInversion, SingleLoopDynamicInversion
from .feedback_control import DeepFeedbackControl
from .feedback_learning import FeedbackLearning, initial_feedback, learn_feedback
from .gates import ArrivalGate, Schedule
from .local_decoders import LocalDecoders
from .network import ForwardNetwork
from .plasticity import ClosedForm, Plastic, Settling, Targets
from .predictive_coding import PredictiveCoding
from .target_propagation import TargetPropagation

METHODS = ("backprop", "feedback_alignment", "pseudo_backprop", "ndi", "di", "sdi", "dfc", "pc",
           "z_il", "iterated_dtp", "ddtp_linear", "local_decoders")
LABELS = {"backprop": "BP", "feedback_alignment": "FA", "pseudo_backprop": "PBP", "ndi": "NDI",
          "di": "DI (simulated)", "sdi": "SDI (simulated)", "dfc": "DFC", "pc": "PC (Fa-Z-IL)",
          "z_il": "PC (Z-IL)", "iterated_dtp": "DTP (iterated inverse)",
          "ddtp_linear": "DDTP-linear", "local_decoders": "local decoders"}
_TP_SET = ("network", "x", "target", "rule", "decoders", "feedback", "online_gamma", "online_eta",
           "online_form", "anchor")
#: the constructor each method's circuit keyword arguments go to, and the arguments the
#: registry sets itself (so a config may not)
CIRCUIT_ARGS: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "backprop": (ClosedForm, ("credit", "feedback", "dynamics")),
    "feedback_alignment": (ClosedForm, ("credit", "feedback", "dynamics")),
    "pseudo_backprop": (ClosedForm, ("credit", "feedback", "dynamics")),
    "ndi": (DynamicInversion, ("network", "x", "target", "output_error")),
    "di": (DynamicInversion, ("network", "x", "target", "output_error")),
    "sdi": (SingleLoopDynamicInversion, ("network", "x", "target", "output_error")),
    "dfc": (DeepFeedbackControl, ("network", "x", "target")),
    "pc": (PredictiveCoding, ("network", "x", "target", "eta", "plasticity")),
    "z_il": (PredictiveCoding, ("network", "x", "target", "eta", "plasticity", "reset")),
    "iterated_dtp": (TargetPropagation, _TP_SET),
    "ddtp_linear": (TargetPropagation, _TP_SET),
    "local_decoders": (LocalDecoders, ("network", "x", "y", "eta")),
}


def decoders_at_fixed_point(settings: FeedbackLearning, seed: int = 1
                            ) -> Callable[[ForwardNetwork, torch.Tensor], list]:
    """``(network, x) ↦`` mirrored decoders at the auto-encoder rule's fixed point for the
    current weights and batch (from the same random start every time: only the decoders'
    shapes and activations matter, the fixed point does not depend on it)."""
    start: dict[str, Any] = {}

    def decoders(network: ForwardNetwork, x: torch.Tensor) -> list:
        if "g" not in start:
            start["g"] = initial_feedback("decoders", network, scale=settings.init_scale,
                                          seed=seed)
        return learn_feedback(network, x, start["g"], settings, seed=seed, duration=math.inf,
                              check=False)           # x: the drive's batch, checked already
    return decoders


#: the methods whose circuit owns its plasticity (not a :class:`Plastic` wrapper): gradient flow
#: only, and their reset is a circuit argument
OWN_PLASTICITY = ("pc", "z_il", "local_decoders")


def learning_circuit(method: str, network: ForwardNetwork, x: torch.Tensor,
                     target: torch.Tensor, *, eta=0.1, gate: Any = "always", theta: float = 0.05,
                     period: float = 1.0, form: str = "dtp1", anchor: float = 0.0,
                     circuit: Mapping[str, Any] | None = None,
                     gate_args: Mapping[str, Any] | None = None,
                     feedback: Callable[[ForwardNetwork, torch.Tensor], Any]
                     | Mapping[str, Any] | None = None, reset: str = "none",
                     loss: str | None = None, flow: Any = None) -> Any:
    """The learning circuit of ``method`` (one of :data:`METHODS`) on ``network`` with the
    first example ``x [B, n_0]``, ``target [B, n_L]``.

    ``eta``: the learning rate per unit time. ``gate``/``theta``: the plasticity gate of the
    ``Plastic`` methods (``"settled"``, ``"always"`` or a :class:`circuits.gates.Plasticity`).
    ``period``: the presentation period (Z-IL's schedule restarts with it). ``form``/``anchor``:
    the target methods' weight change and hidden-target leak. ``circuit``: keyword arguments of
    the method's circuit (e.g. DI's ``alpha``); ``gate_args``: :class:`ArrivalGate`'s (``pc``);
    ``feedback``: the target methods' feedback for the current weights and input, a function
    ``(network, x)``; for ``iterated_dtp`` also a mapping of :class:`FeedbackLearning` settings
    (default: its defaults), giving :func:`decoders_at_fixed_point`. ``reset``: the ``Plastic``
    methods' (``"rest"``: every example settles from rest). ``loss``: the target is the labels of
    this loss (:mod:`circuits.losses`: ``squared_error``, ``cross_entropy``), for every method
    (predictive coding's too). ``flow``: how the ``Plastic`` methods' weights move
    (:func:`circuits.weight_flow.weight_flow`: None for gradient flow, ``"adam"`` or
    ``{"adam": {...}}`` for Adam as an ODE); ``pc``, ``z_il`` and ``local_decoders`` own their
    plasticity and take none."""
    if method not in METHODS:
        raise ValueError(f"method: received {method!r}, expected one of {list(METHODS)}")
    kw = dict(circuit or {})
    if gate_args and method != "pc":
        raise ValueError(f"gate_args: received {dict(gate_args)!r} for method {method!r}, "
                         "expected none (only pc has an ArrivalGate)")
    if method in OWN_PLASTICITY:
        if flow is not None:
            raise ValueError(f"flow: received {flow!r} for method {method!r}, expected None "
                             "(it owns its plasticity: gradient flow only)")
        if reset != "none":
            raise ValueError(f"reset: received {reset!r} for method {method!r}, expected "
                             "'none' (its own reset is a circuit argument)")
    if method == "pc":
        return PredictiveCoding(network, x, None, eta=eta, loss=loss,
                                plasticity=ArrivalGate(**(gate_args or {})), **kw)
    if method == "z_il":
        return PredictiveCoding(network, x, target, eta=eta, reset="feed_forward", loss=loss,
                                plasticity=Schedule.z_il(network.L, cycle=period), **kw)
    if method == "local_decoders":
        if loss not in (None, "squared_error"):
            raise ValueError(f"loss: received {loss!r} for local_decoders, expected None (each "
                             "layer learns on its own decoder's loss; the output's is "
                             "LocalDecoders' output_loss, 'bce' or 'mse')")
        return LocalDecoders(network, x, target, eta=eta, **kw)
    if method in ("backprop", "feedback_alignment", "pseudo_backprop", "ndi"):
        family = ClosedForm(method, **kw)
    elif method == "di":
        family = Settling(DynamicInversion, **kw)
    elif method == "sdi":
        family = Settling(SingleLoopDynamicInversion, **kw)
    elif method == "dfc":
        family = Settling(DeepFeedbackControl, **kw)
    elif method == "iterated_dtp":
        if feedback is None or isinstance(feedback, Mapping):
            feedback = decoders_at_fixed_point(FeedbackLearning(**(feedback or {})))
        family = Targets("iterated_output", form=form, anchor=anchor, feedback=feedback, **kw)
    else:
        family = Targets("ddtp_linear", form=form, anchor=anchor, feedback=feedback, **kw)
    return Plastic(family, network, x, target, eta=eta, gate=gate, theta=theta, reset=reset,
                   loss=loss, flow=flow)


__all__ = ["METHODS", "LABELS", "CIRCUIT_ARGS", "OWN_PLASTICITY", "decoders_at_fixed_point",
           "learning_circuit"]
