"""Bad input gets an error that names the parameter, what was received and what was expected."""
import math

import pytest
import torch

from circuits import DynamicInversion, ForwardNetwork, SingleLoopDynamicInversion
from circuits.feedback_control import DeepFeedbackControl
from solvers import solve

F64 = torch.float64
NET = ForwardNetwork([3, 4, 2], seed=0)
X = torch.zeros(2, 3, dtype=F64)
Y = torch.ones(2, 2, dtype=F64)


def field(t, y):
    return {"y": -y["y"]}


Y0 = {"y": torch.ones(2, 3, dtype=F64)}


@pytest.mark.parametrize("kwargs,match", [
    (dict(dt=0.0), r"dt: received 0\.0, expected a finite number > 0"),
    (dict(dt=-0.1), r"dt: received -0\.1, expected a finite number > 0"),
    (dict(dt=math.nan), r"dt: received nan"),
    (dict(dt=None), r"dt: received None, expected a step size"),
    (dict(dt=0.1, method="eulr"), r"method: received 'eulr', expected one of .*'euler'.*'dopri5'"),
    (dict(dt=0.1, save_every=0), r"save_every: received 0, expected a finite integer > 0"),
    (dict(dt=0.1, save_at=[0.5, 0.2]), r"save_at: received \[0\.5, 0\.2\], expected a non-empty "
                                       r"increasing"),
    (dict(dt=0.1, save_at=[0.0, 3.0]), r"save_at: .*in \[t0, t1\] = \[0\.0, 1\.0\]"),
    (dict(dt=0.1, save_every=2, save_at=[0.5]), r"save_every and save_at: received both"),
    (dict(dt=0.1, atol=-1.0), r"atol: received -1\.0, expected a finite number ≥ 0"),
    (dict(dt=0.1, check_every=1.5), r"check_every: received 1\.5, expected a finite integer"),
    (dict(dt=0.1, divergence_bound=0), r"divergence_bound: received 0"),
    (dict(method="dopri5", save_every=3), r"save_every: received 3, expected None for adaptive"),
])
def test_solve_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve(field, Y0, 0.0, 1.0, **kwargs)


def test_solve_rejects_bad_time_span_and_state():
    with pytest.raises(ValueError, match=r"t1: received 0\.0, expected t1 > t0 = 1\.0"):
        solve(field, Y0, 1.0, 0.0, dt=0.1)
    with pytest.raises(ValueError, match=r"t0: received inf, expected a finite number"):
        solve(field, Y0, math.inf, 2.0, dt=0.1)
    with pytest.raises(ValueError, match=r"y0\['y'\]: received non-finite values"):
        solve(field, {"y": torch.tensor([[math.nan]], dtype=F64)}, 0.0, 1.0, dt=0.1)
    with pytest.raises(ValueError, match=r"y0\['b'\]: received shape \(3, 1\), expected a leading "
                                         r"replica axis of size S = 2"):
        solve(field, {"y": torch.ones(2, 1), "b": torch.ones(3, 1)}, 0.0, 1.0, dt=0.1)
    with pytest.raises(TypeError, match=r"y0: received list, expected a non-empty mapping"):
        solve(field, [torch.ones(2)], 0.0, 1.0, dt=0.1)
    with pytest.raises(TypeError, match=r"y0\['y'\]: received dtype torch\.int64, expected a "
                                        r"floating point dtype"):
        solve(field, {"y": torch.ones(2, 1, dtype=torch.long)}, 0.0, 1.0, dt=0.1)
    with pytest.raises(TypeError, match=r"f: received int, expected a callable"):
        solve(3, Y0, 0.0, 1.0, dt=0.1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(alpha=-0.1), r"alpha: received -0\.1, expected values ≥ 0"),
    (dict(alpha=[0.1, math.inf]), r"alpha: received non-finite values"),
    (dict(tau_u=0.0), r"tau_u: received 0\.0, expected values > 0"),
    (dict(tau_delta=-1.0), r"tau_delta: received -1\.0, expected values > 0"),
    (dict(k_i=0.0), r"k_i: received 0\.0, expected values > 0"),
    (dict(k_p=-2.0), r"k_p: received -2\.0, expected values ≥ 0"),
    (dict(alpha=[0.1, 0.2], k_i=[1.0, 2.0, 3.0]), r"k_i: received 3 replica values, expected 1 or "
                                                   r"S = 3|alpha: received 2 replica values"),
    (dict(feedback="transposed"), r"feedback: received 'transposed', expected one of "
                                  r"\['transpose', 'random'\]"),
    (dict(feedback=[torch.ones(4, 4)]), r"feedback\[0\]: received \(4, 4\), expected a tensor "
                                        r"\[S, 4, 2\]"),
])
def test_dynamic_inversion_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DynamicInversion(NET, X, Y, **kwargs)


