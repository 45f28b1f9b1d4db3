"""Bad input to construction and analysis in ``circuits``: a clear error naming the parameter,
what was received and what was expected, raised before any work (issue 13, item 1).

Each case builds something with one bad argument and asserts the error type and that the
message names the parameter. The valid edge cases at the end (S = 1, B = 1, float32, integer
inputs) must keep working."""
import math

import pytest
import torch

from circuits import (ClosedForm, DeepFeedbackControl, DynamicInversion, FeedbackLearning,
                      ForwardNetwork, LocalDecoders, MirroredDecoder, Plastic, PredictiveCoding,
                      SingleLoopDynamicInversion, TargetPropagation, alignment, analyse,
                      analyse_circuit, angle, feedback_alignment, gauss_newton, jacobian,
                      replica_network, smoothed_spectral_abscissa, stabilise_feedback)
from circuits.feedback_learning import DifferenceReconstruction, ReconstructionLearning

F64, F32 = torch.float64, torch.float32
NAN, INF = math.nan, math.inf
NET = ForwardNetwork([3, 4, 2], seed=0)
NET3 = ForwardNetwork([3, 4, 4, 2], seed=1)
SIG = ForwardNetwork([3, 4, 2], output_activation="sigmoid", seed=2)
X = torch.linspace(-1, 1, 6, dtype=F64).reshape(2, 3)
Y = torch.tensor([[0.2, 0.8], [0.6, 0.4]], dtype=F64)


def di(**kw):
    return DynamicInversion(NET, X, Y, **kw)


def decoder(V, c=None):
    return MirroredDecoder(V, c, NET.activation(2))


def fwd():
    return NET.forward(X)


def di_state():
    c = di()
    return c, c.initial_state()


NETWORK = [
    # dtype: only float32 / float64 (int64 gave all-zero weights, complex dropped nothing yet)
    ("int64", lambda: ForwardNetwork([3, 4, 2], dtype=torch.int64), ValueError,
     r"dtype: received torch\.int64, expected torch\.float32 or torch\.float64"),
    ("float16", lambda: ForwardNetwork([3, 4, 2], dtype=torch.float16), ValueError,
     r"dtype: received torch\.float16"),
    ("bfloat16", lambda: ForwardNetwork([3, 4, 2], dtype=torch.bfloat16), ValueError,
     r"dtype: received torch\.bfloat16"),
    ("complex", lambda: ForwardNetwork([3, 4, 2], dtype=torch.complex128), ValueError,
     r"dtype: received torch\.complex128"),
    ("string-dtype", lambda: ForwardNetwork([3, 4, 2], dtype="float64"), TypeError,
     r"dtype: received str 'float64'.*torch\.float64"),
    # devices that don't exist: our error naming `device`, not torch's AssertionError
    ("cuda-99", lambda: ForwardNetwork([3, 4, 2], device="cuda:99"), ValueError,
     r"device: received 'cuda:99'"),
    ("gpu", lambda: ForwardNetwork([3, 4, 2], device="gpu"), ValueError,
     r"device: received 'gpu', expected a device name"),
    ("device-int", lambda: ForwardNetwork([3, 4, 2], device=3.5), TypeError,
     r"device: received float 3\.5"),
    ("scale-inf", lambda: ForwardNetwork([3, 4, 2], scale=INF), ValueError,
     r"scale: received inf, expected a number > 0"),
    ("scale-nan", lambda: ForwardNetwork([3, 4, 2], scale=NAN), ValueError, r"scale: received nan"),
    ("scale-bool", lambda: ForwardNetwork([3, 4, 2], scale=True), ValueError,
     r"scale: received True"),
    ("bias-str", lambda: ForwardNetwork([3, 4, 2], bias="no"), ValueError,
     r"bias: received 'no', expected True or False"),
    ("seed-empty", lambda: ForwardNetwork([3, 4, 2], seed=[]), ValueError,
     r"seed: received an empty sequence"),
    ("seed-overflow", lambda: ForwardNetwork([3, 4, 2], seed=2 ** 70), ValueError,
     r"seed: received 1180591620717411303424, expected an integer seed"),
    ("seed-float", lambda: ForwardNetwork([3, 4, 2], seed=1.5), ValueError,
     r"seed: received 1\.5"),
    ("zero-width", lambda: ForwardNetwork([3, 0, 2]), ValueError,
     r"widths: received \[3, 0, 2\], expected .*positive integers"),
    ("zero-replicas", lambda: ForwardNetwork([3, 4, 2], replicas=0), ValueError,
     r"replicas: received 0, expected an integer ≥ 1"),
    ("init", lambda: ForwardNetwork([3, 4, 2], init="xavier"), ValueError, r"init: received 'xavier'"),
    ("activation", lambda: ForwardNetwork([3, 4, 2], activation="softsign"), ValueError,
     r"activation: received 'softsign'"),
    ("weights-nan", lambda: ForwardNetwork([3, 4, 2], weights=[
        torch.full((1, 4, 3), NAN), torch.ones(1, 2, 4)]), ValueError,
     r"weights\[0\]: received non-finite values"),
    ("weights-complex", lambda: ForwardNetwork([3, 4, 2], weights=[
        torch.ones(1, 4, 3, dtype=torch.complex128), torch.ones(1, 2, 4)]), TypeError,
     r"weights\[0\]: received a complex tensor"),
    ("weights-S0", lambda: ForwardNetwork([3, 4, 2], weights=[
        torch.ones(0, 4, 3), torch.ones(0, 2, 4)]), ValueError,
     r"weights\[0\]: received shape \(0, 4, 3\), expected at least one replica"),
    ("weights-tensor", lambda: ForwardNetwork([3, 4, 2], weights=torch.ones(2, 1, 4, 4)),
     TypeError, r"weights: received Tensor, expected a list of 2 tensors"),
    ("biases-S", lambda: ForwardNetwork([3, 4, 2], weights=[torch.ones(2, 4, 3),
                                                           torch.ones(2, 2, 4)],
                                        biases=[torch.ones(3, 1, 4), torch.ones(3, 1, 2)]),
     ValueError, r"biases\[0\]: received 3 replicas, expected S = 2"),
    ("replica-scales-nan", lambda: replica_network([3, 4, 2], seeds=[0, 1], scales=[1.0, NAN]),
     ValueError, r"scales: received \[1\.0, nan\], expected finite numbers > 0"),
    ("replica-seeds-float", lambda: replica_network([3, 4, 2], seeds=[0.5, 1]), ValueError,
     r"seeds: received \[0\.5, 1\], expected integers"),
    ("replica-scales-complex", lambda: replica_network([3, 4, 2], seeds=0, scales=[1 + 1j]),
     TypeError, r"scales: received"),
]

