#!/usr/bin/env bash
# Installs the project and everything it needs into the current Python (idempotent, quiet).
# torch comes first as the CPU build 2.13.0: a plain 'torch' requirement would otherwise pull the
# newest release with several GB of CUDA wheels. A torch that is already installed (for example a
# CUDA build on a GPU machine) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch==2.13.0 (CPU build)"
  "$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
fi
if ! "$PY" -m pip show -q feedback-circuits >/dev/null 2>&1 \
   || ! "$PY" -I -c "import circuits, solvers, workbench, torchdiffeq, yaml, tqdm, matplotlib, mnist1d, xarray, h5netcdf, h5py, distributed, pytest" >/dev/null 2>&1; then
  echo "setup: installing feedback-circuits and its dependencies"
  "$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
fi
