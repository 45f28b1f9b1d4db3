"""Moved to :mod:`workbench.plots`; kept until the imports of ``demos/sweep.py``,
``demos/reproduce_podlaski2020.py``, ``demos/train.py``, ``demos/train_pc.py`` and
``demos/settle.py`` are updated (then delete this file)."""
from workbench.plots import *  # noqa: F401,F403
from workbench.plots import (Curve, Trace, curve_panels_figure, fa_z_il_figures,  # noqa: F401
                             seed_curves_figure, settling_figure, sweep_figure)