DRIVES = [
    ("x-complex", lambda: DynamicInversion(NET, X.to(torch.complex128) + 1j, Y), TypeError,
     r"x: received a complex tensor"),
    ("x-B0", lambda: DynamicInversion(NET, torch.zeros(0, 3), torch.zeros(0, 2)), ValueError,
     r"x: received shape \(0, 3\), expected at least one example"),
    ("x-S0", lambda: DynamicInversion(NET, torch.zeros(0, 2, 3), Y), ValueError,
     r"x: received shape \(0, 2, 3\)"),
    ("x-nan", lambda: DynamicInversion(NET, torch.full((2, 3), NAN), Y), ValueError,
     r"x: received non-finite values"),
    ("target-inf", lambda: DynamicInversion(NET, X, torch.full((2, 2), INF)), ValueError,
     r"target: received non-finite values"),
    ("target-B0", lambda: DynamicInversion(NET, X, torch.zeros(0, 2)), ValueError,
     r"target: received shape \(0, 2\), expected at least one example"),
    ("target-S", lambda: DynamicInversion(NET, X, torch.zeros(3, 2, 2)), ValueError,
     r"target: received 3 replicas, expected 1 or S = 1"),
    ("output-error-complex", lambda: DynamicInversion(
        NET, X, output_error=torch.ones(2, 2, dtype=torch.complex64)), TypeError,
     r"output_error: received a complex tensor"),
]

