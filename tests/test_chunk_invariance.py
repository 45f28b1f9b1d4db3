"""Chunk-invariant results (issue 13, item 4): every per-replica random draw is a function of the
replica's own seed, never of S, of the other replicas or of the chunk it is solved in.

* The seed rule of :mod:`circuits.feedback`: an int gives every replica the matrices an S = 1
  circuit with that int gets; S ints give replica s the matrices of an S = 1 circuit with
  ``seed[s]``; None (the circuits' default) seeds replica s with s. Checked for every family that
  draws: DI, SDI, DFC, TP (``ddtp_linear``, ``dfa``), feedback alignment, inverse decoders and
  local decoders.
* A sweep with a ``feedback_seed`` axis gives the same per-replica arrays, bit for bit, with chunks
  of 1, 2, 3 and unchunked; a replica solved alone (S = 1) equals it inside S = 8.
* ``demos.sweep`` takes a ``feedback_seed`` axis end to end.

Everything in float64.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from circuits import (ClosedForm, DynamicInversion, ForwardNetwork, LocalDecoders, Plastic,
                      replica_network)
from circuits.dynamic_inversion import SingleLoopDynamicInversion
from circuits.feedback import random_feedback, replica_seeds
from circuits.feedback_control import DeepFeedbackControl
from circuits.gates import LayerSchedule
from circuits.target_propagation import TargetPropagation, inverse_decoders
from solvers import solve
from solvers.sweep import Grid, sweep

F64 = torch.float64
WIDTHS = [4, 6, 5, 3]


def example(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, WIDTHS[0], generator=g, dtype=F64),
            torch.randn(1, WIDTHS[-1], generator=g, dtype=F64))


X, Y = example()


def gaussian(seed: int, shapes, scale: float = 1.0) -> list[torch.Tensor]:
    """The documented draw: a generator seeded with ``seed``, layer after layer, N(0, scale²/m)."""
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(n, m, generator=g, dtype=F64) / m ** 0.5 for n, m in shapes]


# -- the rule ---------------------------------------------------------------------------------

def test_random_feedback_follows_the_seed_rule():
    shapes = [(4, 6), (6, 5), (5, 3)]
    seeds = [7, 3, 7, 0, 11, 2, 5, 3]
    together = random_feedback(shapes, 8, seeds, F64, "cpu")
    for s, seed in enumerate(seeds):                       # replica s: its own seed, nothing else
        for B, want in zip(together, gaussian(seed, shapes)):
            assert torch.equal(B[s], want)
    # equal seeds, bit-identical replicas; different seeds, different matrices
    assert torch.equal(together[2][0], together[2][2])
    assert not torch.equal(together[2][0], together[2][1])
    # an int: every replica the S = 1 draw (what the old code gave at S = 1)
    shared = random_feedback(shapes, 5, 4, F64, "cpu", scale=0.5)
    for B, want in zip(shared, gaussian(4, shapes, 0.5)):
        assert B.shape == (5, *want.shape)
        assert all(torch.equal(B[s], want) for s in range(5))
    # None: replica s from seed s, whatever S
    default = random_feedback(shapes, 6, None, F64, "cpu")
    for s in range(6):
        assert all(torch.equal(B[s], want) for B, want in zip(default, gaussian(s, shapes)))
    # a tensor (a Grid column) and an array are taken like a list
    as_tensor = random_feedback(shapes, 8, torch.tensor(seeds), F64, "cpu")
    as_array = random_feedback(shapes, 8, np.array(seeds), F64, "cpu")
    assert all(torch.equal(a, b) and torch.equal(a, c)
               for a, b, c in zip(together, as_tensor, as_array))


@pytest.mark.parametrize("seed,match", [
    (1.5, r"feedback_seed: received 1\.5, expected an int or S = 3 ints"),
    (True, r"feedback_seed: received True"),
    ([1, 2], r"feedback_seed: received \[1, 2\], expected an int or S = 3 ints"),
    (torch.tensor([1.0, 2.0, 3.0]), r"feedback_seed: received tensor"),
    ([1, 2, 2.5], r"feedback_seed: received \[1, 2, 2\.5\]"),
])
def test_bad_seeds_are_named(seed, match):
    with pytest.raises(ValueError, match=match):
        random_feedback([(2, 2)], 3, seed, F64, "cpu")
    with pytest.raises(ValueError, match=match):
        DynamicInversion(ForwardNetwork(WIDTHS, seed=[0, 1, 2]), X, Y, feedback="random",
                         feedback_seed=seed)


def test_replica_seeds_are_ints():
    assert replica_seeds("s", torch.tensor([3, 1]), 2) == [3, 1]
    assert replica_seeds("s", np.int64(4), 3) == [4, 4, 4]
    assert replica_seeds("s", None, 3, allow_none=True) == [0, 1, 2]
    with pytest.raises(ValueError, match="s: received None"):
        replica_seeds("s", None, 3)


# -- every family that draws --------------------------------------------------------------------

SEEDS = [5, 0, 9, 2, 5, 13, 1, 8]


def families(net, seed):
    """``name -> (circuit, its per-replica random matrices)`` for a network and a seed argument."""
    di = DynamicInversion(net, X, Y, alpha=0.3, feedback="random", feedback_seed=seed)
    sdi = SingleLoopDynamicInversion(net, X, Y, alpha=0.3, feedback="random",
                                     feedback_seed=seed)
    dfc = DeepFeedbackControl(net, X, Y, alpha=0.3, feedback="random", feedback_seed=seed)
    ddtp = TargetPropagation(net, X, Y, rule="ddtp_linear", feedback="random",
                             feedback_seed=seed)
    dfa = TargetPropagation(net, X, Y, rule="dfa", feedback_seed=seed)
    fa = ClosedForm("feedback_alignment", seed=seed)
    Plastic(fa, net, X, Y, eta=0.1)
    return {"di": (di, di.feedback), "sdi": (sdi, [sdi.feedback]), "dfc": (dfc, dfc.feedback),
            "ddtp_linear": (ddtp, ddtp.feedback), "dfa": (dfa, dfa.feedback),
            "feedback_alignment": (None, fa.feedback)}


def test_a_replica_draws_the_same_matrices_alone_and_inside_s8():
    together = families(replica_network(WIDTHS, SEEDS), SEEDS)
    for s, seed in enumerate(SEEDS):
        alone = families(ForwardNetwork(WIDTHS, seed=seed), seed)
        for name, (_, mats) in together.items():
            for B, B1 in zip(mats, alone[name][1]):
                assert B1.shape[0] == 1 and torch.equal(B[s], B1[0]), (name, s)
    # the matrices are the documented draws (shapes n_ℓ-1 × n_ℓ for DI, n_ℓ × n_L for DFC)
    di_shapes = [(WIDTHS[l - 1], WIDTHS[l]) for l in range(2, len(WIDTHS))]
    dfc_shapes = [(n, WIDTHS[-1]) for n in WIDTHS[1:]]
    for s, seed in enumerate(SEEDS):
        assert all(torch.equal(B[s], want) for B, want in
                   zip(together["di"][1], gaussian(seed, di_shapes)))
        assert all(torch.equal(B[s], want) for B, want in
                   zip(together["dfc"][1], gaussian(seed, dfc_shapes)))
    # different seeds give different feedback (the draws are not all the same matrix)
    assert not torch.equal(together["di"][1][0][0], together["di"][1][0][1])


def test_an_int_seed_gives_every_replica_the_s1_matrices_and_none_numbers_them():
    net = replica_network(WIDTHS, SEEDS)
    shared = families(net, 4)
    alone = families(ForwardNetwork(WIDTHS, seed=0), 4)
    for name, (_, mats) in shared.items():
        for B, B1 in zip(mats, alone[name][1]):
            assert all(torch.equal(B[s], B1[0]) for s in range(len(SEEDS))), name
    # None (the default): replica s as an S = 1 circuit with seed s
    default = families(net, None)
    for s in range(len(SEEDS)):
        one = families(ForwardNetwork(WIDTHS, seed=0), s)
        for name, (_, mats) in default.items():
            assert all(torch.equal(D[s], D1[0]) for D, D1 in zip(mats, one[name][1])), (name, s)
    assert not torch.equal(default["dfc"][1][0][0], default["dfc"][1][0][1])


def test_inverse_and_local_decoders_follow_the_rule():
    square = [4, 4, 4, 4]
    net8 = replica_network(square, SEEDS, init="orthogonal", scale=0.5)
    together = inverse_decoders(net8, perturbation=0.3, seed=SEEDS)
    shared = inverse_decoders(net8, perturbation=0.3, seed=6)
    for s, seed in enumerate(SEEDS):
        one = ForwardNetwork(square, seed=seed, init="orthogonal", scale=0.5)
        alone = inverse_decoders(one, perturbation=0.3, seed=seed)
        alone6 = inverse_decoders(one, perturbation=0.3, seed=6)
        for g8, g1, g6, g16 in zip(together, alone, shared, alone6):
            assert torch.equal(g8.M[s], g1.M[0]) and torch.equal(g6.M[s], g16.M[0])
        # the perturbation is the seeded E of the documented draw
        g = torch.Generator().manual_seed(seed)
        E = torch.randn(4, 4, generator=g, dtype=F64) / 2.0
        assert torch.equal(together[0].M[s], torch.linalg.inv(net8.weights[1][s]) + 0.3 * E)
    sch = LayerSchedule.parallel(3)
    y01 = torch.rand(1, WIDTHS[-1], generator=torch.Generator().manual_seed(0), dtype=F64)
    ld8 = LocalDecoders(replica_network(WIDTHS, SEEDS), X, y01, schedule=sch,
                        output_loss="mse", decoder_seed=torch.tensor(SEEDS))
    for s, seed in enumerate(SEEDS):
        ld1 = LocalDecoders(ForwardNetwork(WIDTHS, seed=seed), X, y01, schedule=sch,
                            output_loss="mse", decoder_seed=seed)
        assert all(torch.equal(D8[s], D1[0]) for D8, D1 in zip(ld8.decoders0, ld1.decoders0))


# -- sweeps ---------------------------------------------------------------------------------------

# Four feedback seeds, the fastest axis: any chunk of ≤ 3 consecutive replicas holds distinct
# seeds, so no chunk's replicas share a matrix (a shared one would take the one-GEMM path of
# circuits.network.compact, which rounds differently from the per-replica batched matmul).
GRID = Grid({"alpha": [0.05, 0.4, 2.0], "feedback_seed": [3, 0, 7, 1]})
DI_SOLVER = dict(t0=0.0, t1=150.0, dt=0.1, method="euler", atol=1e-9, rtol=1e-7)
DFC_SOLVER = dict(t0=0.0, t1=20.0, dt=0.01, method="euler", atol=1e-9, rtol=1e-7)


def build_di(points):
    """One network and one feedback per replica, both from the replica's feedback_seed."""
    net = replica_network(WIDTHS, points["feedback_seed"])
    return DynamicInversion(net, X, Y, feedback="random", **points)


