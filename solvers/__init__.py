"""How circuits are integrated: stepping methods, the one ``solve`` loop, stopping rules,
recording, the torchdiffeq adapter, the one training loop ``train`` (an explicit drive with
declared jumps; ``exp_partitioned`` steps for settling circuits; phases; checkpoints), parameter
sweeps as the replica axis (labelled results, automatic chunking). It imports nothing from
``circuits``: a circuit is anything with a vector field."""
from .implicit import IMPLICIT, MAX_SIZE, ImplicitEulerStep, ImplicitMethod, replica_jacobian
from .methods import ADAPTIVE, METHODS, Tableau, get_method, phi1, rk_step
from .presentations import Phase, present, present_all
from .solve import Solution, Status, solve
from .state import Layout, State
from .odeint import OdeintFunction, as_odeint
from . import checkpoint
from .stream import minibatch_order
from .partitioned import TRAINING_METHODS, PartitionedExponential
from .training import Drive, Stream, TrainingResult, train
from .sweep import (Grid, LabelledArray, LinearStability, SweepResult, bytes_per_replica,
                    closed_form_error, linearised_stability, moved_attribute, predict_stability,
                    sweep)

__all__ = ["IMPLICIT", "MAX_SIZE", "ImplicitEulerStep", "ImplicitMethod", "replica_jacobian",
           "ADAPTIVE", "METHODS", "Tableau", "get_method", "phi1", "rk_step", "Phase", "present",
           "present_all", "Solution",
           "Status", "solve", "Layout", "State", "Grid", "LabelledArray", "SweepResult",
           "LinearStability", "bytes_per_replica", "closed_form_error", "linearised_stability",
           "predict_stability",
           "sweep", "Drive", "Stream", "TrainingResult", "train", "TRAINING_METHODS",
           "PartitionedExponential",
           "checkpoint", "minibatch_order", "OdeintFunction", "as_odeint"]


def __getattr__(name: str):
    raise moved_attribute(__name__, name)