PARAMETERS = [
    ("alpha-complex-tensor", lambda: di(alpha=torch.tensor([0.1 + 1j])), TypeError,
     r"alpha: received a complex tensor"),
    ("alpha-complex-list", lambda: di(alpha=[0.1 + 1j]), TypeError,
     r"alpha: received a sequence holding complex"),
    ("alpha-str-list", lambda: di(alpha=["a"]), TypeError,
     r"alpha: received a sequence holding str"),
    ("alpha-inf", lambda: di(alpha=INF), ValueError, r"alpha: received non-finite values"),
    ("k_i-nan", lambda: di(k_i=NAN), ValueError, r"k_i: received non-finite values"),
    ("di-feedback-nan", lambda: di(feedback=[torch.full((4, 2), NAN)]), ValueError,
     r"feedback\[0\]: received non-finite values"),
    ("di-feedback-complex", lambda: di(feedback=[torch.ones(4, 2, dtype=torch.complex128)]),
     TypeError, r"feedback\[0\]: received a complex tensor"),
    ("di-feedback-S", lambda: di(feedback=[torch.ones(3, 4, 2)]), ValueError,
     r"feedback\[0\]: received 3 replicas, expected 1 or S = 1"),
    ("di-margin", lambda: di(stabilise=True, stability_margin=NAN), ValueError,
     r"stability_margin: received nan"),
    ("di-stabilise", lambda: di(stabilise="yes"), ValueError,
     r"stabilise: received 'yes', expected True or False"),
    ("sdi-feedback-nan", lambda: SingleLoopDynamicInversion(NET3, X, Y,
                                                            feedback=torch.full((4, 2), NAN)),
     ValueError, r"feedback\[0\]: received non-finite values"),
    ("sdi-tau_delta", lambda: SingleLoopDynamicInversion(NET3, X, Y, tau_delta=0.0), ValueError,
     r"tau_delta: received 0\.0, expected values > 0"),
    ("dfc-feedback-nan", lambda: DeepFeedbackControl(
        NET, X, Y, feedback=[torch.full((4, 2), NAN), torch.ones(2, 2)]), ValueError,
     r"feedback\[0\]: received non-finite values"),
    ("dfc-feedback-S", lambda: DeepFeedbackControl(
        NET, X, Y, feedback=[torch.ones(3, 4, 2), torch.ones(3, 2, 2)]), ValueError,
     r"feedback: received list of 2, expected .*\(S = 1\)"),
    ("dfc-nudge", lambda: DeepFeedbackControl(NET, X, Y, nudge=INF), ValueError,
     r"nudge: received inf, expected a finite number > 0"),
    ("dfc-feedback_scale", lambda: DeepFeedbackControl(NET, X, Y, feedback_scale=NAN),
     ValueError, r"feedback_scale: received nan"),
    ("pc-variances", lambda: PredictiveCoding(NET, X, Y, variances=INF), ValueError,
     r"variances\[0\]: received non-finite values"),
    ("pc-tau_x", lambda: PredictiveCoding(NET, X, Y, tau_x=0.0), ValueError,
     r"tau_x: received 0\.0, expected values > 0"),
    ("pc-eta-complex", lambda: PredictiveCoding(NET, X, Y, eta=torch.tensor(1j)), TypeError,
     r"eta: received a complex tensor"),
    ("pc-target-complex", lambda: PredictiveCoding(NET, X, Y.to(torch.complex128)), TypeError,
     r"target: received a complex tensor"),
    ("tp-online_gamma-inf", lambda: TargetPropagation(NET, X, Y, rule="ddtp_linear",
                                                      online_gamma=INF), ValueError,
     r"online_gamma: received inf, expected a number ≥ 0 \(finite\)"),
    ("tp-online_gamma-str", lambda: TargetPropagation(NET, X, Y, rule="ddtp_linear",
                                                      online_gamma="0.1"), ValueError,
     r"online_gamma: received '0\.1'"),
    ("tp-decoder-nan", lambda: TargetPropagation(NET, X, Y, decoders=[
        decoder(torch.full((1, 4, 2), NAN))]), ValueError,
     r"decoders\[0\]\.V: received non-finite values"),
    ("tp-decoder-shape", lambda: TargetPropagation(NET, X, Y, decoders=[
        decoder(torch.ones(1, 3, 3))]), ValueError,
     r"decoders\[0\]\.V: received shape \(1, 3, 3\), expected \[S, 4, 2\]"),
    ("tp-decoder-bias-complex", lambda: TargetPropagation(NET, X, Y, decoders=[
        decoder(torch.ones(1, 4, 2), torch.ones(1, 1, 4, dtype=torch.complex128))]), TypeError,
     r"decoders\[0\]\.c: received a complex tensor"),
    ("tp-beta", lambda: TargetPropagation(NET, X, Y, rule="ddtp_linear", beta=0.0), ValueError,
     r"beta: received 0\.0, expected values > 0"),
    ("tp-feedback-nan", lambda: TargetPropagation(NET3, X, Y, rule="ddtp_linear", feedback=[
        torch.full((4, 2), NAN), torch.ones(4, 2)]), ValueError,
     r"feedback\[0\]: received non-finite values"),
    ("tp-anchor", lambda: TargetPropagation(NET, X, Y, rule="ddtp_linear", anchor=INF),
     ValueError, r"anchor: received inf"),
    ("ld-decoders-complex", lambda: LocalDecoders(SIG, X, Y, decoders=[
        torch.ones(1, 2, 4, dtype=torch.complex128)]), TypeError,
     r"decoders\[0\]: received a complex tensor"),
    ("ld-eta", lambda: LocalDecoders(SIG, X, Y, eta=NAN), ValueError,
     r"eta: received non-finite values"),
    ("ld-decoder_seed", lambda: LocalDecoders(SIG, X, Y, decoder_seed=2 ** 62), ValueError,
     r"decoder_seed: received"),
    ("fa-feedback-nan", lambda: ClosedForm("feedback_alignment",
                                           feedback=[torch.full((1, 4, 2), NAN)]), ValueError,
     r"feedback\[0\]: received non-finite values"),
    ("fa-feedback-unused", lambda: ClosedForm("backprop", feedback=[torch.ones(1, 4, 2)]),
     ValueError, r"feedback: received matrices for credit 'backprop', expected None"),
    ("fa-feedback-shape", lambda: Plastic(ClosedForm("feedback_alignment",
                                                     feedback=[torch.ones(1, 2, 4)]), NET, X, Y),
     ValueError, r"feedback: received shapes \[\(1, 2, 4\)\], expected"),
    ("plastic-eta", lambda: Plastic(ClosedForm("backprop"), NET, X, Y, eta=INF), ValueError,
     r"eta: received non-finite values"),
    ("plastic-theta", lambda: Plastic(ClosedForm("backprop"), NET, X, Y, theta=0.0), ValueError,
     r"theta: received 0\.0, expected a finite number > 0"),
    ("fl-eta", lambda: FeedbackLearning(eta=INF), ValueError,
     r"feedback\.eta: received inf, expected a finite number > 0"),
    ("fl-sigma", lambda: FeedbackLearning(sigma=INF), ValueError, r"feedback\.sigma: received inf"),
    ("rl-seed", lambda: ReconstructionLearning(NET, X, [decoder(torch.ones(1, 4, 2),
                                                                torch.ones(1, 1, 4))], seed=1.5),
     ValueError, r"seed: received 1\.5, expected an int"),
    ("rl-decoder-nan", lambda: ReconstructionLearning(NET, X, [
        decoder(torch.full((1, 4, 2), NAN), torch.ones(1, 1, 4))]), ValueError,
     r"decoders\[0\]\.V: received non-finite values"),
    ("drl-feedback-nan", lambda: DifferenceReconstruction(NET3, X, feedback=[
        torch.full((4, 2), NAN), torch.ones(4, 2)]), ValueError,
     r"feedback\[0\]: received non-finite values"),
    ("drl-sigma", lambda: DifferenceReconstruction(NET3, X, sigma=0.0), ValueError,
     r"sigma: received 0\.0, expected a finite number > 0"),
]

