"""A tour of the simulator: every demo in turn, into one folder, with one summary.

    python -m demos.tour --out DIR [--steps settle ...]

Each step writes its plots into ``DIR/<name>/`` and returns its summary dict; the tour combines
them into ``DIR/summary.json`` as ``{"settle": {...}, ...}`` and prints a short report. A step
that raises is recorded as ``{"status": "failed", "error": ...}`` and the tour goes on.

Adding a demo: write ``demos/<name>.py`` with ``run(config, out) -> dict`` and
``report(summary) -> str``, and append ``Step("<name>", <name>.run, <name>.report)`` to
:data:`STEPS`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import (reproduce_bengio2020, reproduce_song2020, settle, sweep, train_pc, train_sweep,
               train_tp)


@dataclass(frozen=True)
class Step:
    """One stop of the tour.

    run:    ``run(config, out) -> summary`` (``config=None``: the demo's own defaults).
    report: ``report(summary) -> str`` (a few human-readable lines).
    passed: ``passed(summary) -> bool``: whether the step's own checks held.
    """

    name: str
    run: Callable[[Any, Path], dict[str, Any]]
    report: Callable[[Mapping[str, Any]], str]
    passed: Callable[[Mapping[str, Any]], bool] = lambda summary: True


# The tour's sweep: 24 × 24 grids instead of the demo's 64 × 64 (18 s instead of 80 s).
SMALL_SWEEP = {
    "dynamic_inversion_grid": {"k_i": {"logspace": [-1, 2, 24]},
                               "alpha": {"logspace": [-2, 1.5, 24]}},
    "feedback_control_grid": {"k_p": {"linspace": [0, 1.5, 24]},
                              "alpha": {"logspace": [-0.5, 2, 24]}},
}

# The tour's training sweep: 5 leaks and 48 minibatches instead of 11 and 192.
SMALL_TRAIN_SWEEP = {"values": {"logspace": [-3, 1, 5]}, "presentations": 48, "n_train": 256}

STEPS: list[Step] = [
    Step("settle", settle.run, settle.report,
         lambda s: bool(s.get("all_within_tolerance"))),
    Step("sweep", lambda config, out: sweep.run(SMALL_SWEEP if config is None else config, out),
         sweep.report,
         lambda s: all(v["stability_agreement"] >= 0.99 for v in s["sweeps"].values())),
    Step("reproduce_song2020", reproduce_song2020.run, reproduce_song2020.report,
         reproduce_song2020.passed),
    Step("train_pc", train_pc.run, train_pc.report, train_pc.passed),
    Step("reproduce_bengio2020", reproduce_bengio2020.run, reproduce_bengio2020.report,
         reproduce_bengio2020.passed),
    Step("train_tp", lambda config, out: train_tp.run(config, out, progress=False),
         train_tp.report, train_tp.passed),
    Step("train_sweep", lambda config, out: train_sweep.run(
        SMALL_TRAIN_SWEEP if config is None else config, out), train_sweep.report,
        train_sweep.passed),
]


def run(out: str | Path, steps: Sequence[str] | None = None,
        configs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the chosen steps (default: all) into ``out``; ``configs[name]`` overrides a step's
    config (a YAML path or a mapping). Returns and writes ``out/summary.json``."""
    names = [s.name for s in STEPS]
    chosen = names if steps is None else list(steps)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(f"steps: received {unknown}, expected names from {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for step in STEPS:
        if step.name not in chosen:
            continue
        start = time.perf_counter()
        try:
            result = step.run((configs or {}).get(step.name), out / step.name)
            result = {**result, "passed": bool(step.passed(result))}
        except Exception as err:  # one failing demo must not hide the others' results
            result = {"status": "failed", "passed": False,
                      "error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc()}
        result["seconds_total"] = time.perf_counter() - start
        summary[step.name] = result
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    return summary


def report(summary: Mapping[str, Any]) -> str:
    """Each step's report under a heading, then one line per step: passed or not."""
    blocks = []
    steps = {s.name: s for s in STEPS}
    for name, result in summary.items():
        head = f"== {name} ({result.get('seconds_total', 0):.1f} s) =="
        if result.get("status") == "failed":
            body = f"FAILED: {result['error']}"
        else:
            body = steps[name].report(result)
        blocks.append(f"{head}\n{body}")
    verdicts = ", ".join(f"{n}: {'ok' if r.get('passed') else 'FAILED'}"
                         for n, r in summary.items())
    blocks.append(f"tour: {verdicts}")
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.tour", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--steps", nargs="+", choices=[s.name for s in STEPS],
                        help="run only these steps (default: all, in order)")
    args = parser.parse_args(argv)
    summary = run(args.out, args.steps)
    print(report(summary))
    print(f"\nplots in {args.out}/<step>/, combined summary in {args.out}/summary.json")
    return 0 if all(r.get("passed") for r in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
