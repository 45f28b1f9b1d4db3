"""What the demos' summaries and reports share: writing ``summary.json``, seed statistics, the
log-log slope of a measured law, the line of verdicts."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def write_summary(out: Path, summary: Mapping[str, Any], indent: int = 2) -> None:
    """``out/summary.json`` (strict JSON: a NaN or infinity is an error, not ``NaN``)."""
    with (Path(out) / "summary.json").open("w") as fh:
        json.dump(summary, fh, indent=indent, allow_nan=False)


def mean_std(values: Any) -> dict[str, Any]:
    """``{"mean", "std" (ddof 1; 0 for one value), "per_seed"}`` of per-seed values."""
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "per_seed": [float(v) for v in a]}


def fit_slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """The log-log slope of ``y`` against ``x`` (least squares over the points with a finite
    ``y > 0``; None with fewer than two)."""
    pts = [(math.log10(a), math.log10(b)) for a, b in zip(x, y) if math.isfinite(b) and b > 0]
    return float(np.polyfit(*zip(*pts), 1)[0]) if len(pts) >= 2 else None


def verdicts(checks: Mapping[str, bool]) -> str:
    """``checks: name ok, name FAILED, ...``."""
    return "checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in checks.items())


# -- the demos' reports, each from its summary alone ------------------------------------------

def bengio2020(summary: Mapping[str, Any]) -> str:
    """:mod:`demos.reproduce_bengio2020`'s report: the three parts, the checks, the time."""
    lines = ["1. iterated inverse (rate: geometric mean of per-step error ratios; max ratio; α)"]
    for c in summary["convergence"]:
        verdict = "converged" if c["converged"] else "DIVERGED" if c["diverged"] else "neither"
        lines.append(f"  {c['activation']:<6} {c['rule']:<15} p = {c['perturbation']:<4g} "
                     f"α = {c['alpha']:<7.4f} ρ = {c['spectral_radius']:<7.4f} "
                     f"rate = {c['rate']:<7.4f} max ratio = {c['max_step_ratio']:<7.4f} "
                     f"{verdict}{'' if c['rate_within_alpha'] else '  (max ratio > α)'}")
    d, g = summary["dtp1"], summary["gauss_newton"]
    lines.append("2. DTP1 (max abs differences)")
    lines += [f"  online rule ({rule}) − DTP1: {r['max_abs_diff']:.2e} "
              f"(DTP1 ΔW up to {max(r['max_abs_dtp1_W']):.2g})"
              for rule, r in d["online_vs_dtp1"].items()]
    lines.append("  DTP1-moved h_ℓ − τ_ℓ per layer: "
                 + ", ".join(f"{v:.1e}" for v in d["dtp1_target_residual"]))
    lines.append("  one Euler step − DTP per layer: "
                 + ", ".join(f"τ_{l} {v:.1e}" for l, v in d["euler_step_vs_dtp"].items()))
    lines.append("3. angle to the Gauss-Newton step (degrees) at β = "
                 + " ".join(f"{b:g}" for b in g["betas"]))
    lines += [f"  {name:<25} layer {l}: " + " ".join(f"{v:.3g}" for v in a)
              + f"   slope {g['slopes'][name][l]:.3f}"
              for name, per in g["angles_to_gauss_newton"].items() for l, a in per.items()]
    lines.append("  GN vs backprop direction: " + ", ".join(
        f"layer {l} {a:.1f}°" for l, a in g["gauss_newton_vs_backprop"].items()))
    lines.append(verdicts(summary["checks"]))
    lines.append(f"{summary['seconds']:.1f} s")
    return "\n".join(lines)


