"""Per-replica random draws of the feedback-learning rules and of predictive coding's perturbed
start (issue 13, item 4): replica s's draw comes from its own seed only (the seed rule of
:mod:`circuits.feedback`: an int shared by every replica, or S ints, one per replica), so replica
s alone (S = 1, seed ``seeds[s]``) equals replica s inside S = 4, bit for bit.

Covers :func:`circuits.feedback_learning.initial_feedback` (decoders and direct), the noise of
:class:`ReconstructionLearning` and :class:`DifferenceReconstruction` (orthogonal and gaussian),
:func:`learn_feedback` end to end, and :meth:`PredictiveCoding.initial_state` with a
perturbation. Everything tiny, in float64 and float32.
"""
from __future__ import annotations

import pytest
import torch

from circuits import ForwardNetwork
from circuits.feedback_learning import (DifferenceReconstruction, ReconstructionLearning,
                                        initial_feedback, learn_feedback)
from circuits.predictive_coding import PredictiveCoding

WIDTHS = [3, 5, 4, 2]
NET_SEEDS = [7, 8, 9, 10]
DRAW_SEEDS = [21, 5, 21, 40]          # a repeated seed: those replicas are identical
DTYPES = [torch.float64, torch.float32]


def nets(dtype):
    """The S = 4 network and its four replicas alone."""
    return (ForwardNetwork(WIDTHS, "tanh", seed=NET_SEEDS, dtype=dtype),
            [ForwardNetwork(WIDTHS, "tanh", seed=s, dtype=dtype) for s in NET_SEEDS])


def data(dtype, B=3):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(B, WIDTHS[0], generator=g, dtype=torch.float64).to(dtype),
            torch.randn(B, WIDTHS[-1], generator=g, dtype=torch.float64).to(dtype))


def same_replica(many, one, s):
    """``many[s]`` equals ``one[0]`` exactly, through dicts, lists and decoders."""
    if isinstance(many, dict):
        assert many.keys() == one.keys()
        for k in many:
            same_replica(many[k], one[k], s)
    elif isinstance(many, (list, tuple)):
        assert len(many) == len(one)
        for a, b in zip(many, one):
            same_replica(a, b, s)
    elif isinstance(many, torch.Tensor):
        assert one.shape[0] == 1 and many.shape[1:] == one.shape[1:]
        assert torch.equal(many[s], one[0]), s
    else:                                   # a MirroredDecoder
        same_replica([many.V, many.c], [one.V, one.c], s)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["decoders", "direct"])
def test_initial_feedback_replica_alone_equals_replica_in_s4(kind, dtype):
    net4, alone = nets(dtype)
    many = initial_feedback(kind, net4, seed=DRAW_SEEDS)
    for s, net1 in enumerate(alone):
        same_replica(many, initial_feedback(kind, net1, seed=DRAW_SEEDS[s]), s)
    # an int: replica s starts from seed 3 + s (each seed of a run its own start), which is
    # what an S = 1 network with that seed draws
    offset = initial_feedback(kind, net4, seed=3)
    for s in range(4):
        same_replica(offset, initial_feedback(kind, alone[0], seed=3 + s), s)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reconstruction_noise_replica_alone_equals_replica_in_s4(dtype):
    net4, alone = nets(dtype)
    x, _ = data(dtype)
    dec4 = initial_feedback("decoders", net4, seed=DRAW_SEEDS)
    many = ReconstructionLearning(net4, x, dec4, noise=0.2, seed=DRAW_SEEDS)
    for s, net1 in enumerate(alone):
        one = ReconstructionLearning(net1, x, initial_feedback("decoders", net1,
                                                               seed=DRAW_SEEDS[s]),
                                     noise=0.2, seed=DRAW_SEEDS[s])
        same_replica(many.moments, one.moments, s)
        same_replica(many.theta0, one.theta0, s)
    assert not torch.equal(many.moments["theta_2"][0][0], many.moments["theta_2"][1][0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("noise", ["orthogonal", "gaussian"])
def test_difference_reconstruction_noise_replica_alone_equals_replica_in_s4(noise, dtype):
    net4, alone = nets(dtype)
    x, _ = data(dtype)
    many = DifferenceReconstruction(net4, x, sigma=0.1, noise=noise, samples=5,
                                    seed=DRAW_SEEDS)
    for s, net1 in enumerate(alone):
        one = DifferenceReconstruction(net1, x, sigma=0.1, noise=noise, samples=5,
                                       seed=DRAW_SEEDS[s])
        same_replica(many.moments, one.moments, s)


@pytest.mark.parametrize("kind", ["decoders", "direct"])
def test_learn_feedback_replica_alone_equals_replica_in_s4(kind):
    net4, alone = nets(torch.float64)
    x, _ = data(torch.float64)
    many = learn_feedback(net4, x, initial_feedback(kind, net4, seed=DRAW_SEEDS),
                          duration=0.5, seed=DRAW_SEEDS)
    for s, net1 in enumerate(alone):
        one = learn_feedback(net1, x, initial_feedback(kind, net1, seed=DRAW_SEEDS[s]),
                             duration=0.5, seed=DRAW_SEEDS[s])
        same_replica(many, one, s)


@pytest.mark.parametrize("dtype", DTYPES)
def test_predictive_coding_perturbed_start_replica_alone_equals_replica_in_s4(dtype):
    net4, alone = nets(dtype)
    x, t = data(dtype)
    many = PredictiveCoding(net4, x, t).initial_state(perturbation=0.3, seed=DRAW_SEEDS)
    for s, net1 in enumerate(alone):
        one = PredictiveCoding(net1, x, t).initial_state(perturbation=0.3, seed=DRAW_SEEDS[s])
        same_replica(many, one, s)
    # an int is shared: every replica's noise is the S = 1 draw (the forward pass differs)
    shared = PredictiveCoding(net4, x, t).initial_state(perturbation=0.3, seed=2)
    for s, net1 in enumerate(alone):
        same_replica(shared, PredictiveCoding(net1, x, t).initial_state(perturbation=0.3, seed=2),
                     s)


@pytest.mark.parametrize("bad", [1.5, True, "1", [1, 2], None])
def test_a_bad_draw_seed_is_refused_naming_it(bad):
    net4, _ = nets(torch.float64)
    x, t = data(torch.float64)
    for call in (lambda: initial_feedback("direct", net4, seed=bad),
                 lambda: DifferenceReconstruction(net4, x, seed=bad),
                 lambda: PredictiveCoding(net4, x, t).initial_state(0.1, seed=bad)):
        with pytest.raises(ValueError, match="seed"):
            call()