def build_dfc(points):
    net = replica_network(WIDTHS, points["feedback_seed"])
    return DeepFeedbackControl(net, X, Y, feedback="random", k_p=0.5, **points)


@pytest.fixture(scope="module")
def di_sweeps():
    return {chunk: sweep(build_di, GRID, DI_SOLVER, predict="initial", chunk=chunk)
            for chunk in (None, 1, 2, 3)}


def test_sweep_with_a_feedback_seed_axis_is_bit_for_bit_chunk_invariant(di_sweeps):
    whole = di_sweeps[None]
    assert whole.attrs["chunks"] == 1
    assert [di_sweeps[c].attrs["chunks"] for c in (1, 2, 3)] == [12, 6, 4]
    # random feedback makes some replicas diverge and others converge: a real mix to compare
    counts = whole.counts()
    assert counts["converged"] >= 3 and counts["diverged"] >= 3, counts
    for chunk in (1, 2, 3):
        result = di_sweeps[chunk]
        assert set(result.arrays) == set(whole.arrays)
        for name in whole.arrays:
            assert result[name].equals(whole[name]), (chunk, name)


def test_sweep_replicas_are_the_circuits_built_from_their_seeds(di_sweeps):
    """Each grid point of the sweep is the S = 1 circuit with that point's alpha and seed."""
    whole = di_sweeps[None]
    for i in (0, 5, 11):
        point = GRID.point(i)
        net = ForwardNetwork(WIDTHS, seed=point["feedback_seed"])
        c = DynamicInversion(net, X, Y, alpha=point["alpha"], feedback="random",
                             feedback_seed=point["feedback_seed"])
        sol = solve(c, c.initial_state(), 0.0, DI_SOLVER["t1"], dt=0.1, method="euler",
                    atol=1e-9, rtol=1e-7, progress=False)
        flat = {k: GRID.flatten(whole[k].data) for k in ("status", "t_stop")}
        assert int(sol.status[0]) == int(flat["status"][i])
        assert float(sol.t_stop[0]) == float(flat["t_stop"][i])


