"""What is integrated: circuit families as vector fields, the shared forward network, closed
forms (steady states, credit baselines) and stability analysis."""
from .activations import ACTIVATIONS, Activation, get_activation
from .circuit import Circuit
from .credit import (alignment, angle, backprop, cascade, feedback_alignment, gauss_newton,
                     pseudo_backprop, reference_credits, weight_updates)
from .feedback_control import DeepFeedbackControl
from .dynamic_inversion import DynamicInversion, SingleLoopDynamicInversion, effective_leak, invert
from .network import Forward, ForwardNetwork
from .parameters import Population, Role
from .stability import (StabilityReport, amplification, analyse, analyse_circuit, jacobian,
                        smoothed_spectral_abscissa, stabilise_feedback)

__all__ = [n for n in dir() if not n.startswith("_")]