def bengio2020_checks(conv: Sequence[Mapping[str, Any]], dtp1: Mapping[str, Any],
                      gn: Mapping[str, Any]) -> dict[str, bool]:
    """:mod:`demos.reproduce_bengio2020`'s claims, each true or false, from its summary's
    ``convergence``, ``dtp1`` and ``gauss_newton``."""
    contracting = [c for c in conv if c["alpha"] < 1]
    expanding = [c for c in conv if c["spectral_radius"] > 1]
    exact, approx_it, dtp = (gn["angles_to_gauss_newton"][k].values() for k in (
        "exact_inverse_iterated", "approximate_iterated", "approximate_dtp_one_step"))
    return {
        "contractions_converge": bool(contracting) and all(c["converged"] for c in contracting),
        "rate_within_alpha": bool(contracting) and all(c["rate_within_alpha"]
                                                       for c in contracting),
        "alpha_above_one_diverges": bool(expanding) and all(c["diverged"] and c["alpha"] > 1
                                                            for c in expanding),
        "online_rule_is_dtp1": dtp1["max_online_diff"] < 1e-10 and all(
            r["status"] == "converged" and max(r["max_abs_dtp1_W"]) > 1e-3
            for r in dtp1["online_vs_dtp1"].values()),
        "dtp1_moves_h_onto_tau": dtp1["max_target_residual"] < 1e-10
        and dtp1["dtp1_settle_status"] == "converged" and min(dtp1["dtp1_target_change"]) > 1e-3,
        "euler_step_is_dtp": dtp1["max_euler_step_diff"] < 1e-10,
        "gn_angle_first_order_in_beta": all(s is not None and 0.8 <= s <= 1.2 for s in
                                            gn["slopes"]["exact_inverse_iterated"].values()),
        "gn_angle_small_at_smallest_beta": all(a[-1] < 0.1 for a in exact),
        "iterating_approximate_decoders_recovers_exact_targets": all(
            abs(b[-1] - a[-1]) <= 1e-3 * a[-1] + 1e-9 for a, b in zip(exact, approx_it)),
        "one_dtp_step_stays_off_gn": all(d[-1] > 10 * a[-1] for a, d in zip(exact, dtp)),
    }


def mertens(summary: Mapping[str, Any]) -> str:
    """:mod:`demos.reproduce_mertens`'s report: the accuracy table (test accuracy mean ± std over
    seeds, per-layer decoded means)."""
    lines = [f"{'method':<20} {'test accuracy':>17}  {'train':>6}  per-layer test (decoded)",
             "-" * 78]
    for name, a in summary["accuracy"].items():
        layers = summary["layer_accuracy"].get(name)
        per_layer = "  ".join(f"{v:.3f}" for v in layers["mean"]) if layers else "-"
        lines.append(f"{name:<20} {a['mean']:.3f} ± {a['std']:.3f}      "
                     f"{summary['train_accuracy'][name]['mean']:.3f}  {per_layer}")
    return "\n".join(lines + [f"seeds {summary['seeds']}, {summary['seconds']:.1f} s"])


def fa_z_il(summary: Mapping[str, Any]) -> str:
    """:mod:`demos.train_pc`'s report, a few lines: accuracies, gap, weight divergence, gate
    activity, time."""
    s, t, n = summary, summary["task"], summary["network"]
    div = s["final_weight_divergence_relative"]
    lines = [
        f"task {t['name']}: {t['classes']} classes, {t['train']} train / {t['test']} test "
        f"(chance {100 * t['chance_accuracy']:.1f}%); network {n['widths']} {n['activation']}, "
        f"B = {s['batch']}, η = {s['eta']:g}",
        f"after {s['presentations']} presentations ({s['epochs']:g} epochs"
        + ("" if s["complete"] else f", of {s['presentations_planned']} planned")
        + f"): test accuracy Fa-Z-IL {100 * s['fa_z_il_test_accuracy']:.2f}%, backprop "
        f"{100 * s['backprop_test_accuracy']:.2f}% (gap {s['accuracy_gap_pp']:.2f} pp, "
        f"{'within' if s['within_1pp'] else 'NOT within'} {s['tolerance_pp']:g} pp)",
        "weights: ‖θ_PC − θ_bp‖₁ / ‖θ_bp − θ_0‖₁ = " + ("—" if div is None else f"{div:.2e}")]
    if s.get("learn_gates_per_layer"):
        opened = ", ".join(f"layer {l} at step {', '.join(map(str, v['open_at_steps']))}"
                           for l, v in sorted(s["learn_gates_per_layer"].items(),
                                              key=lambda kv: -int(kv[0])))
        settle = s["prediction_settle_time"]
        lines += [
            f"gate: max during prediction {s['max_gate_during_prediction']:g}; during learning "
            f"{'every' if s['every_gate_opened_on_exactly_one_step'] else 'NOT every'} unit's "
            f"gate opened on exactly one step ({opened})",
            f"prediction settles in t = {settle['min']:g}–{settle['max']:g} τ_x "
            f"({'all' if s['prediction_all_converged'] else 'NOT all'} converged), hidden |ε| "
            f"left ≤ {s['max_hidden_error_after_prediction']:.1e} (quiet below θ = "
            f"{s['gate_quiet_threshold']:.1e}, arrival above hθ = "
            f"{s['gate_arrival_threshold']:.1e})"]
    return "\n".join(lines + [f"{s['seconds']:.1f} s"])
