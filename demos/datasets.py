"""Moved to :mod:`workbench.datasets`; kept until imports outside this repository's files are
updated (no file here imports it any more; then delete this file)."""
from workbench.datasets import *  # noqa: F401,F403
from workbench.datasets import DATASETS, make_dataset, mnist1d  # noqa: F401
