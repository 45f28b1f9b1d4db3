"""The measurements and helpers ``demos.reproduce_song2020`` takes from the library (float64):
Z-IL's circuit and error wave (:mod:`circuits.predictive_coding`), the clock's openings and
the gate statistics of a settle (:mod:`circuits.gates`), and the demo helpers it draws and
parses with (:mod:`workbench.plots`, :mod:`demos.config`)."""
import argparse
import dataclasses

import numpy as np
import pytest
import torch

from circuits import (ArrivalGate, ForwardNetwork, PredictiveCoding, Schedule, backprop_updates,
                      gates, update_divergence)
from circuits.predictive_coding import dead_units, error_wave, z_il_circuit
from demos.config import dataclass_flags
from figures import assert_png
from solvers import solve
from workbench.plots import (error_wave_figure, gate_settle_figure, grouped_log_bars_figure,
                             text_table)

F64 = torch.float64
ETA = 0.1
SETTLE = dict(dt=0.1, atol=1e-14, rtol=1e-12, progress=False)


@pytest.fixture(scope="module")
def four_layers():
    """Two replicas of a tanh net 5-12-12-12-3 and a batch of four examples."""
    net = ForwardNetwork([5, 12, 12, 12, 3], "tanh", seed=[0, 1], dtype=F64)
    g = torch.Generator().manual_seed(100)
    return net, torch.randn(4, 5, generator=g, dtype=F64), torch.randn(4, 3, generator=g,
                                                                        dtype=F64)


def run_z_il(net, x, y, gamma=1.0, start=-0.5):
    c = z_il_circuit(net, x, y, ETA, gamma=gamma, start=start)
    y0 = c.initial_state()
    sol = solve(c, y0, 0.0, net.L * gamma, dt=gamma, steady_state=False, save_every=1,
                observe=c.observe, progress=False)
    dist, size = update_divergence(c.weight_changes(y0, sol.y1), backprop_updates(net, x, y, ETA))
    return sol, dist / size


def test_z_il_circuit_is_backprop_and_gamma_breaks_only_c3_with_the_centred_clock(four_layers):
    """Measured relative divergences from backprop (two replicas): γ = 1: 2.2e-15, 2.3e-15 with
    either clock start; γ = 0.99999: 1.4e-5, 1.7e-5 with the centred clock (C3 alone broken)
    and 1.12, 1.40 with windows starting at k (layer L learns twice, layer 1 never)."""
    net, x, y = four_layers
    for start in (-0.5, 0.0):
        assert run_z_il(net, x, y, start=start)[1].max() <= 1e-14
    centred = run_z_il(net, x, y, gamma=0.99999)[1]
    assert bool(((centred > 1e-6) & (centred < 1e-4)).all()), centred
    assert bool((run_z_il(net, x, y, gamma=0.99999, start=0.0)[1] > 1.0).all())


def test_z_il_circuit_rejects_a_bad_rate(four_layers):
    net, x, y = four_layers
    with pytest.raises(ValueError, match=r"gamma: received 0, expected a finite number > 0"):
        z_il_circuit(net, x, y, ETA, gamma=0)
    with pytest.raises(ValueError, match=r"eta: received nan"):
        z_il_circuit(net, x, y, float("nan"))


def test_error_wave_moves_down_one_layer_per_step(four_layers):
    """Under Z-IL ‖ε_ℓ(k)‖/‖δ_ℓ‖ is exactly 0 before step L − ℓ and 1 at it (measured: within
    2.2e-16 for every layer and replica); after it the error moves on (0.49 for layer 3 at
    step 3 of replica 0)."""
    net, x, y = four_layers
    sol, _ = run_z_il(net, x, y)
    wave = error_wave(sol.ys, net, x, y)
    assert wave.shape == (net.L + 1, 2, net.L) and wave.dtype == F64
    for l in range(1, net.L + 1):
        torch.testing.assert_close(wave[net.L - l, :, l - 1], torch.ones(2, dtype=F64),
                                   rtol=0, atol=1e-15)
        assert bool((wave[:net.L - l, :, l - 1] == 0).all()), l
    assert abs(float(wave[3, 0, 1]) - 0.4886) < 1e-4


def test_error_wave_names_the_missing_errors(four_layers):
    net, x, y = four_layers
    with pytest.raises(ValueError, match=r"obs: received keys \['x_1'\], expected eps_1 "
                                         r"\.\.\. eps_4 \(missing \['eps_1', 'eps_2'"):
        error_wave({"x_1": torch.zeros(1)}, net, x, y)


