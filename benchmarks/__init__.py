"""Speed measured as ratios against named alternatives; results recorded in BENCHMARKS.md."""
from __future__ import annotations

import json
import sys
from typing import Any, Mapping

import torch


def finish(report: Mapping[str, Any], out: str | None) -> Mapping[str, Any]:
    """Write ``report`` as JSON to ``out`` (if given) and return it."""
    if out:
        with open(out, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {out}")
    return report


def prepare(args) -> tuple[torch.device, torch.dtype]:
    """Apply ``--threads`` and check ``--device`` / ``--dtype`` (shared flags)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available on this machine")
    return device, {"float32": torch.float32, "float64": torch.float64}[args.dtype]