def test_dfc_sweep_with_a_feedback_seed_axis_is_chunk_invariant():
    grid = Grid({"alpha": [0.5, 3.0], "feedback_seed": [2, 4, 6]})
    runs = {c: sweep(build_dfc, grid, DFC_SOLVER, chunk=c) for c in (None, 1, 2, 3)}
    for chunk in (1, 2, 3):
        for name in runs[None].arrays:
            assert runs[chunk][name].equals(runs[None][name]), (chunk, name)


def test_a_replica_solved_alone_equals_it_inside_s8():
    seeds = [5, 0, 9, 2, 6, 13, 1, 8]
    alphas = torch.linspace(0.05, 1.0, 8, dtype=F64)
    together = DynamicInversion(replica_network(WIDTHS, seeds), X, Y, alpha=alphas,
                                feedback="random", feedback_seed=seeds)
    kw = dict(dt=0.1, method="euler", atol=1e-9, rtol=1e-7, progress=False)
    sol8 = solve(together, together.initial_state(), 0.0, 150.0, **kw)
    assert 0 < int(sol8.diverged.sum()) < 8          # per-replica feedback: a real mix
    for s in (0, 3, 7):
        alone = DynamicInversion(ForwardNetwork(WIDTHS, seed=seeds[s]), X, Y,
                                 alpha=float(alphas[s]), feedback="random",
                                 feedback_seed=seeds[s])
        sol1 = solve(alone, alone.initial_state(), 0.0, 150.0, **kw)
        assert int(sol1.status[0]) == int(sol8.status[s])
        assert float(sol1.t_stop[0]) == float(sol8.t_stop[s])
        for k in sol1.y1:
            assert torch.equal(sol1.y1[k][0], sol8.y1[k][s]), (s, k)


