"""How circuits are integrated: stepping methods, the one ``solve`` loop, stopping rules,
recording, the torchdiffeq adapter, presentations (training as integration)."""
from .methods import ADAPTIVE, METHODS, Tableau, get_method, phi1, rk_step
from .presentations import Phase, present, present_all
from .solve import Solution, Status, solve
from .state import Layout, State

__all__ = ["ADAPTIVE", "METHODS", "Tableau", "get_method", "phi1", "rk_step", "Phase", "present",
           "present_all", "Solution",
           "Status", "solve", "Layout", "State"]
