"""Figures shared by the demos and a user's own scripts (matplotlib, Agg backend: no display
needed).

The functions here know populations, roles and time series, not circuits: a demo turns a
circuit's recorded trajectory into :class:`Trace` objects and calls :func:`settling_figure`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

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
    return save_figure(fig, path, title)


def save_figure(fig, path: str | Path, title: str | None = None, dpi: int = 110) -> Path:
    """Give ``fig`` its title, write it to ``path`` (folders created) and close it."""
    path = Path(path)
    if title:
        fig.suptitle(title, fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


__all__ = ["ROLE_ORDER", "Trace", "layer_colour", "settling_figure", "save_figure"]


def accuracy_bars(path: str | Path, accuracy: Mapping[str, Mapping[str, Sequence[float] | float]],
                  *, colours: Mapping[str, str] | None = None, title: str = "",
                  ylabel: str = "test accuracy (mean ± std over seeds; dots: seeds)",
                  chance: float | None = 0.5, ylim: tuple[float, float] = (0.4, 1.0)) -> Path:
    """One bar per method (``accuracy[name] = {"mean", "std", "per_seed"}``): mean ± std,
    every seed as a dot, the mean written under the bar, chance level dotted."""
    path = Path(path)
    names = list(accuracy)
    fig, ax = plt.subplots(figsize=(1.5 * len(names), 4.0), layout="constrained")
    for i, name in enumerate(names):
        a = accuracy[name]
        ax.bar(i, a["mean"], yerr=a["std"], color=(colours or {}).get(name, "0.5"), alpha=0.8,
               capsize=5)
        ax.plot([i] * len(a["per_seed"]), a["per_seed"], "o", color="k", ms=3.5, alpha=0.7)
        ax.text(i, ylim[0] + 0.02, f"{a['mean']:.3f}\n±{a['std']:.3f}", ha="center",
                fontsize="small")
    if chance is not None:
        ax.axhline(chance, color="0.5", ls=":", lw=1.0)
        ax.text(len(names) - 0.45, chance + 0.005, "chance", ha="right", va="bottom",
                color="0.4", fontsize="small")
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names])
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, axis="y")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class Panel:
    """One panel of :func:`band_figure`: ``curves[label]`` is ``[T, S]`` over ``x [T]`` (S
    seeds or replicas), drawn as the mean over S with a min–max band; ``vlines`` are dotted."""

    title: str
    x: np.ndarray
    curves: Mapping[str, np.ndarray]
    xlabel: str = ""
    colours: Mapping[str, str] | None = None
    vlines: Sequence[float] = ()


def band_figure(path: str | Path, panels: Sequence[Panel], *, ylabel: str = "",
                ylim: tuple[float, float] | None = None, hline: float | None = None,
                title: str = "") -> Path:
    """Panels side by side sharing y; the legend goes in the first panel with several curves."""
    path = Path(path)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.8), sharey=True,
                             squeeze=False, layout="constrained")
    axes = axes[0]
    legend = next((i for i, p in enumerate(panels) if len(p.curves) > 1), None)
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        x = np.asarray(panel.x, dtype=float)
        for j, (label, curve) in enumerate(panel.curves.items()):
            curve = np.asarray(curve, dtype=float).reshape(len(x), -1)
            colour = (panel.colours or {}).get(label, f"C{j % 10}")
            ax.plot(x, curve.mean(1), color=colour, lw=1.5, label=label)
            ax.fill_between(x, curve.min(1), curve.max(1), color=colour, alpha=0.15)
        for v in panel.vlines:
            ax.axvline(v, color="0.6", ls=":", lw=1.0)
        if hline is not None:
            ax.axhline(hline, color="0.7", ls=":", lw=0.8)
        ax.set_xlabel(panel.xlabel)
        ax.set_title(panel.title, fontsize="medium")
        ax.grid(alpha=0.3)
        if i == legend:
            ax.legend(fontsize="small", loc="lower right")
    if ylim is not None:
        axes[0].set_ylim(*ylim)
    axes[0].set_ylabel(ylabel)
    return save_figure(fig, path, title)


def region_grid_figure(path: str | Path, maps: Mapping[str, Sequence[np.ndarray | None]], *,
                       extent: tuple[float, float, float, float] = (-1, 1, -1, 1),
                       points: np.ndarray | None = None, labels: np.ndarray | None = None,
                       columns: Sequence[str] = (), missing: str = "", title: str = "",
                       colorbar: str = "") -> Path:
    """Rows of 2-D maps in [0, 1] (``maps[row][column]`` is ``[n, n]`` over ``extent``, or None:
    a panel saying ``missing``), each with its ½ contour in white and ``points [N, 2]``
    coloured by ``labels [N]``."""
    path = Path(path)
    rows = list(maps)
    n_cols = max(len(v) for v in maps.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.6 * n_cols, 2.5 * len(rows)),
                             squeeze=False, layout="constrained")
    image = None
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            z = maps[row][j] if j < len(maps[row]) else None
            if z is None:
                ax.text(0.5, 0.5, missing, ha="center", va="center", transform=ax.transAxes,
                        color="0.4")
            else:
                z = np.asarray(z, dtype=float)
                image = ax.imshow(z, origin="lower", extent=extent, cmap="cividis", vmin=0,
                                  vmax=1, aspect="equal")
                ax.contour(np.linspace(extent[0], extent[1], z.shape[1]),
                           np.linspace(extent[2], extent[3], z.shape[0]), z, levels=[0.5],
                           colors="w", linewidths=1.0)
                if points is not None:
                    ax.scatter(points[:, 0], points[:, 1], c=labels, s=3, cmap="plasma",
                               alpha=0.6)
            if i == 0 and j < len(columns):
                ax.set_title(columns[j], fontsize="small")
            if j == 0:
                ax.set_ylabel(row.replace("_", "\n"), fontsize="small")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label=colorbar)
    return save_figure(fig, path, title, dpi=100)


__all__ += ["Panel", "accuracy_bars", "band_figure", "region_grid_figure"]


def learning_curves_figure(path: str | Path, presentations: Sequence[float],
                           curves: Mapping[str, tuple[Sequence[float], Mapping]], *,
                           divergence: Sequence[float | None] | None = None,
                           divergence_label: str = "", per_epoch: int | None = None,
                           chance: float | None = None, title: str = "") -> Path:
    """Test accuracy (%) of several learners against presentations (``curves[label] =
    (accuracy in [0, 1] per presentation, plot keyword arguments)``), chance dotted, epochs on
    top (``per_epoch`` presentations each); below, ``divergence`` on a log axis (None and
    non-positive values left out)."""
    p = np.asarray(presentations, dtype=float)
    fig, (ax, bx) = plt.subplots(2, 1, sharex=True, figsize=(8, 6.5), layout="constrained",
                                 height_ratios=(2, 1))
    for label, (accuracy, style) in curves.items():
        ax.plot(p, 100 * np.asarray(accuracy, dtype=float), label=label, **style)
    if chance is not None:
        ax.axhline(100 * chance, color="0.5", ls=":", lw=1, label="chance")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right", frameon=False)
    ax.grid(alpha=0.3)
    if per_epoch:
        top = ax.secondary_xaxis("top", functions=(lambda v: v / per_epoch,
                                                   lambda v: v * per_epoch))
        top.set_xlabel("epochs")
    div = np.asarray([np.nan if v is None else v for v in (divergence or [])], dtype=float)
    ok = np.isfinite(div) & (div > 0)
    if ok.any():
        bx.semilogy(p[ok], div[ok], color="tab:purple", marker=".")
    bx.set_ylabel(divergence_label)
    bx.set_xlabel("presentations (minibatches)")
    bx.grid(alpha=0.3)
    return save_figure(fig, path, title)


PHASE_COLOURS = {"predict": "#dbe9f6", "learn": "#fde2c8"}


def _open_gates_raster(ax, trace: Mapping, layers: int) -> None:
    """Fraction of open gates per layer (rows) over the phase's time (columns)."""
    t = np.asarray(trace["t"], dtype=float)
    edges = np.append(t, t[-1] + trace["dt"])
    frac = np.asarray(trace["open_fraction"], dtype=float).reshape(len(t), layers)
    ax.pcolormesh(edges, np.arange(layers + 1) + 0.5, frac.T, vmin=0, vmax=1, cmap="Greys",
                  shading="flat")
    ax.set_yticks(range(1, layers + 1))


