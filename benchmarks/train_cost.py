"""Training in continuous time: the cost of an epoch per method, against backprop in the same run.

Every method of the method table (``demos.train``: the same registry, config, network, minibatch
stream and epochs) trains on one task, default scikit-learn's 8×8 digits with a ``[64, 32, 10]``
tanh network, B = 32, float64, three seeds as the replicas of one integration, one intra-op thread.
Backprop (``Plastic(ClosedForm("backprop"))``, one Euler step per minibatch: exactly SGD) runs in
the same process on the same stream. Per method:

``seconds_per_epoch``            wall time of the integration (all seeds together), evaluation
                                 excluded, after an untimed warm-up (first evaluation, first
                                 linearisation: torch.func's one-off imports); the median of
                                 ``--repeats`` identical runs (min and max beside it)
``ratio_to_backprop``            that over backprop's
``test_accuracy``                mean over the seeds after the last epoch
``eval_ratio_to_vector_field``   one evaluation of the learning circuit (weights in the state:
                                 rebinding, forward pass, credit populations, gate, weight change)
                                 over one evaluation of the bare credit circuit's vector field on
                                 the same state (null where there is no separate credit circuit)
``steps_per_presentation``       steps the integrator took per minibatch

Run from the repository root::

    python -m benchmarks.train_cost --out DIR              # digits, all methods, ≈ 3 min here
    python -m benchmarks.train_cost --out DIR --methods backprop di --epochs 2

Writes ``DIR/summary.json``: ``{"methods": {NAME: {...}}, "machine": {...}, ...}`` with NAME among
``backprop, di, sdi, dfc, fa_z_il, z_il, dtp, ddtp_linear, local_decoders`` (the method table's
``pc`` is reported as ``fa_z_il``, ``iterated_dtp`` as ``dtp``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from demos import train as registry
from solvers import train

from . import prepare
from .di_batched import load_average, machine_info

#: benchmark name → the method table's name
NAMES: dict[str, str] = {
    "backprop": "backprop", "di": "di", "sdi": "sdi", "dfc": "dfc", "fa_z_il": "pc",
    "z_il": "z_il", "dtp": "iterated_dtp", "ddtp_linear": "ddtp_linear",
    "local_decoders": "local_decoders"}
def per_call(fn, repeats: int = 200) -> float:
    """Median-free mean seconds per call over ``repeats`` calls after two warm-ups."""
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def eval_ratio(circuit: Any, y: dict[str, torch.Tensor]) -> float | None:
    """One learning-circuit evaluation over one evaluation of its bare credit circuit."""
    fast = getattr(circuit, "fast", None)
    if not fast or not hasattr(circuit, "bound"):
        return None
    bare = circuit.bound(y)
    y_fast = {k: y[k] for k in fast}
    with torch.no_grad():
        whole = per_call(lambda: circuit.vector_field(0.0, y))
        alone = per_call(lambda: bare.vector_field(0.0, y_fast))
    return whole / alone


def run_method(cfg, task, method: str, repeats: int = 3) -> dict[str, Any]:
    setup = registry.build(cfg, task, method)
    s = setup.spec
    kw = dict(period=s.period, dt=s.dt, method=s.integrator, teacher_from=s.teacher_from,
              relinearise_every=s.relinearise_every, progress=False)
    warm = min(s.relinearise_every, setup.presentations)     # untimed: first linearisation
    with torch.no_grad():
        train(setup.circuit, setup.y0, setup.stream, presentations=warm, chunk=warm, **kw)
        ratio = eval_ratio(setup.circuit, setup.y0)
        times = []
        for _ in range(repeats):                  # the same run each time (deterministic)
            start = time.perf_counter()
            result = train(setup.circuit, setup.y0, setup.stream,
                           presentations=setup.presentations, chunk=setup.per_epoch, **kw)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    epochs = setup.presentations // setup.per_epoch
    acc = registry.accuracy(setup, result.y, task)
    return {"seconds_per_epoch": seconds / epochs, "test_accuracy": float(acc.mean()),
            "seconds_per_epoch_min_max": [min(times) / epochs, max(times) / epochs],
            "repeats": repeats,
            "test_accuracy_per_seed": acc.tolist(), "eval_ratio_to_vector_field": ratio,
            "steps_per_presentation": result.stats["steps"] / setup.presentations,
            "diverged": int(result.diverged.sum()), "method_table_name": method,
            "settings": {k: getattr(s, k) for k in ("eta", "period", "dt", "integrator", "gate",
                                                    "relinearise_every")}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for summary.json")
    parser.add_argument("--config", default="configs/digits.yaml")
    parser.add_argument("--methods", nargs="+", default=list(NAMES), choices=list(NAMES))
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per method; the median is reported (default 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: received {args.repeats}, expected an integer ≥ 1")
    device, dtype = prepare(args)
    if device.type != "cpu":
        parser.error("--device: the method table's tasks are built on the CPU; only 'cpu' is "
                     "supported here so far")
    cfg = dict(registry.load(args.config))
    cfg["network"] = {**cfg["network"], "dtype": dtype}
    cfg["training"] = {**cfg["training"], **({"epochs": args.epochs} if args.epochs else {})}
    names = ["backprop"] + [m for m in args.methods if m != "backprop"]
    cfg["methods"] = [NAMES[m] for m in names]
    cfg = registry.load(cfg)
    task = registry.load_task(cfg)
    out: dict[str, Any] = {}
    for name in names:
        out[name] = run_method(cfg, task, NAMES[name], args.repeats)
        bp = out["backprop"]["seconds_per_epoch"]
        out[name]["ratio_to_backprop"] = out[name]["seconds_per_epoch"] / bp
        r = out[name]
        ev = r["eval_ratio_to_vector_field"]
        print(f"{name:15s} {r['seconds_per_epoch']:8.4f} s/epoch  {r['ratio_to_backprop']:7.1f}× "
              f"backprop  accuracy {100 * r['test_accuracy']:5.1f} %  "
              f"eval/vf {'—' if ev is None else f'{ev:.2f}'}  "
              f"steps/presentation {r['steps_per_presentation']:.0f}")
    summary = {"methods": out, "machine": {**machine_info(device), "load_average":
                                           load_average()},
               "task": cfg["task"], "widths": registry.network(cfg, task, "linear").widths,
               "batch": cfg["training"]["batch"], "epochs": cfg["training"]["epochs"],
               "seeds": cfg["training"]["seeds"], "dtype": str(dtype).replace("torch.", "")}
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {path / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
