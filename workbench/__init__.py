"""What a user's own script works with: tasks, data sets and plots.

* :mod:`workbench.tasks`: the :class:`Task` type (a train/test split with one-hot targets) and
  small seeded tasks (Gaussian mixture, spiral, teacher regression); :func:`make_task`.
* :mod:`workbench.datasets`: data sets that need no network access (signed XOR, scikit-learn's
  8 × 8 digits, MNIST-1D from the ``mnist1d`` package's own generator, MNIST / Fashion-MNIST
  from IDX files you have, Podlaski & Machens' teachers); :func:`make_dataset`.
* :mod:`workbench.sleep`: deep feedback control's sleep/wake schedule (Q learned in sleep
  phases, the forward weights in wake phases): :func:`~workbench.sleep.learn_dfc_feedback`,
  :func:`~workbench.sleep.sleep_wake`.
* :mod:`workbench.plots`: matplotlib (Agg) figures. Not imported by ``import workbench`` (it
  selects matplotlib's Agg backend): ``from workbench import plots`` or ``workbench.plots``.

Built on :mod:`circuits` and :mod:`solvers`; the demos (:mod:`demos`) import from here, never
the other way round.
"""
from __future__ import annotations

import importlib
from typing import Any

from .datasets import (DATASETS, DataFileError, digits, fashion_mnist, idx_dataset, load_idx,
                       make_dataset, mnist, mnist1d, signed_xor, teacher_linear,
                       teacher_nonlinear)
from .tasks import TASKS, Task, gaussian_mixture, make_task, spiral, teacher_regression


def __getattr__(name: str) -> Any:
    """``workbench.plots`` on first use (importing it selects matplotlib's Agg backend)."""
    if name == "plots":
        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DATASETS", "DataFileError", "TASKS", "Task", "digits", "fashion_mnist",
           "gaussian_mixture", "idx_dataset", "load_idx", "make_dataset", "make_task", "mnist",
           "mnist1d", "signed_xor", "spiral", "teacher_linear", "teacher_nonlinear",
           "teacher_regression"]