def arrival_gate_figure(path: str | Path, traces: Sequence[Mapping[str, Mapping]],
                        settles: Sequence[Mapping], lessons: Sequence[Mapping], layers: int,
                        thresholds: tuple[float, float], title: str = "") -> Path:
    """An arrival gate over a run of presentations, each a ``predict`` settle then a ``learn``
    lesson (records of :mod:`circuits.gates`). Top: the traced presentations (``traces[i][phase]``
    = ``{t, dt, open_fraction, max_error}``), each phase shaded: the largest ``|ε_ℓ|`` per layer
    (log) against the quiet and arrival ``thresholds``, and a raster of the fraction of open
    gates per layer. Bottom, per presentation: on how many steps each unit's gate opened during
    the lesson (min/max over units and examples) with the largest gate during the settle, and
    the settle time with the largest hidden ``|ε|`` it left."""
    cols = [(i, ph) for i in range(len(traces)) for ph in ("predict", "learn")]
    ratios = [3 if ph == "predict" else 1 for _, ph in cols] or [1]
    fig = plt.figure(figsize=(3 + 2.6 * max(len(traces), 1) * 1.4, 8.5), layout="constrained")
    grid = fig.add_gridspec(4, max(len(cols), 1), width_ratios=ratios,
                            height_ratios=(1.3, 0.8, 1, 1))
    for c, (i, ph) in enumerate(cols):
        trace = traces[i][ph]
        t = np.asarray(trace["t"], dtype=float)
        err = np.asarray(trace["max_error"], dtype=float).reshape(len(t), layers)
        ax = fig.add_subplot(grid[0, c])
        for l in range(layers):
            shown = np.where(err[:, l] > 0, err[:, l], np.nan)      # exactly 0: off the log axis
            ax.semilogy(t, shown, color=layer_colour(l + 1), drawstyle="steps-post",
                        label=f"layer {l + 1}")
        ax.axhline(thresholds[0], color="k", ls=":", lw=1, label="quiet below θ")
        ax.axhline(thresholds[1], color="k", ls="--", lw=1, label="arrival above hθ")
        if not np.isfinite(np.where(err > 0, err, np.nan)).any():
            ax.text(0.5, 0.5, "every ε exactly 0", transform=ax.transAxes, ha="center",
                    fontsize="small")
        ax.set_facecolor(PHASE_COLOURS[ph])
        ax.set_title(f"#{i + 1} {ph}" + (f": input alone, dt = {trace['dt']:g}"
                                          if ph == "predict" else ""), fontsize="small")
        if c == 0:
            ax.set_ylabel("max |ε_ℓ|")
        if c == len(cols) - 1:
            ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1),
                      frameon=False)
        rx = fig.add_subplot(grid[1, c], sharex=ax)
        _open_gates_raster(rx, trace, layers)
        if not np.asarray(trace["open_fraction"]).any():
            rx.text(0.5, 0.5, "every gate shut", transform=rx.transAxes, ha="center",
                    fontsize="small")
        rx.set_xlabel("time since phase began (τ_x)" if ph == "predict" else "step")
        if c == 0:
            rx.set_ylabel("open gates\n(layer)")
    k = np.arange(1, len(settles) + 1)
    ax = fig.add_subplot(grid[2, :])
    for l in range(layers):
        lo = np.asarray([e["open_steps_min"][l] for e in lessons], dtype=float)
        hi = np.asarray([e["open_steps_max"][l] for e in lessons], dtype=float)
        ax.fill_between(k, lo - 0.02 * (l + 1), hi + 0.02 * (l + 1), step="mid",
                        color=layer_colour(l + 1), alpha=0.35)
        ax.step(k, [e["open_steps_mean"][l] for e in lessons], where="mid",
                color=layer_colour(l + 1), label=f"layer {l + 1}: steps open per unit "
                                                 "(mean; band min–max)")
    ax.step(k, [e["max_gate"] for e in settles], where="mid", color="k", ls="--",
            label="max gate during prediction")
    ax.set_ylabel("gate openings")
    ax.set_ylim(-0.1, max(1.5, ax.get_ylim()[1]))
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.grid(alpha=0.3)
    bx = fig.add_subplot(grid[3, :], sharex=ax)
    bx.plot(k, [e["settle_time"] for e in settles], color="tab:blue", marker=".",
            label="prediction settle time")
    bx.set_ylabel("settle time (τ_x)")
    cx = bx.twinx()
    left = np.asarray([e["hidden_error_left"] for e in settles], dtype=float)
    cx.semilogy(k, np.where(left > 0, left, np.nan), color="tab:green", marker=".",
                label="max hidden |ε| left")
    cx.axhline(thresholds[0], color="k", ls=":", lw=1)
    cx.set_ylabel("hidden |ε| left", color="tab:green")
    bx.set_xlabel("presentation")
    bx.grid(alpha=0.3)
    fig.legend(*[sum(v, []) for v in zip(bx.get_legend_handles_labels(),
                                         cx.get_legend_handles_labels())],
               fontsize="x-small", loc="lower right", frameon=False)
    return save_figure(fig, path, title)


