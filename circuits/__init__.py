"""What is integrated: circuit families as vector fields (credit circuits rebound to the weights
of a state, learning circuits with weights as state and one gate protocol), the shared forward
network, closed forms (steady states, credit baselines), stability analysis and the method
registry (:mod:`circuits.registry`: name → learning circuit)."""
from .activations import ACTIVATIONS, Activation, get_activation
from .circuit import Circuit, CreditCircuit
from .credit import (alignment, angle, backprop, cascade, damped_pseudo_inverse,
                     feedback_alignment, gauss_newton, gauss_newton_step, pseudo_backprop,
                     reference_credits, weight_updates)
from .dynamic_inversion import DynamicInversion, SingleLoopDynamicInversion, effective_leak, invert
from .feedback_control import DeepFeedbackControl
from .feedback_control_learning import DFCSleep, stacked_jacobian
from .feedback_learning import (DifferenceReconstruction, FeedbackLearning, LearnedFeedback,
                                ReconstructionLearning, initial_feedback, learn_feedback)
from .gates import ArrivalGate, Continuous, LayerSchedule, Plasticity, Schedule, Settled, Signals
from .local_decoders import LocalDecoders
from .network import Forward, ForwardNetwork, affine, compact, replica_network
from .parameters import Population, Role
from .plasticity import ClosedForm, Family, Plastic, Settling, Targets, outer_updates
from .predictive_coding import (PredictiveCoding, backprop_updates, fixed_prediction_transient,
                                update_divergence)
from .target_propagation import (Decoder, FeedbackDecoder, InverseDecoder, MirroredDecoder,
                                 PostInverseDecoder, TargetPropagation, coordinate_noise,
                                 difference_reconstruction_feedback,
                                 difference_reconstruction_loss, gauss_newton_targets,
                                 influence_scaled, inverse_decoders, output_jacobians,
                                 post_layer, post_output_jacobians)
from .weight_flow import AdamFlow, GradientFlow, weight_flow
from .stability import (StabilityReport, amplification, analyse, analyse_circuit, jacobian,
                        smoothed_spectral_abscissa, stabilise_feedback)

__all__ = [
    "CreditCircuit",
    "ACTIVATIONS", "Activation", "get_activation", "Circuit",
    "alignment", "angle", "backprop", "cascade", "feedback_alignment", "gauss_newton",
    "pseudo_backprop", "reference_credits", "weight_updates", "damped_pseudo_inverse",
    "gauss_newton_step",
    "DynamicInversion", "SingleLoopDynamicInversion", "effective_leak", "invert",
    "DeepFeedbackControl", "DFCSleep", "stacked_jacobian",
    "DifferenceReconstruction", "ReconstructionLearning",
    "FeedbackLearning", "LearnedFeedback", "initial_feedback", "learn_feedback",
    "LayerSchedule", "LocalDecoders", "ArrivalGate", "Continuous", "Plasticity", "Schedule", "Settled", "Signals",
    "PredictiveCoding", "backprop_updates", "fixed_prediction_transient", "update_divergence",
    "Forward", "ForwardNetwork", "affine", "compact", "replica_network", "Population", "Role",
    "StabilityReport", "amplification", "analyse", "analyse_circuit", "jacobian",
    "smoothed_spectral_abscissa", "stabilise_feedback",
    "Decoder", "InverseDecoder", "MirroredDecoder", "TargetPropagation", "gauss_newton_targets",
    "influence_scaled", "inverse_decoders", "FeedbackDecoder", "PostInverseDecoder",
    "coordinate_noise", "difference_reconstruction_feedback", "difference_reconstruction_loss",
    "output_jacobians", "post_layer", "post_output_jacobians",
    "ClosedForm", "Family", "Plastic", "Settling", "Targets", "outer_updates",
    "AdamFlow", "GradientFlow", "weight_flow",
]