def test_dead_units_counts_dead_relus_and_examples_with_a_dead_layer():
    """Hidden layer = identity on x: example (1, −1) has one dead unit, (−1, −2) a dead layer,
    (2, 3) none: 3 of 6 units dead (0.5), one example with a dead layer; tanh has none."""
    net = ForwardNetwork([2, 2, 1], "relu", seed=0, dtype=F64)
    net = net.with_parameters([torch.eye(2, dtype=F64)[None], torch.ones(1, 1, 2, dtype=F64)],
                              [torch.zeros(1, 1, 2, dtype=F64), torch.zeros(1, 1, 1, dtype=F64)])
    x = torch.tensor([[1.0, -1.0], [-1.0, -2.0], [2.0, 3.0]], dtype=F64)
    assert dead_units(net, x) == (0.5, 1)
    tanh = ForwardNetwork([2, 4, 4, 1], "tanh", seed=0, dtype=F64)
    assert dead_units(tanh, x) == (0.0, 0)


def test_clock_openings_count_the_steps_each_layer_learns_on():
    """Steps at 0.99999·k fall just before k: windows starting at k give layer 4 two steps and
    layer 1 none, [0, 1, 1, 2]; centred windows one each. Schedule.together opens every layer
    once, at step L − 1."""
    late = [0.99999 * k for k in range(4)]
    assert gates.clock_openings(Schedule.z_il(4), late) == [0, 1, 1, 2]
    assert gates.clock_openings(Schedule.z_il(4, start=-0.5), late) == [1, 1, 1, 1]
    assert gates.clock_openings(Schedule.z_il(4), [0.0, 1.0, 2.0, 3.0]) == [1, 1, 1, 1]
    assert gates.clock_openings(Schedule.together(4), [0.0, 1.0, 2.0]) == [0, 0, 0, 0]
    assert gates.clock_openings(Schedule.together(4), [0.0, 1.0, 2.0, 3.0]) == [1, 1, 1, 1]
    with pytest.raises(TypeError, match="schedule: received ArrivalGate, expected a "):
        gates.clock_openings(ArrivalGate(), late)


def test_gate_extremes_by_hand():
    """L = 2, one replica, two examples: the open hidden unit has |ε| = 0.2 and |fb| = 0.05,
    the open output unit |ε| = 0.4; the largest |ε| anywhere (0.9) belongs to a shut unit."""
    obs = {"gate_1": torch.tensor([[[0.0, 1.0], [0.0, 0.0]]], dtype=F64),
           "eps_1": torch.tensor([[[0.1, -0.2], [0.5, 0.0]]], dtype=F64),
           "fb_1": torch.tensor([[[0.3, 0.05], [-0.7, 0.0]]], dtype=F64),
           "gate_2": torch.tensor([[[1.0], [0.0]]], dtype=F64),
           "eps_2": torch.tensor([[[-0.4], [0.9]]], dtype=F64)}
    ext = gates.gate_extremes(obs, 2)
    torch.testing.assert_close(ext["gate"], torch.tensor([[1.0, 1.0]], dtype=F64))
    torch.testing.assert_close(ext["signal"], torch.tensor([[0.2, 0.4]], dtype=F64))
    torch.testing.assert_close(ext["error"], torch.tensor([[0.9]], dtype=F64))
    with pytest.raises(ValueError, match=r"obs: received keys .*\(missing \['fb_1'\]"):
        gates.gate_extremes({k: v for k, v in obs.items() if k != "fb_1"}, 2)
    with pytest.raises(ValueError, match="layers: received 0, expected an integer ≥ 1"):
        gates.gate_extremes(obs, 0)


def test_first_opening_by_hand():
    ts = torch.tensor([0.0, 0.1, 0.2, 0.3], dtype=F64)
    gate = torch.tensor([[0, 0], [0, 0], [0.5, 0], [1, 1]], dtype=F64)
    signal = torch.tensor([[0, 0], [0, 0], [2.0, 0], [3, 4]], dtype=F64)
    assert gates.first_opening(ts, gate, signal) == {
        "max_gate": 1.0, "first_opening_time": 0.2, "signal_at_first_opening": 2.0}
    assert gates.first_opening(ts, 0 * gate, signal) == {
        "max_gate": 0.0, "first_opening_time": None, "signal_at_first_opening": 0.0}
    with pytest.raises(ValueError, match=r"gate, signal: received shapes \(3, 2\) and \(4, 2\)"):
        gates.first_opening(ts, gate[:3], signal)