__all__ += ["learning_curves_figure", "arrival_gate_figure", "PHASE_COLOURS"]


def seed_curves_figure(path: str | Path, curves: Mapping[str, tuple[Sequence[float], np.ndarray]],
                       *, xlabel: str = "epoch", ylabel: str = "test accuracy",
                       title: str = "") -> Path:
    """One curve per learner (``curves[label] = (x [T], values [T, S])``, S seeds): the mean
    over seeds with markers and a ± std band, all on one axis."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    for i, (label, (x, values)) in enumerate(curves.items()):
        x, values = np.asarray(x, dtype=float), np.asarray(values, dtype=float).reshape(len(x), -1)
        mean, std = values.mean(1), values.std(1)
        colour = f"C{i}" if len(curves) <= 10 else plt.cm.tab20(i % 20)   # no repeats up to 20
        ax.plot(x, mean, marker="o", ms=3, color=colour, label=label)
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


__all__ += ["seed_curves_figure"]


def decay_figure(path: str | Path,
                 panels: Mapping[str, Sequence[tuple[str, Sequence[float | None], float]]], *,
                 rows: int = 1, ylim: tuple[float, float] = (1e-17, 1e8),
                 ylabel: str = "error / first error (log)", xlabel: str = "iteration t",
                 title: str = "") -> Path:
    """Geometric convergence, one panel per ``panels[panel title] = [(label, errors, rate),
    ...]`` (row-major in ``rows`` rows): each error curve over its first value (log; None:
    missing) against the iteration, with its bound ``rate^t`` dashed in the same colour."""
    cols = -(-len(panels) // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.75 * rows), squeeze=False,
                             layout="constrained", sharex=True)
    for i, (ax, (name, curves)) in enumerate(zip(axes.flat, panels.items())):
        for k, (label, errors, rate) in enumerate(curves):
            err = np.array([np.nan if v is None else v for v in errors], dtype=float)
            t = np.arange(len(err))
            ax.semilogy(t, err / err[0], color=f"C{k % 10}", lw=1.8, label=label)
            with np.errstate(over="ignore"):
                ax.semilogy(t, rate ** t.astype(float), color=f"C{k % 10}", ls="--", lw=1)
        ax.set_ylim(*ylim)
        ax.axhline(1.0, color="0.6", lw=0.6)
        ax.grid(alpha=0.3)
        ax.set_title(name, fontsize="medium", loc="left")
        ax.legend(fontsize="small", loc="lower left")
        if i % cols == 0:
            ax.set_ylabel(ylabel)
        if i // cols == rows - 1:
            ax.set_xlabel(xlabel)
    return save_figure(fig, path, title)


def log_log_figure(path: str | Path, x: Sequence[float],
                   curves: Mapping[str, tuple[Sequence[float], Mapping]], *,
                   hlines: Sequence[tuple[float, Mapping]] = (), hline_label: str = "",
                   floor: float = 1e-12, xlabel: str = "", ylabel: str = "",
                   title: str = "") -> Path:
    """Curves ``curves[label] = (y, plot keyword arguments)`` against ``x`` on log-log axes
    (y below ``floor`` drawn at it), and horizontal reference lines ``(y, keyword
    arguments)`` named once in the legend by ``hline_label``."""
    fig, ax = plt.subplots(figsize=(8.5, 5.5), layout="constrained")
    for label, (y, style) in curves.items():
        ax.loglog(x, np.maximum(np.asarray(y, dtype=float), floor), label=label, **style)
    for y, style in hlines:
        ax.axhline(y, **{"lw": 0.8, "alpha": 0.6, **style})
    if hline_label:
        ax.plot([], [], color="0.4", lw=0.8, label=hline_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small", loc="lower right")
    return save_figure(fig, path, title)


__all__ += ["decay_figure", "log_log_figure"]


def _gate_fraction_panel(ax, frac: np.ndarray, layers: int, title: str) -> None:
    """Fraction of each layer's error neurons with the gate open per step (dotted: k = L − ℓ)."""
    k = np.arange(frac.shape[0])
    for l in range(1, layers + 1):
        ax.plot(k, frac[:, l - 1], "o-", color=layer_colour(l), lw=1.4, ms=4, alpha=0.85,
                label=f"gate_{l}")
        ax.axvline(layers - l, color=layer_colour(l), ls=":", lw=1.0)
    ax.set_xlabel("step k after the target is shown (dotted: k = L − ℓ)")
    ax.set_xticks(k[::2] if len(k) > 9 else k)
    ax.set_ylabel("fraction of layer's error neurons\nwith gate open")
    ax.set_ylim(-0.03, 1.05)
    ax.set_title(title, fontsize="medium")