ANALYSIS = [
    ("analyse-dt-negative", lambda: analyse_circuit(di(), method="euler", dt=-0.1), ValueError,
     r"dt: received -0\.1, expected a finite number > 0"),
    ("analyse-dt-nan", lambda: analyse_circuit(di(), method="rk4", dt=NAN), ValueError,
     r"dt: received nan"),
    ("analyse-dt-without-method", lambda: analyse_circuit(di(), dt=0.1), ValueError,
     r"dt: received 0\.1 without a method"),
    ("analyse-method", lambda: analyse_circuit(di(), method="rk5", dt=0.1), ValueError,
     r"method: received 'rk5', expected one of"),
    ("analyse-y-missing", lambda: analyse_circuit(*(lambda c, y: (c, {"u_2": y["u_2"]}))(
        *di_state())), ValueError, r"y: received populations \['u_2'\], expected"),
    ("analyse-y-nan", lambda: analyse_circuit(*(lambda c, y: (c, {**y, "u_2": y["u_2"] * NAN}))(
        *di_state())), ValueError, r"y\['u_2'\]: received non-finite values"),
    ("analyse-tol", lambda: analyse(-torch.eye(2)[None], tol=NAN), ValueError,
     r"tol: received nan"),
    ("analyse-J-nan", lambda: analyse(torch.full((1, 2, 2), NAN)), ValueError,
     r"J: received non-finite values"),
    ("analyse-J-shape", lambda: analyse(torch.ones(1, 2, 3)), ValueError,
     r"J: received shape \(1, 2, 3\), expected \[S, D, D\]"),
    ("jacobian-t", lambda: jacobian(*di_state(), t=INF), ValueError, r"t: received inf"),
    ("jacobian-y", lambda: jacobian(di(), {}), TypeError, r"y: received dict, expected a "
                                                           r"non-empty"),
    ("stabilise-margin", lambda: stabilise_feedback(lambda l, B: B, 2, -torch.eye(2)[None],
                                                    margin=NAN), ValueError,
     r"margin: received nan"),
    ("stabilise-max_steps", lambda: stabilise_feedback(lambda l, B: B, 2, -torch.eye(2)[None],
                                                       max_steps=0), ValueError,
     r"max_steps: received 0, expected an integer ≥ 1"),
    ("stabilise-B-nan", lambda: stabilise_feedback(lambda l, B: B, 2,
                                                   torch.full((1, 2, 2), NAN)), ValueError,
     r"B: received non-finite values"),
    ("ssa-epsilon", lambda: smoothed_spectral_abscissa(-torch.eye(2)[None], epsilon=0.0),
     ValueError, r"epsilon: received 0\.0"),
    ("gauss-newton-damping", lambda: gauss_newton(NET, fwd(), Y[None], damping=-1.0),
     ValueError, r"damping: received -1\.0, expected a finite number ≥ 0"),
    ("angle-dims", lambda: angle(torch.ones(2, 3), torch.ones(2, 3), dims=0), ValueError,
     r"dims: received 0, expected an integer ≥ 1"),
    ("alignment-layers", lambda: alignment(fwd(), [Y[None], Y[None]], {}, layers=[5]),
     ValueError, r"layers: received \[5\], expected layer numbers 1\.\.2"),
    ("fa-credit-feedback-count", lambda: feedback_alignment(NET3, NET3.forward(X), Y[None],
                                                            [torch.ones(1, 4, 4)]), ValueError,
     r"feedback: received list of 1, expected 2 matrices"),
]

