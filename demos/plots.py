"""Figures shared by the demos (matplotlib, Agg backend: no display needed).

The functions here know populations, roles and time series, not circuits: a demo turns a
circuit's recorded trajectory into :class:`Trace` objects and calls :func:`settling_figure`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

ROLE_ORDER = ("forward", "error", "controller", "feedback", "target")
ROLE_LABELS = {"forward": "forward", "error": "error", "controller": "controller",
               "feedback": "feedback", "target": "target"}
REFERENCE_STYLES = {"backprop": ("tab:blue", "-"), "pseudo_backprop": ("tab:orange", "--"),
                    "gauss_newton": ("tab:green", "-."), "gauss_newton_joint": ("tab:purple", ":"),
                    "feedback_alignment": ("tab:red", (0, (1, 1, 5, 1)))}


@dataclass
class Trace:
    """One population over time.

    name:        legend label (e.g. ``delta_1``).
    role:        panel it goes to (``forward``, ``error``, ``controller``, ``feedback``).
    layer:       colour key (populations of one layer share a colour across panels).
    values:      ``[T, units]``.
    closed_form: ``[units]`` steady state drawn as dashed lines, or None.
    """

    name: str
    role: str
    layer: int | None
    values: np.ndarray
    closed_form: np.ndarray | None = None


def layer_colour(layer: int | None, fallback: int = 0) -> str:
    return f"C{(layer if layer is not None else fallback) % 10}"


def settling_figure(path: str | Path, ts: np.ndarray, traces: Sequence[Trace],
                    angles: Mapping[str, np.ndarray] | None = None, *, title: str = "",
                    settle_time: float | None = None, xscale: str = "log",
                    panel_labels: Mapping[str, str] | None = None) -> Path:
    """One panel per role present (in :data:`ROLE_ORDER`), every unit of every population of
    that role over time, closed forms dashed in the population's colour; then a panel of
    alignment angles (degrees) if ``angles`` is given. Returns the path of the saved PNG."""
    path = Path(path)
    ts = np.asarray(ts, dtype=float)
    keep = ts > 0 if xscale == "log" else np.ones_like(ts, dtype=bool)
    labels = {**ROLE_LABELS, **(panel_labels or {})}
    roles = [r for r in ROLE_ORDER if any(t.role == r for t in traces)]
    roles += sorted({t.role for t in traces} - set(roles))
    n_panels = len(roles) + (1 if angles else 0)
    fig, axes = plt.subplots(n_panels, 1, sharex=True, figsize=(9.5, 1.2 + 2.3 * n_panels),
                             squeeze=False, layout="constrained")
    axes = axes[:, 0]
    for ax, role in zip(axes, roles):
        handles = []
        for i, trace in enumerate(t for t in traces if t.role == role):
            colour = layer_colour(trace.layer, i)
            values = np.asarray(trace.values, dtype=float).reshape(len(ts), -1)
            ax.plot(ts[keep], values[keep], color=colour, lw=1.0, alpha=0.85)
            if trace.closed_form is not None:
                for level in np.asarray(trace.closed_form, dtype=float).reshape(-1):
                    ax.axhline(level, color=colour, ls=(0, (4, 3)), lw=0.9, alpha=0.7)
            handles.append(Line2D([], [], color=colour, lw=1.5,
                                  label=f"{trace.name} ({values.shape[1]})"))
        if any(t.closed_form is not None for t in traces if t.role == role):
            handles.append(Line2D([], [], color="0.3", ls=(0, (4, 3)), lw=1.0,
                                  label="closed form"))
        if settle_time is not None and role == roles[0]:
            handles.append(Line2D([], [], color="0.5", ls=":", lw=1.0,
                                  label=f"settled, t = {settle_time:g}"))
        ax.set_ylabel(labels.get(role, role))
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3), useMathText=True)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize="small", frameon=False, title_fontsize="small")
        ax.grid(alpha=0.3)
    if angles:
        ax = axes[-1]
        top = 90.0
        for name, values in angles.items():
            colour, ls = REFERENCE_STYLES.get(name, (None, "-"))
            values = np.asarray(values, dtype=float).reshape(len(ts))
            ax.plot(ts[keep], values[keep], color=colour, ls=ls, lw=1.6,
                    label=f"{name.replace('_', ' ')}: {values[-1]:.2f}°")
            finite = values[keep][np.isfinite(values[keep])]
            if finite.size:
                top = max(top, float(finite.max()))
        ax.set_ylim(0, min(180.0, top * 1.05))
        ax.set_ylabel("angle of ΔW\nto reference (°)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                  frameon=False, title="final angle", title_fontsize="small")
        ax.grid(alpha=0.3)
    for ax in axes:
        ax.set_xscale(xscale)
        if settle_time is not None:
            ax.axvline(settle_time, color="0.5", ls=":", lw=1.0)
    if keep.any():
        axes[-1].set_xlim(ts[keep][0], ts[keep][-1])
    axes[-1].set_xlabel("time t (units of τ)" + (", log scale" if xscale == "log" else ""))
    if title:
        fig.suptitle(title, fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["ROLE_ORDER", "Trace", "layer_colour", "settling_figure"]