def error_wave_figure(path: str | Path, wave: np.ndarray, gate_panels: Mapping[str, np.ndarray],
                      title: str = "") -> Path:
    """Predictive coding's error wave after the teacher clamps the output. (a) ``wave[k, ℓ-1]``
    = ‖ε_ℓ(k)‖/‖δ_ℓ‖ at Z-IL's inference step k (:func:`circuits.predictive_coding.error_wave`),
    a star where the clock lets ``W_ℓ`` learn (k = L − ℓ, C2); then one panel per
    ``gate_panels[name]`` ``[T, L]``: the fraction of each layer's error neurons whose gate is
    open at each step (``circuits.gates.gate_trace``'s ``open_fraction``), panels (b), (c) ..."""
    wave = np.asarray(wave, dtype=float)
    L = wave.shape[1]
    fig, axes = plt.subplots(1, 1 + len(gate_panels), figsize=(4.8 * (1 + len(gate_panels))
                                                               + 0.1, 4.2),
                             layout="constrained", squeeze=False)
    axes = axes[0]
    ax, steps = axes[0], np.arange(wave.shape[0])
    for l in range(1, L + 1):
        colour = layer_colour(l)
        ax.plot(steps, wave[:, l - 1], "o-", color=colour, lw=1.4, ms=4, label=f"ε_{l}")
        ax.plot([L - l], [wave[L - l, l - 1]], marker="*", ms=15, color=colour, mec="k", mew=0.6)
    ax.plot([], [], "*", color="0.6", mec="k", ms=12, label="W_ℓ learns (clock, C2)")
    ax.set_xlabel("inference step k (t/τ_x after the clamp)")
    ax.set_xticks(steps)
    ax.set_ylabel("‖ε_ℓ(k)‖ / ‖δ_ℓ‖ (backprop)")
    ax.set_title("(a) Z-IL: the error wave moves down one layer per step", fontsize="medium")
    for i, (ax, (name, frac)) in enumerate(zip(axes[1:], gate_panels.items()), start=1):
        _gate_fraction_panel(ax, np.asarray(frac, dtype=float), L, f"({chr(97 + i)}) {name}")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", frameon=False)
    return save_figure(fig, path, title)


