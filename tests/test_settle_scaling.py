"""DI's settle time against depth and width (demos.settle_scaling, a small grid): every replica
settles, the slowest time constant is ≈ 1/α for square random layers (σ_min → 0), the single-mode
prediction from the slowest eigenvalue is within 25 %, and deeper cascades take longer."""
from __future__ import annotations

import json

import pytest

from demos import settle_scaling


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    cfg = dict(depths=[2, 6], widths=[8], alphas=[0.1], seeds=8)
    return out, settle_scaling.run(cfg, out)


def test_settle_times_against_the_slowest_eigenvalue(scaled):
    out, summary = scaled
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "settle_scaling.png").stat().st_size > 10_000
    assert summary["unconverged"] == 0
    rows = {r["depth"]: r for r in summary["rows"]}
    for r in rows.values():
        assert 9.0 < r["slowest_time_constant"] <= 10.0              # 1/(α + σ_min²) ≈ 1/α
        assert 0.75 < r["ratio"] < 1.25, r
    # measured (this grid): 149 at L = 2, 185 at L = 6: the loops of the cascade settle in turn
    assert rows[6]["measured"] > 1.15 * rows[2]["measured"]


@pytest.mark.parametrize("bad, match", [({"depths": [1]}, "depths"), ({"seeds": 0}, "seeds"),
                                        ({"alphas": [-1.0]}, "alphas"),
                                        ({"widths": "8"}, "widths"), ({"nope": 1}, "unknown")])
def test_bad_config_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        settle_scaling.load(bad)
