"""demos.credit_alignment: a method's update against backprop's on probe minibatches over
training. Backprop itself must come out at cosine 1 and gain η exactly; DFC close to it."""
from __future__ import annotations

import json

import pytest

from demos import credit_alignment
from tests.test_train import FAST, TINY_TASK

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("alignment")
    cfg = {**TINY_TASK, "methods": ["backprop", "dfc"],
           "method": {m: FAST[m] for m in ("backprop", "dfc")},
           "training": {"epochs": 2, "batch": 8, "seeds": 2, "checkpoint_every": 64}}
    return out, credit_alignment.run(cfg, out, methods=("backprop", "dfc"), probes=2)


def test_backprop_is_aligned_with_itself_at_its_learning_rate(measured):
    out, summary = measured
    assert json.loads((out / "summary.json").read_text()) == summary
    bp = summary["methods"]["backprop"]
    assert bp["epoch"] == [0.0, 1.0, 2.0]
    for cos, gain in zip(bp["cosine"], bp["gain"]):          # [L][S] per epoch
        for layer_cos, layer_gain in zip(cos, gain):
            assert layer_cos == pytest.approx([1.0, 1.0], abs=1e-12)
            assert layer_gain == pytest.approx([0.1, 0.1], rel=1e-12)    # η · dt
    assert bp["carried"] == [None, None, None]                # no populations of its own
    # the output layer's GN change is its gradient (J̄_L = I): cosine 1 there too
    assert all(c[-1] == pytest.approx([1.0, 1.0], abs=1e-6) for c in bp["cosine_gauss_newton"])


def test_dfc_is_close_to_backprop_and_starts_each_minibatch_from_the_last(measured):
    dfc = measured[1]["methods"]["dfc"]
    for cos in dfc["cosine"]:
        assert min(min(c) for c in cos) > 0.8
    assert all(c is not None and min(c) > 0 for c in dfc["carried"])
    assert (measured[0] / "alignment.png").stat().st_size > 10_000


def test_bad_arguments_are_named(tmp_path):
    cfg = {**TINY_TASK, "methods": ["backprop"], "method": {"backprop": FAST["backprop"]},
           "training": {"epochs": 1, "batch": 8, "seeds": 2, "checkpoint_every": 64}}
    with pytest.raises(ValueError, match="methods"):
        credit_alignment.run(cfg, tmp_path, methods=("sgd",))
    with pytest.raises(ValueError, match="epochs"):
        credit_alignment.run(cfg, tmp_path, methods=("backprop",), epochs=5)
    with pytest.raises(ValueError, match="probes"):
        credit_alignment.run(cfg, tmp_path, methods=("backprop",), probes=0)