def gate_settle_figure(path: str | Path, traces: Mapping[str, Mapping[str, np.ndarray]],
                       results: Mapping[str, Mapping[str, float]], threshold: float,
                       title: str = "") -> Path:
    """One panel per gate while a circuit settles without a teacher: the largest gate of each
    layer (``traces[name]["gate"]`` ``[T, L]`` at times ``["t"]``, ``circuits.gates.
    gate_extremes``) and on a log axis the largest |ε| of the circuit (``["error"]`` ``[T]`` or
    ``[T, 1]``; arrays or CPU tensors)
    with the gate's quiet ``threshold`` θ, up to ``results[name]["settle_time"]``; the title
    quotes ``results[name]``'s ``max_gate``, ``first_opening_time`` (< 0: never opened),
    ``signal_at_first_opening`` and ``weight_change_l1``."""
    fig, axes = plt.subplots(len(traces), 1, sharex=True, squeeze=False,
                             figsize=(9.5, 1.2 + 2.3 * len(traces)), layout="constrained")
    for ax, (name, tr) in zip(axes[:, 0], traces.items()):
        r, t = results[name], np.asarray(tr["t"], dtype=float)
        gate = np.asarray(tr["gate"], dtype=float).reshape(len(t), -1)
        keep = (t > 0) & (t <= r["settle_time"])
        for l in range(1, gate.shape[1] + 1):
            ax.plot(t[keep], gate[keep, l - 1], color=layer_colour(l), lw=1.3, label=f"gate_{l}")
        err = ax.twinx()
        err.plot(t[keep], np.asarray(tr["error"], dtype=float).reshape(len(t))[keep],
                 color="0.45", ls="--", lw=1.0, label="max |ε|")
        err.axhline(threshold, color="0.45", ls=":", lw=1.0, label="θ")
        err.set_yscale("log")
        err.set_ylabel("max |ε| (log)", color="0.35")
        opened = ("never opened" if r["first_opening_time"] < 0 else
                  f"first opened at t = {r['first_opening_time']:.3g} on a signal of "
                  f"{r['signal_at_first_opening']:.2g}")
        ax.set_title(f"{name}: max gate {r['max_gate']:.3g}, {opened}; weights moved "
                     f"{r['weight_change_l1']:.2g} (L1)", fontsize="medium", loc="left")
        ax.set_ylabel("largest gate\nof the layer")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()[0] + err.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.09, 1.0),
                  fontsize="small", frameon=False)
    axes[-1, 0].set_xlabel("time t after the new input (units of τ_x, log scale), "
                           "prediction mode: no teacher")
    return save_figure(fig, path, title)


def grouped_log_bars_figure(path: str | Path, values: Mapping[str, float],
                            groups: Sequence[tuple[str, str, str]], *, other: str = "0.5",
                            xlabel: str = "", title: str = "", floor: float = 1e-17) -> Path:
    """Horizontal bars on a log axis, one per ``values[name]`` from the top (values below
    ``floor``, exact zeros, drawn at it), coloured by group: ``groups`` are ``(prefix, colour,
    legend label)``, a bar takes the colour of the first prefix its name starts with (``other``
    if none), and the legend names each label once (groups with an empty label are not
    named)."""
    names = list(values)
    colours = [next((c for prefix, c, _ in groups if n.startswith(prefix)), other)
               for n in names]
    fig, ax = plt.subplots(figsize=(8.5, 0.3 * len(names) + 1.4), layout="constrained")
    ax.barh(names, [max(values[n], floor) for n in names], color=colours, left=floor)
    for label, colour in {label: c for _, c, label in groups if label}.items():
        ax.barh([names[0]], [0], color=colour, label=label)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


__all__ += ["error_wave_figure", "gate_settle_figure", "grouped_log_bars_figure"]


def text_table(rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """``rows`` (the first is the header) as aligned text lines, a dashed rule under the header:
    the first ``left`` columns left-aligned, the others right-aligned, two spaces apart."""
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"rows: received rows of lengths {[len(r) for r in rows]}, expected a "
                         "header and rows with the same number of cells")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < left else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:]


__all__ += ["text_table"]