CASES = NETWORK + DRIVES + PARAMETERS + ANALYSIS


def test_catalogue_size():
    assert len(CASES) >= 40
    assert len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize("build,error,match",
                         [pytest.param(b, e, m, id=name) for name, b, e, m in CASES])
def test_bad_construction_is_refused_naming_the_parameter(build, error, match):
    with pytest.raises(error, match=match) as info:
        build()
    assert "received" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_on_a_cpu_build_names_the_device():
    with pytest.raises(ValueError, match=r"device: received 'cuda', but no CUDA device is "
                                         r"available"):
        ForwardNetwork([3, 4, 2], device="cuda")


# -- valid edge cases that must keep working ---------------------------------------------------

def finite_field(circuit):
    y = circuit.initial_state()
    dy = circuit.vector_field(0.0, y)
    assert set(dy) == set(y)
    return all(torch.isfinite(v).all() for v in dy.values())


@pytest.mark.parametrize("dtype", [F32, F64])
def test_one_replica_one_example_in_float32_and_float64(dtype):
    net = ForwardNetwork([3, 4, 2], dtype=dtype, device=torch.device("cpu"), seed=[5])
    assert net.replicas == 1 and net.weights[0].dtype == dtype
    x, y = X[:1].to(dtype), Y[:1].to(dtype)
    for c in (DynamicInversion(net, x, y), DeepFeedbackControl(net, x, y),
              PredictiveCoding(net, x, y), TargetPropagation(net, x, y, rule="ddtp_linear"),
              Plastic(ClosedForm("backprop"), net, x, y)):
        assert c.S == 1 and finite_field(c)
        assert all(v.dtype == dtype for v in c.initial_state().values())
    report = analyse_circuit(DynamicInversion(net, x, y), method="euler", dt=0.1)
    assert report.spectral_radius.shape == (1,)


def test_integer_and_float32_inputs_are_converted_harmlessly():
    x_int = torch.tensor([[1, 0, -1]])
    c = DynamicInversion(NET, x_int, Y[:1].float())
    assert c.x.dtype == F64 and torch.equal(c.x[0, 0], torch.tensor([1.0, 0.0, -1.0], dtype=F64))


def test_valid_per_replica_and_shared_inputs():
    net = replica_network([3, 4, 2], seeds=torch.tensor([3, 4, 3]),
                          scales=torch.tensor([1.0, 1.0, 0.5]))
    assert net.replicas == 3
    c = DynamicInversion(net, X, Y, alpha=[0.1, 0.2, 0.3], feedback=[torch.ones(1, 4, 2)])
    assert c.S == 3 and finite_field(c)
    fa = Plastic(ClosedForm("feedback_alignment", feedback=[torch.ones(1, 4, 2)]), net, X, Y)
    assert finite_field(fa)
    assert FeedbackLearning(duration=math.inf).duration == math.inf
    assert ForwardNetwork([3, 4, 2], scale=0.5, bias=False).biases is None