def test_an_int_feedback_seed_sweep_equals_the_one_shared_draw_in_any_chunking():
    """The common sweep: one network, one feedback (an int seed) for every gain. S > 1 chunks all
    share the matrices, so they agree bit for bit (S = 1 takes the batched path, see
    :func:`solvers.sweep.sweep`)."""
    net = ForwardNetwork(WIDTHS, seed=0)
    grid = Grid({"alpha": [0.05, 0.2, 0.8, 3.0], "k_i": [0.5, 2.0]})

    def build(points):
        return DynamicInversion(net, X, Y, feedback="random", feedback_seed=1, **points)

    def build_given(points):
        B = random_feedback([(6, 5), (5, 3)], 1, 1, F64, "cpu")
        return DynamicInversion(net, X, Y, feedback=B, **points)

    whole = sweep(build, grid, DI_SOLVER, predict="initial")
    for chunk in (2, 3, 4):
        assert sweep(build, grid, DI_SOLVER, predict="initial", chunk=chunk).equals(whole)
    # the same as drawing it once and passing it (what demos.sweep did before)
    assert sweep(build_given, grid, DI_SOLVER, predict="initial").equals(whole)


# -- demos.sweep --------------------------------------------------------------------------------

def test_demo_sweep_takes_a_feedback_seed_axis(tmp_path):
    from demos import sweep as demo

    config = {
        "sweeps": ["dynamic_inversion"],
        "network": {"widths": WIDTHS, "seed": 0},
        "dynamic_inversion_grid": {"alpha": [0.1, 1.0], "feedback_seed": [0, 1, 2]},
        "dynamic_inversion_solver": {"method": "euler", "t0": 0.0, "t1": 100.0, "dt": 0.1},
        "dynamic_inversion_sweep": {"predict": "initial", "chunk": 2},
    }
    cfg = demo.load(config)
    grid = demo.make_grid("dynamic_inversion", cfg)
    assert grid.dims == ("alpha", "feedback_seed") and grid.size == 6
    build = demo.builder("dynamic_inversion", cfg)
    # one feedback per replica, drawn from its own seed
    c = build(grid.points(1, 4))
    for s, i in enumerate(range(1, 4)):
        seed = grid.point(i)["feedback_seed"]
        one = DynamicInversion(ForwardNetwork(WIDTHS, seed=0), *demo.example(cfg, WIDTHS),
                               feedback="random", feedback_seed=seed)
        assert all(torch.equal(B[s], B1[0]) for B, B1 in zip(c.feedback, one.feedback))
    summary = demo.run(config, tmp_path)
    entry = summary["sweeps"]["dynamic_inversion"]
    assert entry["grid_points"] == 6 and entry["chunks"] == 3
    assert entry["grid"]["feedback_seed"] == {"min": 0.0, "max": 2.0, "n": 3}
    # without random feedback a seed axis means nothing: refused, naming the key
    bad = demo.load({**config, "dynamic_inversion": {"feedback": "transpose"}})
    with pytest.raises(ValueError, match="dynamic_inversion_grid.*feedback_seed.*feedback: "
                                         "random"):
        demo.make_grid("dynamic_inversion", bad)
