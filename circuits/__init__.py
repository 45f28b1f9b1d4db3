"""What is integrated: circuit families as vector fields (credit circuits rebound to the weights
of a state, learning circuits with weights as state and one gate protocol), the shared forward
network, closed forms (steady states, credit baselines), stability analysis and the method
registry (:mod:`circuits.registry`: name → learning circuit)."""
from .activations import ACTIVATIONS, Activation, get_activation
from .circuit import Circuit, CreditCircuit
from .credit import (alignment, angle, backprop, cascade, feedback_alignment, gauss_newton,
                     pseudo_backprop, reference_credits, weight_updates)
from .dynamic_inversion import DynamicInversion, SingleLoopDynamicInversion, effective_leak, invert
from .feedback_control import DeepFeedbackControl
from .feedback_learning import (DifferenceReconstruction, FeedbackLearning, LearnedFeedback,
                                ReconstructionLearning, initial_feedback, learn_feedback)
from .gates import ArrivalGate, Continuous, LayerSchedule, Plasticity, Schedule, Settled, Signals
from .local_decoders import LocalDecoders
from .network import Forward, ForwardNetwork, affine, compact, replica_network
from .parameters import Population, Role
from .plasticity import ClosedForm, Family, Plastic, Settling, Targets, outer_updates
from .predictive_coding import (PredictiveCoding, backprop_updates, fixed_prediction_transient,
                                update_divergence)
from .target_propagation import (Decoder, InverseDecoder, MirroredDecoder, TargetPropagation,
                                 gauss_newton_targets, influence_scaled, inverse_decoders)
from .stability import (StabilityReport, amplification, analyse, analyse_circuit, jacobian,
                        smoothed_spectral_abscissa, stabilise_feedback)

__all__ = [
    "CreditCircuit",
    "ACTIVATIONS", "Activation", "get_activation", "Circuit",
    "alignment", "angle", "backprop", "cascade", "feedback_alignment", "gauss_newton",
    "pseudo_backprop", "reference_credits", "weight_updates",
    "DynamicInversion", "SingleLoopDynamicInversion", "effective_leak", "invert",
    "DeepFeedbackControl", "DifferenceReconstruction", "ReconstructionLearning",
    "FeedbackLearning", "LearnedFeedback", "initial_feedback", "learn_feedback",
    "LayerSchedule", "LocalDecoders", "ArrivalGate", "Continuous", "Plasticity", "Schedule", "Settled", "Signals",
    "PredictiveCoding", "backprop_updates", "fixed_prediction_transient", "update_divergence",
    "Forward", "ForwardNetwork", "affine", "compact", "replica_network", "Population", "Role",
    "StabilityReport", "amplification", "analyse", "analyse_circuit", "jacobian",
    "smoothed_spectral_abscissa", "stabilise_feedback",
    "Decoder", "InverseDecoder", "MirroredDecoder", "TargetPropagation", "gauss_newton_targets",
    "influence_scaled", "inverse_decoders",
    "ClosedForm", "Family", "Plastic", "Settling", "Targets", "outer_updates",
]
