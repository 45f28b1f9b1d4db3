"""How dynamic inversion's settle time grows with depth and width (the reviewers' question of
Podlaski & Machens 2020), measured and predicted from the slowest eigenvalue.

    python -m demos.settle_scaling --out DIR [--config configs/settle_scaling.yaml]

For every depth L (weight layers) and width n: ``seeds`` square tanh networks ``[n] * (L + 1)``
(the replicas of one solve), one example, layer-wise DI (``B = −Wᵀ``, k_i = 1, k_p = 0) at each
leak α, integrated from rest by exponential Euler at ``dt_safety ×`` its stability bound until
``‖dy/dt‖ ≤ atol + rtol ‖y‖`` (checked every step). The prediction uses the slowest rate
``−λ_max`` (:meth:`DynamicInversion.max_loop_eigenvalue`, the spectral abscissa of the cascade's
block-triangular Jacobian): a single mode decaying from ``‖f(y0)‖`` reaches the tolerance at

    t_pred = ln(‖f(y0)‖ / (atol + rtol ‖y*‖)) / (−λ_max).

Writes ``DIR/summary.json`` (per α, depth and width: the median measured and predicted settle
times over the seeds, their ratio, ``−1/λ_max``) and ``DIR/settle_scaling.png`` (settle time
against depth, one line per width; markers measured, dashed predicted).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from circuits import DynamicInversion, ForwardNetwork  # noqa: E402
from solvers import solve  # noqa: E402
from workbench.plots import save_figure  # noqa: E402

from .config import (check_int, check_number, check_numbers, dataclass_config,  # noqa: E402
                     intra_op_threads, jsonable, read_yaml, run_cli)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "settle_scaling.yaml"
F64 = torch.float64


@dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (2, 3, 4, 5, 6)
    widths: tuple[int, ...] = (8, 16, 32, 64)
    alphas: tuple[float, ...] = (0.1, 0.01)
    seeds: int = 8
    atol: float = 1e-10
    rtol: float = 1e-8
    dt_safety: float = 0.8
    t1: float = 1e6

    def __post_init__(self):
        for name in ("depths", "widths"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or not values or any(
                    isinstance(v, bool) or not isinstance(v, int) for v in values):
                raise ValueError(f"{name}: received {values!r}, expected a list of integers")
        for d in self.depths:
            check_int("depths", d, 2)
        for w in self.widths:
            check_int("widths", w, 1)
        check_numbers("alphas", self.alphas)
        check_int("seeds", self.seeds, 1)
        for name in ("atol", "rtol", "dt_safety", "t1"):
            check_number(name, getattr(self, name), positive=True)


def load(config: Config | Mapping[str, Any] | str | Path | None) -> Config:
    if isinstance(config, (str, Path)):
        config = read_yaml(config)
    return dataclass_config(Config, config, ("depths", "widths", "alphas"))


def _norm(y: Mapping[str, torch.Tensor], names) -> torch.Tensor:
    return torch.sqrt(sum((y[k] ** 2).flatten(1).sum(-1) for k in names))


def measure(cfg: Config, depth: int, width: int, alpha: float) -> dict[str, Any]:
    """Settle ``cfg.seeds`` networks of one shape from rest: measured and predicted times."""
    net = ForwardNetwork([width] * (depth + 1), "tanh", seed=list(range(cfg.seeds)), dtype=F64)
    g = torch.Generator().manual_seed(depth * 1000 + width)
    x, y = (torch.randn(1, width, generator=g, dtype=F64) for _ in range(2))
    di = DynamicInversion(net, x, y, alpha=alpha)
    y0 = di.initial_state()
    rate = -di.max_loop_eigenvalue()
    f0 = di.vector_field(0.0, y0)
    predicted = torch.log(_norm(f0, f0) / (cfg.atol + cfg.rtol * _norm(di.steady_state(), f0)))
    predicted = predicted / rate
    dt = float((cfg.dt_safety * di.exp_euler_dt_bound()).min())
    sol = solve(di, y0, 0.0, cfg.t1, dt=dt, method="exp_euler", atol=cfg.atol, rtol=cfg.rtol,
                check_every=1, progress=False, max_steps=10 ** 8)
    measured = torch.where(sol.converged, sol.t_stop, torch.full_like(sol.t_stop, math.nan))
    return {"depth": depth, "width": width, "alpha": alpha,
            "measured": measured.median().item(), "predicted": predicted.median().item(),
            "ratio": (measured / predicted).median().item(),
            "slowest_time_constant": (1 / rate).median().item(),
            "unconverged": int((~sol.converged).sum()), "dt": dt,
            "steps": int(sol.stats["steps"])}


def figure(out: Path, rows: list[dict[str, Any]], cfg: Config) -> Path:
    fig, axes = plt.subplots(1, len(cfg.alphas), figsize=(5.5 * len(cfg.alphas), 4.2),
                             squeeze=False)
    for ax, alpha in zip(axes[0], cfg.alphas):
        for i, width in enumerate(cfg.widths):
            pts = [r for r in rows if r["alpha"] == alpha and r["width"] == width]
            d = [r["depth"] for r in pts]
            colour = plt.cm.viridis(i / max(1, len(cfg.widths) - 1))
            ax.plot(d, [r["measured"] for r in pts], "o-", color=colour, label=f"n = {width}")
            ax.plot(d, [r["predicted"] for r in pts], "--", color=colour, lw=1)
        ax.set(title=f"α = {alpha:g} (dashed: from the slowest eigenvalue)",
               xlabel="depth L (weight layers)", ylabel="settle time (median over seeds)",
               yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out / "settle_scaling.png")


def run(config: Config | Mapping[str, Any] | str | Path | None, out: str | Path
        ) -> dict[str, Any]:
    cfg = load(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with intra_op_threads(1):
        rows = [measure(cfg, d, w, a) for a in cfg.alphas for w in cfg.widths
                for d in cfg.depths]
    path = figure(out, rows, cfg)
    ratios = [r["ratio"] for r in rows if math.isfinite(r["ratio"])]
    summary = jsonable({
        "rows": rows, "figure": path.name, "config": dataclasses.asdict(cfg),
        "ratio_range": [min(ratios), max(ratios)] if ratios else None,
        "unconverged": sum(r["unconverged"] for r in rows),
        "seconds": time.perf_counter() - start})
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    return summary


def report(summary: Mapping[str, Any]) -> str:
    lines = ["  α       L   n    measured  predicted  ratio  −1/λ_max"]
    for r in summary["rows"]:
        lines.append(f"  {r['alpha']:<7g} {r['depth']:<3} {r['width']:<4} "
                     f"{r['measured'] or math.nan:9.4g} {r['predicted']:10.4g} "
                     f"{r['ratio'] or math.nan:6.3g} {r['slowest_time_constant']:9.4g}")
    lines.append(f"measured / predicted in {summary['ratio_range']}; unconverged "
                 f"{summary['unconverged']}; {summary['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m demos.settle_scaling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    return run_cli(parser, argv, lambda args: load(args.config), run, report)


if __name__ == "__main__":
    sys.exit(0 if main()["unconverged"] == 0 else 1)
