"""A tour of the simulator: every demo in turn, into one folder, with one summary.

    python -m demos.tour --out DIR [--steps settle ...] [--progress | --no-progress]

Each step is announced as it starts (what it shows, and how long it took on a 2-core CPU) and
as it ends (its verdict and how long it took); the demos' progress bars (tqdm, on stderr) come
through on a terminal. Each step writes its plots into ``DIR/<name>/`` and returns its summary
dict; the tour combines them into ``DIR/summary.json`` as ``{"settle": {...}, ...}``, prints
each step's report and ends with a one-line verdict. A step that raises is recorded as
``{"status": "failed", "error": ...}`` and the tour goes on.

Every step runs on the demo's own torch thread count (its ``threads`` setting: 1, as the
demos' tensors are tiny) or, for a demo without one, on :data:`THREADS`; the caller's count
is restored after each step. Two threads on a 2-core machine whose other core is busy stall
each other (16× slower, issue 13).

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
from .config import intra_op_threads

THREADS = 1        # torch intra-op threads for a step whose demo sets none (settle)


@dataclass(frozen=True)
class Step:
    """One stop of the tour.

    run:      ``run(config, out) -> summary`` (``config=None``: the tour's config for it).
    report:   ``report(summary) -> str`` (a few human-readable lines).
    passed:   ``passed(summary) -> bool``: whether the step's own checks held.
    shows:    what the step shows, in a few words (announced as it starts).
    expected: seconds it took in the tour on this project's 2-core CPU (announced; with
              these configs: 103 s in all, 108 s with the other core kept busy).
    bars:     whether ``run`` takes ``progress=`` (its progress bars: None on a terminal).
    """

    name: str
    run: Callable[[Any, Path], dict[str, Any]]
    report: Callable[[Mapping[str, Any]], str]
    passed: Callable[[Mapping[str, Any]], bool] = lambda summary: True
    shows: str = ""
    expected: float | None = None
    bars: bool = False


# The tour's sweep: 24 × 24 grids instead of the demo's 64 × 64.
SMALL_SWEEP = {
    "dynamic_inversion_grid": {"k_i": {"logspace": [-1, 2, 24]},
                               "alpha": {"logspace": [-2, 1.5, 24]}},
    "feedback_control_grid": {"k_p": {"linspace": [0, 1.5, 24]},
                              "alpha": {"logspace": [-0.5, 2, 24]}},
}

# The tour's training sweep: 5 leaks and 48 minibatches instead of 11 and 192.
SMALL_TRAIN_SWEEP = {"values": {"logspace": [-3, 1, 5]}, "presentations": 48, "n_train": 256}

# The tour's config of each step (absent: the demo's own defaults).
CONFIGS: dict[str, Any] = {"sweep": SMALL_SWEEP, "train_sweep": SMALL_TRAIN_SWEEP}

def _config(name: str, config: Any) -> Any:
    return CONFIGS.get(name) if config is None else config


STEPS: list[Step] = [
    Step("settle", settle.run, settle.report,
         lambda s: bool(s.get("all_within_tolerance")),
         "six credit circuits settle onto their closed forms", 7),
    Step("sweep", lambda config, out: sweep.run(_config("sweep", config), out),
         sweep.report,
         lambda s: all(v["stability_agreement"] >= 0.99 for v in s["sweeps"].values()),
         "DI and DFC gain × leak grids against the eigenvalue prediction", 12),
    Step("reproduce_song2020", reproduce_song2020.run, reproduce_song2020.report,
         reproduce_song2020.passed, "Song et al. 2020: Z-IL and Fa-Z-IL are backprop", 12),
    Step("train_pc", train_pc.run, train_pc.report, train_pc.passed,
         "Fa-Z-IL trains an MLP with its own gate, alongside backprop", 38, bars=True),
    Step("reproduce_bengio2020", reproduce_bengio2020.run, reproduce_bengio2020.report,
         reproduce_bengio2020.passed, "Bengio 2020: the iterated inverse, DTP1, Gauss-Newton", 2),
    Step("train_tp", train_tp.run, train_tp.report, train_tp.passed,
         "target propagation (DTP, DDTP-linear, DFA) trained in continuous time", 15, bars=True),
    Step("train_sweep", lambda config, out: train_sweep.run(
        _config("train_sweep", config), out), train_sweep.report, train_sweep.passed,
        "five DI networks, one per leak, learn in one integration", 14),
]


def _say(line: str) -> None:
    print(line, flush=True)         # flushed: the lines interleave with the bars on stderr


def _seconds(s: float | None) -> str:
    return "?" if s is None else f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def run(out: str | Path, steps: Sequence[str] | None = None,
        configs: Mapping[str, Any] | None = None, *, progress: bool | None = None,
        announce: Callable[[str], None] = _say) -> dict[str, Any]:
    """Run the chosen steps (default: all) into ``out``; ``configs[name]`` overrides a step's
    config (a YAML path or a mapping). ``announce`` gets a line as each step starts and ends;
    ``progress``: the demos' progress bars (None: on a terminal). Returns and writes
    ``out/summary.json`` (each step's summary, with ``passed`` and ``seconds_total``)."""
    names = [s.name for s in STEPS]
    chosen = names if steps is None else list(steps)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(f"steps: received {unknown}, expected names from {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in STEPS if s.name in chosen]
    expected = sum(s.expected or 0 for s in todo)
    announce(f"tour: {len(todo)} step{'s' * (len(todo) != 1)} into {out}/, expected "
             f"≈ {_seconds(expected)} in all")
    summary: dict[str, Any] = {}
    for i, step in enumerate(todo, start=1):
        tag = f"[{i}/{len(todo)}] {step.name}"
        announce(f"{tag}: {step.shows}{' — ' if step.shows else ''}expected "
                 f"≈ {_seconds(step.expected)} ...")
        start = time.perf_counter()
        try:
            with intra_op_threads(THREADS):          # a demo with its own setting overrides it
                result = step.run((configs or {}).get(step.name), out / step.name,
                                  **({"progress": progress} if step.bars else {}))
            result = {**result, "passed": bool(step.passed(result))}
        except Exception as err:  # one failing demo must not hide the others' results
            result = {"status": "failed", "passed": False,
                      "error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc()}
        result["seconds_total"] = time.perf_counter() - start
        summary[step.name] = result
        verdict = "ok" if result["passed"] else (
            f"FAILED ({result['error']})" if result.get("status") == "failed" else "FAILED")
        announce(f"{tag}: {verdict} in {_seconds(result['seconds_total'])}")
    with (out / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
    return summary


def verdict(summary: Mapping[str, Any]) -> str:
    """One line: how many steps passed, the total time, each step's verdict."""
    ok = sum(bool(r.get("passed")) for r in summary.values())
    total = sum(r.get("seconds_total", 0) for r in summary.values())
    steps = ", ".join(f"{n}: {'ok' if r.get('passed') else 'FAILED'}"
                      for n, r in summary.items())
    return f"tour: {ok}/{len(summary)} steps passed in {_seconds(total)} ({steps})"


def report(summary: Mapping[str, Any]) -> str:
    """Each step's report under a heading, then the one-line :func:`verdict`."""
    blocks = []
    steps = {s.name: s for s in STEPS}
    for name, result in summary.items():
        head = f"== {name} ({result.get('seconds_total', 0):.1f} s) =="
        if result.get("status") == "failed":
            body = f"FAILED: {result['error']}"
        else:
            body = steps[name].report(result)
        blocks.append(f"{head}\n{body}")
    blocks.append(verdict(summary))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.tour", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--steps", nargs="+", choices=[s.name for s in STEPS],
                        help="run only these steps (default: all, in order)")
    bars = parser.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="always show the demos' progress bars (default: on a terminal)")
    bars.add_argument("--no-progress", dest="progress", action="store_false",
                      help="never show them")
    args = parser.parse_args(argv)
    summary = run(args.out, args.steps, progress=args.progress)
    body, _, last = report(summary).rpartition("\n\n")
    print(f"\n{body}\n\nplots in {args.out}/<step>/, combined summary in "
          f"{args.out}/summary.json\n{last}")
    return 0 if all(r.get("passed") for r in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