def test_circuits_reject_bad_inputs():
    with pytest.raises(TypeError, match=r"alpha: received str, expected a number or a sequence"):
        DynamicInversion(NET, X, Y, alpha="small")
    with pytest.raises(ValueError, match=r"x: received shape \(2, 5\), expected \[B, 3\]"):
        DynamicInversion(NET, torch.zeros(2, 5), Y)
    with pytest.raises(ValueError, match=r"x: received non-finite values"):
        DynamicInversion(NET, torch.full((2, 3), math.nan), Y)
    with pytest.raises(ValueError, match=r"target: received shape \(2, 3\), expected last "
                                         r"dimension n_L = 2"):
        DynamicInversion(NET, X, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"target: received 3 examples, expected B = 2"):
        DynamicInversion(NET, X, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"target, output_error: received neither"):
        DynamicInversion(NET, X)
    with pytest.raises(TypeError, match=r"network: received dict, expected a "
                                        r"circuits\.ForwardNetwork"):
        DynamicInversion({}, X, Y)
    with pytest.raises(ValueError, match=r"network: received 1 layer\(s\), expected at least 2"):
        DynamicInversion(ForwardNetwork([3, 2]), X, Y)
    with pytest.raises(ValueError, match=r"carry: received 'tanh', expected 'linear' or "
                                         r"'activation'"):
        SingleLoopDynamicInversion(NET, X, Y, carry="tanh")
    with pytest.raises(ValueError, match=r"target_mode: received 'medium', expected one of "
                                         r"\['weak', 'strong'\]"):
        DeepFeedbackControl(NET, X, Y, target_mode="medium")
    with pytest.raises(ValueError, match=r"leak: received 'u', expected one of "
                                         r"\['integral', 'total'\]"):
        DeepFeedbackControl(NET, X, Y, leak="u")
    with pytest.raises(ValueError, match=r"nudge: received 0, expected a finite number > 0"):
        DeepFeedbackControl(NET, X, Y, nudge=0)
    with pytest.raises(ValueError, match=r"tau_v: received -0\.2, expected values > 0"):
        DeepFeedbackControl(NET, X, Y, tau_v=-0.2)


@pytest.mark.parametrize("kwargs,match", [
    (dict(widths=[3]), r"widths: received \[3\], expected a list of at least two positive"),
    (dict(widths=[3, 0, 2]), r"widths: received \[3, 0, 2\]"),
    (dict(widths=[3, 2], activation="softsign"), r"activation: received 'softsign', expected one "
                                                 r"of \['linear', 'mish', 'relu', 'sigmoid', "
                                                 r"'tanh'\]"),
    (dict(widths=[3, 2], init="xavier"), r"init: received 'xavier', expected one of"),
    (dict(widths=[3, 2], replicas=0), r"replicas: received 0, expected an integer ≥ 1"),
    (dict(widths=[3, 2], replicas=2, seed=[1]), r"seed: received \[1\], expected an int or 2 ints"),
    (dict(widths=[3, 2], scale=-1.0), r"scale: received -1\.0, expected a number > 0"),
    (dict(widths=[3, 2], weights=[torch.ones(1, 3, 2)]), r"weights\[0\]: received shape "
                                                         r"\(1, 3, 2\), expected \(1, 2, 3\)"),
])
def test_network_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForwardNetwork(**kwargs)


# -- predictive coding ------------------------------------------------------------------------

from circuits import ArrivalGate, PredictiveCoding, Schedule  # noqa: E402
from solvers import Phase, present  # noqa: E402


