"""Speed measured as ratios against named alternatives; results recorded in BENCHMARKS.md."""
from __future__ import annotations

import json
from typing import Any, Mapping


def finish(report: Mapping[str, Any], out: str | None) -> Mapping[str, Any]:
    """Write ``report`` as JSON to ``out`` (if given) and return it."""
    if out:
        with open(out, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {out}")
    return report
