"""The continuous-time target-propagation training demo on a tiny config."""
import json

import pytest

from demos import train_tp

TINY = {
    "methods": ["ddtp_linear", "iterated_dtp", "backprop"],
    "tasks": ["regression"],
    "regression": {"n_train": 64, "n_test": 64},
    "training": {"epochs": 2, "batch": 16, "seeds": 2, "eval_every": 2},
}


def test_tiny_run_learns_and_ddtp_targets_lean_towards_gauss_newton(tmp_path):
    summary = train_tp.run(TINY, tmp_path, progress=False)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "regression.png").stat().st_size > 10_000
    methods = saved["tasks"]["regression"]["methods"]
    assert set(methods) == {"ddtp_linear", "iterated_dtp", "backprop"}
    for name in ("ddtp_linear", "backprop"):
        m = methods[name]
        assert m["test_loss"]["mean"] < 0.95 * m["initial_test_loss"]["mean"], name
        assert len(m["test_loss"]["per_seed"]) == 2
    ddtp = methods["ddtp_linear"]
    assert ddtp["diverged"] == 0
    # DRL feedback sits near the damped pseudo-inverse: GN-like targets, not gradient ones
    assert ddtp["angle_to_gauss_newton"]["mean_over_training"] < \
        ddtp["angle_to_backprop"]["mean_over_training"]
    assert 0 <= ddtp["angle_to_gauss_newton"]["first"] < 45
    assert summary["seconds"] > 0


@pytest.mark.parametrize("config,match", [
    ({"methods": ["dtp9"]}, r"config key 'methods': received \['dtp9'\], expected"),
    ({"tasks": ["mnist"]}, r"config key 'tasks': received \['mnist'\], expected"),
    ({"hidden": {"regression": [0]}}, r"config key 'hidden': received"),
    ({"training": {"update": "adam"}}, r"training.update: received 'adam'"),
    ({"training": {"beta": 0}}, r"training.beta: received 0, expected a number > 0"),
    ({"feedback": {"sigma": -1.0}}, r"feedback.sigma: received -1.0"),
    ({"training": {"epoch": 3}}, r"config section 'training': unknown key 'epoch'"),
])
def test_train_tp_rejects_bad_configs(config, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        train_tp.run(config, tmp_path, progress=False)