def test_a_new_input_opens_only_the_unordered_gates():
    """Settled on one input and shown another alone (tanh 5-16-16-16-3, two examples), recorded
    through gate_extremes every step: measured, the ordered gate never opens; the unordered
    one first at t = 0.2 on a signal of 1.32 (max gate 0.52); φ at t = 0 on 1.62, the largest
    error of the circuit then."""
    net = ForwardNetwork([5, 16, 16, 16, 3], "tanh", seed=0, dtype=F64)
    xa = torch.randn(2, 5, generator=torch.Generator().manual_seed(100), dtype=F64)
    xb = torch.randn(2, 5, generator=torch.Generator().manual_seed(9), dtype=F64)
    seen = {}
    for name, gate in (("ordered", ArrivalGate()), ("unordered", ArrivalGate(ordered=False)),
                       ("error", ArrivalGate("error"))):
        c = PredictiveCoding(net, xa, None, eta=ETA, plasticity=gate)
        rest = solve(c, c.initial_state(), 0.0, 1000.0, **SETTLE)
        c.present(xb)
        sol = solve(c, rest.y1, 0.0, 1000.0, save_every=1, **SETTLE,
                    observe=lambda y: gates.gate_extremes(c.observe(y), net.L))
        assert sol.status_names() == ["converged"]
        assert sol.ys["gate"].shape == (len(sol.ts), 1, net.L)
        seen[name] = gates.first_opening(sol.ts, sol.ys["gate"][:, 0], sol.ys["signal"][:, 0])
        seen[name]["error_at_0"] = float(sol.ys["error"][0, 0, 0])
    assert seen["ordered"]["max_gate"] == 0 and seen["ordered"]["first_opening_time"] is None
    assert seen["unordered"]["first_opening_time"] == pytest.approx(0.2, abs=1e-12)
    assert seen["unordered"]["signal_at_first_opening"] == pytest.approx(1.3157, abs=1e-3)
    assert seen["unordered"]["max_gate"] == pytest.approx(0.5217, abs=1e-3)
    assert seen["error"]["first_opening_time"] == 0.0 and seen["error"]["max_gate"] == 1.0
    assert seen["error"]["signal_at_first_opening"] == seen["error"]["error_at_0"]
    assert seen["error"]["error_at_0"] == pytest.approx(1.6201, abs=1e-3)


# -- the demo helpers -------------------------------------------------------------------------

def test_text_table_aligns_the_first_column_left_and_the_rest_right():
    assert text_table([("row", "value"), ("a", "1.0"), ("longer", "10")]) == [
        "row     value", "------  -----", "a         1.0", "longer     10"]
    with pytest.raises(ValueError, match=r"rows: received rows of lengths \[2, 1\]"):
        text_table([("a", "b"), ("c",)])


@dataclasses.dataclass(frozen=True)
class _Flags:
    seed: int = 0
    relu_seed: int = 1
    widths: tuple[int, ...] = (4, 3)
    eta: float = 0.1
    flag: bool = False


def test_dataclass_flags_parse_into_the_dataclass():
    parser = argparse.ArgumentParser()
    make = dataclass_flags(parser, _Flags, {"relu_seed": "r", "widths": "w", "eta": "e"})
    assert make(parser.parse_args([])) == _Flags()
    args = parser.parse_args(["--relu-seed", "5", "--widths", "6", "2", "--eta", "0.5"])
    assert make(args) == _Flags(relu_seed=5, widths=(6, 2), eta=0.5)
    with pytest.raises(ValueError, match=r"helps: unknown fields \['sede'\]"):
        dataclass_flags(argparse.ArgumentParser(), _Flags, {"sede": "s"})
    with pytest.raises(ValueError, match=r"helps\['flag'\]: the field's default is False"):
        dataclass_flags(argparse.ArgumentParser(), _Flags, {"flag": "f"})


def test_song_figures_are_written(tmp_path):
    frac = np.array([[0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]], dtype=float)
    assert_png(error_wave_figure(tmp_path / "wave.png", frac, {"gate": frac}))
    t = np.linspace(0, 10, 101)
    trace = {"t": t, "gate": np.zeros((101, 4)), "error": np.exp(-t)[:, None]}
    result = {"max_gate": 0.0, "first_opening_time": -1.0, "signal_at_first_opening": 0.0,
              "weight_change_l1": 0.0, "settle_time": 9.0}
    assert_png(gate_settle_figure(tmp_path / "settle.png", {"shut": trace}, {"shut": result},
                                  1e-3))
    bars = {"exact": 0.0, "off": 0.5, "other": 1e-3}
    assert_png(grouped_log_bars_figure(tmp_path / "bars.png", bars,
                                       [("exact", "tab:green", "exact"),
                                        ("off", "tab:red", "broken")]), min_bytes=5_000)
