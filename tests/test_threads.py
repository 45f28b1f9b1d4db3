"""Every demo the tour runs does its work on its configured number of torch intra-op threads
and restores the caller's count afterwards (issue 13: ``train_sweep`` once called
``intra_op_threads(...)`` without ``with`` and ran on two threads, which stall 16× on a 2-core
machine when another process keeps one core busy).

Each case runs the demo's quick config with a function the demo calls during its work (its
``solve``, ``sweep`` or ``train``) wrapped to record ``torch.get_num_threads()``. The caller's
count is set to 3, which no demo configures, so a demo that leaves the count alone is caught.
The quick configs keep ``threads: 1``: two threads on this loaded 2-core machine made them 3-5×
slower (train_pc's two presentations: 40 s).
"""
from __future__ import annotations

import pytest
import torch

from demos import (reproduce_bengio2020, reproduce_song2020, settle, sweep, tour, train_pc,
                   train_sweep, train_tp)

CALLER = 3          # the caller's thread count: distinct from every configured value

# demo -> (its module, the function it calls during its work, quick config, configured threads)
# reproduce_song2020 and reproduce_bengio2020 have no `threads` key: they set 1 themselves.
DEMOS = {
    "sweep": (sweep, "sweep", {
        "sweeps": ["dynamic_inversion"], "threads": 1,
        "dynamic_inversion_grid": {"k_i": [1.0, 10.0], "alpha": [0.1, 1.0]}}, 1),
    "reproduce_song2020": (reproduce_song2020, "solve", {
        "widths": (3, 4, 4, 2), "batch": 2, "output_variances": (1.0,)}, 1),
    "train_pc": (train_pc, "integrate", {
        "gaussian_mixture": {"n_train": 64, "n_test": 64},
        "training": {"epochs": 1, "batch": 32, "eval_every": 1, "checkpoint_every": 2},
        "traced_presentations": 1, "threads": 1}, 1),
    "reproduce_bengio2020": (reproduce_bengio2020, "solve", {
        "perturbations": (0.05, 1.3), "tanh_perturbations": (0.05,), "steps": 5,
        "lipschitz_samples": 10, "settle_t1": 20.0, "betas": (1e-1, 1e-2), "gn_fit_points": 2,
        "gn_steps": 5}, 1),
    "train_tp": (train_tp, "integrate", {
        "methods": ["dfa", "backprop"], "tasks": ["regression"],
        "regression": {"n_train": 32, "n_test": 16},
        "training": {"epochs": 1, "eval_every": 1}, "threads": 1}, 1),
    "train_sweep": (train_sweep, "train", {
        "values": [0.1, 1.0], "presentations": 2, "n_train": 16, "n_test": 16, "eval_every": 1,
        "threads": 1}, 1),
}
# the tour's own setting for a step whose demo has none (settle), and settle's quick config
TOUR_QUICK = {"settle": ({"circuits": ["PC"]}, tour.THREADS),
              **{name: (config, threads) for name, (_, _, config, threads) in DEMOS.items()}}
WORK = {"settle": (settle, "solve"), **{name: (m, f) for name, (m, f, _, _) in DEMOS.items()}}


@pytest.fixture
def caller_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(CALLER)
    yield CALLER
    torch.set_num_threads(before)


def record_threads(monkeypatch, module, name) -> list[int]:
    """Wrap ``module.name`` to append ``torch.get_num_threads()`` at each call."""
    seen: list[int] = []
    original = getattr(module, name)

    def recorded(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, recorded)
    return seen


def test_every_tour_step_is_covered():
    assert set(TOUR_QUICK) == {s.name for s in tour.STEPS}
    assert set(WORK) == set(TOUR_QUICK)


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_works_on_its_configured_threads_and_restores_the_callers(
        name, tmp_path, monkeypatch, caller_threads):
    module, work, config, threads = DEMOS[name]
    seen = record_threads(monkeypatch, module, work)
    module.run(config, tmp_path)
    assert seen, f"{name}: {work} was never called: the test watches the wrong function"
    assert set(seen) == {threads}, f"{name}: worked on {sorted(set(seen))} threads, " \
                                   f"configured {threads}"
    assert torch.get_num_threads() == caller_threads, f"{name}: thread count not restored"


@pytest.mark.parametrize("name", [s.name for s in tour.STEPS])
def test_tour_runs_each_step_on_its_threads_and_restores_the_callers(
        name, tmp_path, monkeypatch, caller_threads):
    config, threads = TOUR_QUICK[name]
    module, work = WORK[name]
    seen = record_threads(monkeypatch, module, work)
    lines: list[str] = []
    summary = tour.run(tmp_path, steps=[name], configs={name: config}, progress=False,
                       announce=lines.append)
    assert summary[name].get("status") != "failed", summary[name].get("traceback")
    # announced as it starts (with its expected duration) and as it ends (with its own)
    assert lines[1].startswith(f"[1/1] {name}: ") and "expected ≈ " in lines[1], lines
    assert lines[2].startswith(f"[1/1] {name}: ") and " in " in lines[2] \
        and lines[2].endswith(" s"), lines
    assert seen and set(seen) == {threads}, f"{name}: worked on {sorted(set(seen))} threads, " \
                                            f"configured {threads}"
    assert torch.get_num_threads() == caller_threads


def test_settle_has_a_threads_setting(tmp_path, monkeypatch, caller_threads):
    seen = record_threads(monkeypatch, settle, "solve")
    settle.run({"circuits": ["PC"], "threads": 2}, tmp_path)
    assert set(seen) == {2}
    assert torch.get_num_threads() == caller_threads