def cell_edges(values: Sequence[float]) -> tuple[np.ndarray, bool]:
    """Cell edges for ``pcolormesh`` around grid ``values`` (``n + 1`` of them), and whether the
    axis is log-spaced (positive, more than two values, a constant ratio): then the edges are
    the geometric midpoints."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5]), False
    log = bool((v > 0).all() and len(v) > 2
               and np.allclose(np.diff(np.log(v)), np.log(v[1] / v[0]), rtol=1e-6))
    w = np.log(v) if log else v
    mid = (w[1:] + w[:-1]) / 2
    edges = np.concatenate([[2 * w[0] - mid[0]], mid, [2 * w[-1] - mid[-1]]])
    return (np.exp(edges) if log else edges), log


def _log_norm(values: np.ndarray, floor: float = 0.0):
    """A ``LogNorm`` spanning the positive ``values`` (at least a decade), or None if none."""
    from matplotlib.colors import LogNorm
    pos = values[values > 0]
    if not pos.size:
        return None
    low = max(pos.min(), floor)
    return LogNorm(vmin=low, vmax=max(pos.max(), pos.min() * 10))


def sweep_figure(path: str | Path, result, title: str = "") -> Path:
    """Three heatmaps over a 2-axis :class:`solvers.sweep.SweepResult` (rows: its first axis):
    the relative error of the final state to the closed form (diverged replicas grey), the settle
    time and the simulated status, each with the predicted stability boundaries drawn over it
    where they cross the grid — spectral abscissa = 0 (solid black) and Euler's spectral radius
    = 1 (dashed white)."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    from solvers.solve import Status

    dims = result.dims
    if len(dims) != 2:
        raise ValueError(f"sweep_figure: received a grid with dims {dims}, expected 2 axes")
    ydim, xdim = dims
    yv, xv = result.coords[ydim], result.coords[xdim]
    (xe, xlog), (ye, ylog) = cell_edges(xv), cell_edges(yv)
    status = result["status"].data
    error = np.ma.masked_where((status == int(Status.DIVERGED))
                               | ~np.isfinite(result["error"].data), result["error"].data)
    settle = np.ma.masked_invalid(result["settle_time"].data)
    enorm = _log_norm(error.compressed(), floor=1e-16)
    panels = [(error if enorm is None else error.clip(min=enorm.vmin),
               "relative error to the closed form" + ("" if enorm is None else
                                                      "\n(diverged: grey)"), "viridis", enorm)]
    spos = settle.compressed()
    panels.append((settle, "settle time (converged only)", "magma",
                   _log_norm(spos) if spos.size and spos.min() > 0 else None))
    cmap = ListedColormap(["tab:orange", "tab:green", "tab:red"])
    panels.append((status, "simulated status", cmap,
                   BoundaryNorm([-0.5, 0.5, 1.5, 2.5], cmap.N)))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), constrained_layout=True)
    X, Y = np.meshgrid(xv, yv)
    for ax, (data, label, cm, norm) in zip(axes, panels):
        if isinstance(cm, str):
            cm = plt.get_cmap(cm).with_extremes(bad="0.75")
        bar = fig.colorbar(ax.pcolormesh(xe, ye, data, cmap=cm, norm=norm, shading="flat"),
                           ax=ax)
        if label == "simulated status":
            bar.set_ticks([0, 1, 2])
            bar.set_ticklabels(["truncated", "converged", "diverged"])
        if len(xv) > 1 and len(yv) > 1:
            for key, level, style in (("spectral_abscissa", 0.0, dict(colors="k")),
                                      ("spectral_radius", 1.0,
                                       dict(colors="w", linestyles="--"))):
                z = result[key].data if key in result else None
                if z is not None and z.min() < level < z.max():
                    ax.contour(X, Y, z, levels=[level], linewidths=1.6, **style)
        ax.set_xscale("log" if xlog else "linear")
        ax.set_yscale("log" if ylog else "linear")
        ax.set_xlabel(xdim)
        ax.set_ylabel(ydim)
        ax.set_title(label)
    axes[2].legend(handles=[Line2D([], [], color="k", lw=1.6,
                                   label="predicted: spectral abscissa = 0"),
                            Line2D([], [], color="0.4", lw=1.6, ls="--",
                                   label="predicted: Euler spectral radius = 1 (white)")],
                   loc="lower left", fontsize=7, framealpha=0.8)
    return save_figure(fig, path, title)


__all__ += ["cell_edges", "sweep_figure"]


@dataclass
class Curve:
    """One line of :func:`curve_panels_figure`: ``y`` over ``x`` (None: not drawn) with
    ``style`` (plot keyword arguments); with ``lower``, a band from ``lower`` up to ``y`` in the
    line's colour, of opacity ``band_alpha``."""

    x: Sequence[float]
    y: Sequence[float | None]
    style: Mapping | None = None
    lower: Sequence[float] | None = None
    band_alpha: float = 0.15


def curve_panels_figure(path: str | Path, panels: Mapping[str, Mapping[str, Curve]], *,
                        xlabel: str = "", ylabel: str = "", yscale: str = "log",
                        linthresh: float | None = None, floor: float | None = None,
                        hlines: Mapping[str, tuple[float, str]] | None = None,
                        legend_columns: int = 1, panel_size: tuple[float, float] = (6.5, 4.5),
                        title: str = "") -> Path:
    """Panels side by side (``panels[panel title][label] = Curve``) on a ``yscale`` axis
    (``"symlog"`` takes ``linthresh``); values below ``floor`` are drawn at it; ``hlines[panel
    title] = (y, label)`` is a red dotted reference line."""
    fig, axes = plt.subplots(1, len(panels), figsize=(panel_size[0] * len(panels), panel_size[1]),
                             layout="constrained", squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items()):
        for label, c in curves.items():
            y = np.asarray([np.nan if v is None else v for v in c.y], dtype=float)
            y = y if floor is None else np.maximum(y, floor)
            style = dict(c.style or {})
            if c.lower is not None:
                lower = np.asarray(c.lower, dtype=float)
                lower = lower if floor is None else np.maximum(lower, floor)
                ax.fill_between(c.x, lower, y, color=style.get("color"), alpha=c.band_alpha,
                                lw=0)
            ax.plot(c.x, y, label=label, **style)
        if hlines and name in hlines:
            ax.axhline(hlines[name][0], color="r", lw=0.7, ls=":", label=hlines[name][1])
        ax.set_yscale(yscale, **({"linthresh": linthresh} if linthresh is not None else {}))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(name, fontsize="medium")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="x-small", ncol=legend_columns)
    return save_figure(fig, path, title)


__all__ += ["Curve", "curve_panels_figure"]


# -- demos.reproduce_bengio2020 ---------------------------------------------------------------

BENGIO_GN_STYLES = {"exact_inverse_iterated": ("-", "o", "exact inverse, iterated"),
          "approximate_iterated": (":", "x", "approximate decoders, iterated to convergence"),
          "approximate_dtp_one_step": ("--", "s", "approximate decoders, one DTP step")}


