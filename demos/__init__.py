"""Flat scripts, one per use, built on :mod:`circuits` and :mod:`solvers`.

* :mod:`demos.settle`: DI, SDI and DFC settle on one example, against their closed forms.
* :mod:`demos.tour`: runs every demo in turn into one output folder with one ``summary.json``.
* :mod:`demos.config`: YAML configs whose sections map one-to-one onto constructor arguments.
* Tasks, data sets and figures live in :mod:`workbench` (``workbench.tasks``,
  ``workbench.datasets``, ``workbench.plots``), which the demos import.

File I/O, plotting and command lines live here, never in the core.
"""
