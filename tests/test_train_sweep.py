"""demos.train_sweep: a sweep of networks trained in one integration (tiny configs)."""
import json
import math

import pytest

from demos import train_sweep

TINY = dict(values=[1e-2, 1.0], widths=[6, 5, 4], n_train=32, n_test=40, batch=4,
            presentations=8, eval_every=4, period=4.0, dt=0.1)


def test_tiny_sweep_writes_the_summary_and_figures(tmp_path):
    s = train_sweep.run(TINY, tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    for key in ("axis", "values", "final_test_loss", "closed_form_final_loss",
                "backprop_final_loss", "initial_test_loss", "diverged", "seconds",
                "slowest_time_constant"):
        assert key in saved
    assert saved["values"] == [1e-2, 1.0] and saved["diverged"] == [False, False]
    assert (tmp_path / "final_loss.png").stat().st_size > 10_000
    assert (tmp_path / "learning_curves.png").is_file()
    # every learner improves on the initial weights in 8 minibatches
    init = s["initial_test_loss"]
    assert all(l < init for l in s["closed_form_final_loss"])
    assert s["backprop_final_loss"] < init
    assert all(math.isfinite(l) and l < init for l in s["final_test_loss"])
    # the linearised circuit slows down as the leak shrinks (α̃ adds to every loop's rate)
    slow = s["slowest_time_constant"]
    assert slow[0] > slow[1] > 0


def test_a_diverging_replica_is_flagged_not_nan(tmp_path):
    s = train_sweep.run({**TINY, "axis": "eta", "values": [0.05, 1e5], "gate": "always"},
                        tmp_path)
    assert s["diverged"] == [False, True]
    assert s["final_test_loss"][1] is None and math.isfinite(s["final_test_loss"][0])
    assert "NaN" not in (tmp_path / "summary.json").read_text()


@pytest.mark.parametrize("override, match", [
    ({"circuit": "hopfield"}, "circuit"), ({"axis": "tau"}, "axis"),
    ({"values": "many"}, "values"), ({"period": -1}, "period"), ({"gate": "open"}, "gate"),
    ({"circuit_args": {"alpha": 0.1}}, "circuit_args"), ({"colour": 1}, "unknown keys")])
def test_bad_config_is_named(override, match):
    with pytest.raises(ValueError, match=match):
        train_sweep.load({**TINY, **override})