def bengio2020_figures(out: Path, conv: Sequence[Mapping], d: Mapping, g: Mapping
                       ) -> list[Path]:
    """:mod:`demos.reproduce_bengio2020`'s ``convergence.png``, ``dtp1.png`` and
    ``gn_alignment.png`` from its summary's ``convergence``, ``dtp1`` and ``gauss_newton``."""
    rules = ("iterated_output", "iterated_input")
    panels = {f"{a}, {r}: ‖" + ("τ_1 − τ_1*  (g∘f − I)" if r == rules[0] else
                                 "u_2 − u_2*  (f∘g − I)") + "‖":
              [(f"p = {c['perturbation']:g}: α = {c['alpha']:.3g}, rate {c['rate']:.3g}",
                c["errors"], c["alpha"]) for c in conv if (c["activation"], c["rule"]) == (a, r)]
              for a in ("linear", "tanh") for r in rules}
    bars = {"the checks' threshold": 1e-10}                 # for scale, drawn in grey
    bars |= {f"online ({rule.split('_')[1]}) − DTP1, layer {l}": max(a, b)
             for rule, r in d["online_vs_dtp1"].items()
             for l, (a, b) in enumerate(zip(r["max_abs_diff_W"], r["max_abs_diff_b"]), start=1)}
    bars |= {f"DTP1-moved h_{l} − τ_{l}": v for l, v in enumerate(d["dtp1_target_residual"], 1)}
    bars |= {f"one Euler step − DTP, τ_{l}": v for l, v in d["euler_step_vs_dtp"].items()}
    curves = {f"{BENGIO_GN_STYLES[name][2]}, layer {l} (slope {g['slopes'][name][l]:.2f})":
              (a, {"ls": BENGIO_GN_STYLES[name][0], "marker": BENGIO_GN_STYLES[name][1],
                   "color": layer_colour(int(l))})
              for name, per in g["angles_to_gauss_newton"].items() for l, a in per.items()}
    return [decay_figure(out / "convergence.png", panels, rows=2,
                         xlabel="iteration t (unit Euler steps)",
                         title="Iterated approximate inverses converge at rate ≤ α (dashed: "
                               "α^t); α > 1 diverges"),
            grouped_log_bars_figure(out / "dtp1.png", bars, [
                ("online", "tab:blue", "online rule − DTP1 (ΔW, Δb)"),
                ("DTP1", "tab:green", "DTP1 moves h_ℓ onto τ_ℓ"),
                ("one Euler", "tab:orange", "one Euler step of iterated_output − DTP")],
                other="0.6", floor=1e-18, title="DTP1 and DTP are what the circuit computes, "
                "to rounding", xlabel="max abs difference (log; exact zeros drawn at 1e-18)"),
            log_log_figure(out / "gn_alignment.png", g["betas"], curves,
                           hlines=[(a, {"color": layer_colour(int(l))})
                                   for l, a in g["gauss_newton_vs_backprop"].items()],
                           hline_label="GN vs backprop direction (per layer)",
                           xlabel="β (output nudge)", ylabel="angle between τ_ℓ − h_ℓ and the "
                           "Gauss-Newton step (degrees)", title="Differential targets are "
                           "Gauss-Newton steps to first order in β")]


# -- demos.reproduce_mertens ------------------------------------------------------------------

MERTENS_COLOURS = {"backprop": "0.35", "sequential_trained": "tab:blue",
                   "sequential_fixed": "tab:cyan",
           "parallel_trained": "tab:red", "parallel_fixed": "tab:orange"}


def mertens_figures(out: Path, cfg, data, bp, local, accuracy, maps) -> list[Path]:
    """:mod:`demos.reproduce_mertens`'s ``accuracy.png`` (per method: mean ± std, seeds as dots),
    ``learning_curves.png`` (each layer's decoded test accuracy over time) and
    ``decision_regions.png`` (``maps``: seed 0's read-outs)."""
    L = cfg.L
    panels = [Panel("backprop", bp["steps"], {"output": bp["curve"]}, "full-batch Rprop step",
                    {"output": MERTENS_COLOURS["backprop"]})]
    labels = {f"layer {l}" + (" (output)" if l == L else " via D"): l for l in range(1, L + 1)}
    for name, res in local.items():
        panels.append(Panel(name.replace("_", ", ") + " decoders", res["t"],
                            {k: res["curves"][f"test_accuracy_{l}"] for k, l in labels.items()},
                            f"time t (η = {cfg.eta:g} per unit time)",
                            {k: layer_colour(l) for k, l in labels.items()},
                            [l * cfg.period for l in range(1, L)]
                            if name.startswith("sequential") else []))
    return [
        accuracy_bars(out / "accuracy.png", accuracy, colours=MERTENS_COLOURS, title="Signed XOR: "
                      "backprop vs layer-local learning through linear decoders"),
        band_figure(out / "learning_curves.png", panels, ylim=(0.35, 1.01), hline=0.5,
                    ylabel="test accuracy of the layer's read-out", title="Learning curves "
                    f"(mean over {len(cfg.seeds)} seeds, band min–max)"),
        region_grid_figure(out / "decision_regions.png", maps,
                           points=data["x_test"][:150].cpu().numpy(),
                           labels=data["y_test"][:150, 0].cpu().numpy(),
                           columns=[f"layer {l}" + (" (output)" if l == L else " read out by D")
                                    for l in range(1, L + 1)],
                           missing="no decoder\n(end-to-end)", colorbar="read-out (threshold "
                           "½: white line)", title=f"Decision regions, seed {cfg.seeds[0]}")]