@pytest.mark.parametrize("kwargs,match", [
    (dict(variances=[1.0]), r"variances: received 1 values, expected one per layer \(L = 2\)"),
    (dict(variances=0.0), r"variances\[0\]: received 0\.0, expected values > 0"),
    (dict(variances=[1.0, -2.0]), r"variances\[1\]: received -2\.0, expected values > 0"),
    (dict(tau_x=0.0), r"tau_x: received 0\.0, expected values > 0"),
    (dict(eta=-0.1), r"eta: received -0\.1, expected values ≥ 0"),
    (dict(errors="implicit"), r"errors: received 'implicit', expected one of \['explicit', "
                              r"'leaky'\]"),
    (dict(predictions="frozen"), r"predictions: received 'frozen', expected one of"),
    (dict(plasticity="z_il"), r"plasticity: received str, expected None or a "
                              r"circuits.gates.Plasticity"),
    (dict(plasticity=Schedule.z_il(2), predictions="fixed"),
     r"plasticity: received a gate with predictions='fixed', expected None"),
])
def test_predictive_coding_rejects_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        PredictiveCoding(NET, X, Y, **kwargs)


def test_predictive_coding_rejects_bad_networks_and_drives():
    tanh_out = ForwardNetwork([3, 4, 2], output_activation="tanh", seed=0)
    with pytest.raises(ValueError, match=r"network.output_activation: received 'tanh', "
                                         r"expected 'linear'"):
        PredictiveCoding(tanh_out, X, Y)
    c = PredictiveCoding(NET, X, Y, eta=0.1, plasticity=ArrivalGate())
    with pytest.raises(ValueError, match=r"x: received 3 examples, expected B = 2"):
        c.present(torch.zeros(3, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"target: received shape \(2, 5\), expected last "
                                         r"dimension n_L = 2"):
        c.present(target=torch.zeros(2, 5, dtype=F64))
    with pytest.raises(ValueError, match=r"perturbation: received -1\.0, expected a number ≥ 0"):
        c.initial_state(perturbation=-1.0)
    frozen = PredictiveCoding(NET, X, Y)
    with pytest.raises(ValueError, match=r"plasticity: received None, expected a gate"):
        frozen.weight_changes(frozen.initial_state(), frozen.initial_state())


@pytest.mark.parametrize("make,match", [
    (lambda: Schedule([1, -1]), r"steps: received \[1, -1\], expected one integer ≥ 0 per layer"),
    (lambda: Schedule([0], period=0.0), r"period: received 0\.0, expected a finite number > 0"),
    (lambda: ArrivalGate("spike"), r"signal: received 'spike', expected one of \['feedback', "
                                   r"'drive', 'error'\]"),
    (lambda: ArrivalGate("error", ordered=True), r"ordered: received True with signal='error'"),
    (lambda: ArrivalGate(threshold=0.0), r"threshold: received 0\.0, expected a finite number"),
    (lambda: ArrivalGate(t_quiet=-1.0), r"t_quiet: received -1\.0"),
    (lambda: ArrivalGate(hysteresis=0.5), r"hysteresis: received 0\.5, expected a number ≥ 1"),
    (lambda: Phase("learn", duration=0.0, dt=1.0, teacher=True),
     r"Phase 'learn': duration: received 0\.0, expected a finite number > 0"),
])
def test_gates_and_phases_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_schedule_must_name_every_layer_and_present_needs_a_drive():
    c = PredictiveCoding(NET, X, Y, eta=0.1, plasticity=Schedule([1, 0, 0]))
    with pytest.raises(ValueError, match=r"steps: received 3 steps, expected one per layer "
                                         r"\(L = 2\)"):
        c.vector_field(0.0, c.initial_state())
    dfc = DeepFeedbackControl(NET, X, Y)
    with pytest.raises(TypeError, match=r"circuit: received DeepFeedbackControl, expected a "
                                        r"circuit with a present\(x, target\) method"):
        present(dfc, dfc.initial_state(), X, Y, [Phase("p", 1.0, 0.1, False)])


def test_feedback_control_rejects_given_feedback_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"feedback: received list of 1, expected "
                                         r"\['jacobian', 'random'\] or 2 tensors shaped"):
        DeepFeedbackControl(NET, X, Y, feedback=[torch.ones(4, 2)])
