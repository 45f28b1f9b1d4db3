"""Moved to :mod:`workbench.tasks`; kept until the imports of ``demos/train_pc.py`` and
``demos/reproduce_podlaski2020.py`` are updated (then delete this file)."""
from workbench.tasks import *  # noqa: F401,F403
from workbench.tasks import TASKS, Task, make_task, teacher_regression  # noqa: F401