# -- demos.train_pc ---------------------------------------------------------------------------

def fa_z_il_figures(out: Path, s: Mapping, history: Mapping, per_epoch: int, layers: int) -> None:
    """:mod:`demos.train_pc`'s accuracy.png (test accuracy of both learners, their weight
    divergence) and gates.png, from its summary ``s`` and ``history``."""
    log = s["history"]["eval"]
    learning_curves_figure(
        out / "accuracy.png", log["presentation"], {
            f"backprop (SGD): {100 * s['backprop_test_accuracy']:.1f}%":
                (log["backprop"], {"color": "tab:blue", "lw": 3, "alpha": 0.5}),
            f"Fa-Z-IL (gated PC): {100 * s['fa_z_il_test_accuracy']:.1f}%":
                (log["fa_z_il"], {"color": "tab:red", "ls": "--", "marker": "."})},
        divergence=log["divergence"], divergence_label="‖θ_PC − θ_bp‖₁ /\n‖θ_bp − θ_0‖₁",
        per_epoch=per_epoch, chance=s["task"]["chance_accuracy"],
        title=f"{s['task']['name']}: {s['network']['widths']} {s['network']['activation']}, "
              f"B = {s['batch']}, η = {s['eta']:g}; gap {s['accuracy_gap_pp']:.2f} pp")
    arrival_gate_figure(
        out / "gates.png", history["traces"], history["predict"], history["learn"],
        layers, (s["gate_quiet_threshold"], s["gate_arrival_threshold"]),
        title="Fa-Z-IL: the arrival gate alone decides when synapses change")


PODLASKI_COLOURS = {"BP": "k", "FA": "tab:gray", "PBP": "tab:purple", "NDI": "tab:blue",
           "DI": "tab:orange", "SDI": "tab:green"}
PODLASKI_TRACES = {"angle": "angle of simulated update to closed form (°, log)",
                "lambda_max": "λ_max = max Re λ(M)",
                "time": "settle time (log; band: between the grid's last two times)"}


def _podlaski_style(name: str, alphas: Sequence[float]) -> dict[str, Any]:
    """A method's colour; its α's line style (solid, dashed, ... in the order of ``alphas``)."""
    method, *alpha = name.split()
    a = float(alpha[0].split("=")[1]) if alpha else None
    ls = "-" if a is None else ["-", "--", ":", "-."][min(list(alphas).index(a)
                                                          if a in alphas else 0, 3)]
    return {"color": PODLASKI_COLOURS[method], "ls": ls}


def podlaski2020_figures(out: Path, tasks: Mapping[str, Any], alphas: Sequence[float],
                         threshold: float) -> list[Path]:
    """``demos.reproduce_podlaski2020``'s figures from its per-task summaries: learning curves;
    for the simulated learners (DI, SDI), the angle to the closed form, λ_max and the settle
    time per example."""
    def sim(n):
        return n.split()[0] in ("DI", "SDI")

    paths = [curve_panels_figure(
        out / "learning_curves.png",
        {f"{name} regression": {
            n + (" (simulated)" if sim(n) else ""): Curve(
                c["examples"], c["test_loss"],
                {**_podlaski_style(n, alphas), "lw": 2.2 if sim(n) else 1.2})
            for n, c in t["curves"].items()} for name, t in tasks.items()},
        hlines={f"{name} regression": (t["threshold_loss"],
                                       f"threshold ({threshold:g} × initial)")
                for name, t in tasks.items()},
        floor=1e-300, xlabel="training examples", ylabel="test loss ½‖y − r_L‖² (log)",
        legend_columns=2, panel_size=(6.5, 5))]
    if not any(t["traces"] for t in tasks.values()):
        return paths
    for key, file in (("angle", "di_ndi_angle.png"), ("lambda_max", "lambda_max.png"),
                      ("time", "settle.png")):
        panels = {}
        for name, t in tasks.items():
            panels[f"{name} regression"] = curves = {}
            for n, tr in t["traces"].items():
                style = _podlaski_style(n, alphas)
                k = list(range(1, len(tr[key]) + 1))
                curves[n] = (Curve(tr["lambda_at"], tr[key], {**style, "marker": "."})
                             if key == "lambda_max" else
                             Curve(k, tr[key], {**style, "lw": 0.8},
                                   lower=tr["time_lower"] if key == "time" else None,
                                   band_alpha=0.15 if style["ls"] == "-" else 0.3))
        paths.append(curve_panels_figure(
            out / file, panels, xlabel="training example", ylabel=PODLASKI_TRACES[key],
            yscale="symlog" if key == "lambda_max" else "log",
            linthresh=1e-4 if key == "lambda_max" else None,
            floor={"angle": 1e-12, "time": 1e-3}.get(key)))
    return paths
__all__ += ["podlaski2020_figures"]
