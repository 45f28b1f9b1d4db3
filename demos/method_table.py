"""The whole method table: every method on every task, fully in continuous time.

    python -m demos.method_table --out DIR [--configs configs/digits.yaml configs/mnist1d.yaml]
                                 [--resume] [--no-progress]

Runs :mod:`demos.train` once per config (default: ``configs/digits.yaml`` and
``configs/mnist1d.yaml``; add ``configs/mnist1d_adam.yaml`` for the MNIST-1D table with Adam) into
``DIR/<task>/``, or ``DIR/<table>/`` for a config with a ``table`` name (its own summary, table,
figure and checkpoints)
and writes the combined ``DIR/summary.json`` (``{"runs": [...]}``, the rows of every task, same
keys as :mod:`demos.train`'s) and ``DIR/table.md``: test accuracy mean ± std over seeds, the
wall-clock seconds per epoch of each method's integration (all seeds in one integration) and
its ratio to backprop's on the same task. ``--resume`` continues every task from its
checkpoints.

:func:`table` formats summary rows as markdown, of one task (:mod:`demos.train`'s ``table.md``;
re-exported as ``demos.train.table``) or of all.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from circuits.registry import LABELS

from .config import jsonable, no_checkpoint, output_dir
from .method_config import table_name

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = (ROOT / "configs" / "digits.yaml", ROOT / "configs" / "mnist1d.yaml")


def run(out: str | Path, configs: Sequence[str | Path] = CONFIGS, *, resume: bool = False,
        progress: bool = True, plans: Sequence[Any] | None = None) -> dict[str, Any]:
    """Train every config's methods; write the combined summary.json and table.md. Everything
    is checked first (:func:`prepare`, or the ``plans`` it returned)."""
    from . import train                  # here: demos.train imports this module's table
    plans = prepare(out, configs, resume=resume) if plans is None else plans
    out = Path(out)
    start = time.perf_counter()
    runs, per_task = [], {}
    for path, plan in zip(configs, plans):
        cfg = plan.cfg
        summary = train.run(plan, plan.out, progress=progress)
        runs += summary["runs"]
        per_task[table_name(cfg)] = {"chance": summary["chance"], "widths": summary["widths"],
                                 "seconds": summary["seconds"], "config": str(path)}
    chance = {t: v["chance"] for t, v in per_task.items()}
    combined = jsonable({"runs": runs, "tasks": per_task,
                         "seconds": time.perf_counter() - start})
    (out / "summary.json").write_text(json.dumps(combined, indent=2, allow_nan=False))
    (out / "table.md").write_text(header(per_task) + table(runs, chance))
    return combined


def table(runs: list[Mapping[str, Any]], chance: Mapping[str, float] | None = None) -> str:
    """The markdown table of summary rows (:func:`demos.train.runs_of`): accuracy mean ± std
    over seeds, seconds per epoch (whole integration, all seeds at once) and its ratio to
    backprop's, one line per task × method; then chance per task."""
    lines = ["| task | method | test accuracy (mean ± std over seeds) | seeds | "
             "s / epoch (all seeds in one integration) | × backprop | diverged |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r.get("table") or r["task"], r["method"]), []).append(r)
    for (task_name, method), rows in groups.items():
        acc = np.array([r["test_accuracy"] for r in rows])
        ratio = rows[0].get("ratio_to_backprop")
        lines.append(f"| {task_name} | {LABELS.get(method, method)} | "
                     f"{100 * acc.mean():.1f} ± {100 * acc.std():.1f} % | {len(rows)} | "
                     f"{rows[0]['seconds']:.2f} | "
                     f"{'—' if ratio is None else f'{ratio:.1f}'} | "
                     f"{sum(bool(r.get('diverged')) for r in rows)} |")
    if chance:
        lines.append("")
        lines.append("Chance (most frequent test class): " + ", ".join(
            f"{t} {100 * c:.1f} %" for t, c in chance.items()) + ".")
    return "\n".join(lines) + "\n"


def prepare(out: str | Path, configs: Sequence[str | Path] = CONFIGS, *, resume: bool = False,
            out_name: str = "out") -> list[Any]:
    """Every task's :func:`demos.train.prepare`d run (one config per task), checked before any
    training: configs, the output folder (``out_name`` names it in errors) and, with
    ``resume``, the checkpoints. ``resume`` with no checkpoint in any task's folder is an error
    (:func:`demos.config.no_checkpoint`); a task the interrupted run had not reached starts
    afresh, said on stderr."""
    from . import train
    cfgs = [train.load(c) for c in configs]
    tasks = [table_name(c) for c in cfgs]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"--configs: received tables {tasks}, expected one config per task "
                         "(a second config of a task needs a 'table' name of its own)")
    out = output_dir(out, out_name)
    found = [train.has_checkpoint(c, out / t) for c, t in zip(cfgs, tasks)]
    if resume and not any(found):
        raise no_checkpoint(out, "<task>/checkpoints/<task>_<method>.pt for one of the tasks "
                            f"{tasks}")
    plans = []
    for cfg, name, again in zip(cfgs, tasks, found):
        if resume and not again:
            print(f"--resume: no checkpoint for {name} in {out / name} (the "
                  "interrupted run had not reached it); starting it afresh", file=sys.stderr)
        plans.append(train.prepare(cfg, out / name, resume=resume and again,
                                   out_name=f"{out_name}/{name}"))
    return plans


def header(per_task: dict[str, Any]) -> str:
    shapes = ", ".join(f"{t} {v['widths']}" for t, v in per_task.items())
    return ("Test accuracy after training in continuous time (mean ± std over the seeds, which "
            "are the replicas of one integration per method); seconds per epoch are the wall "
            "time of that whole integration (all seeds together, evaluation excluded) on one "
            f"CPU thread, and × backprop their ratio to backprop's on the same task. Networks: "
            f"{shapes}.\n\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.method_table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--configs", nargs="+", default=[str(c) for c in CONFIGS],
                        help="one demos.train config per task (a second config of a task "
                        "needs its own 'table' name)")
    parser.add_argument("--resume", action="store_true",
                        help="continue every task's methods from their checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:                                 # every check before any training: usage errors
        plans = prepare(args.out, args.configs, resume=args.resume, out_name="--out")
    except (OSError, ValueError, TypeError) as err:
        parser.error(str(err))
    try:
        summary = run(args.out, args.configs, resume=args.resume,
                      progress=not args.no_progress, plans=plans)
    except KeyboardInterrupt:
        print(f"interrupted; rerun with --resume to continue from the checkpoints in "
              f"{args.out}", file=sys.stderr)
        return 130
    print(Path(args.out, "table.md").read_text())
    print(f"total {summary['seconds']:.1f} s; summary.json and table.md in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
