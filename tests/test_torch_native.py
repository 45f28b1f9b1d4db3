"""Torch-native circuits: ``.to(device, dtype)`` on every circuit family and on the forward
network, and the ``torchdiffeq.odeint`` entry (:func:`solvers.as_odeint`)."""
import types

import pytest
import torch
import torchdiffeq

from circuits import (Circuit, DeepFeedbackControl, DynamicInversion, ForwardNetwork,
                      LocalDecoders, PredictiveCoding, SingleLoopDynamicInversion,
                      TargetPropagation, inverse_decoders)
from circuits.parameters import Population, Role
from circuits.registry import learning_circuit
from solvers import as_odeint, solve

X = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)
TARGET = torch.tensor([[0.2, 0.8], [0.6, 0.1], [0.9, 0.4], [0.3, 0.5]], dtype=torch.float64)


def _net(dtype):
    return ForwardNetwork([3, 5, 4, 2], seed=0, dtype=dtype)


def _square(dtype):
    return ForwardNetwork([3, 3, 3], seed=2, dtype=dtype)


def _learning(method, **kwargs):
    return lambda dtype: learning_circuit(method, _net(dtype), X, TARGET, **kwargs)


#: one builder per family: dtype -> circuit (S = 2 where a parameter sweep makes it so)
FAMILIES = {
    "di": lambda d: DynamicInversion(_net(d), X, TARGET, alpha=[0.1, 0.3]),
    "sdi": lambda d: SingleLoopDynamicInversion(_net(d), X, TARGET, alpha=[0.1, 0.3]),
    "dfc": lambda d: DeepFeedbackControl(_net(d), X, TARGET, alpha=[0.1, 0.01]),
    "pc": lambda d: PredictiveCoding(_net(d), X, TARGET, tau_x=[1.0, 0.5]),
    "tp_ddtp": lambda d: TargetPropagation(_net(d), X, TARGET, rule="ddtp_linear"),
    "tp_decoders": lambda d: TargetPropagation(                  # inverses: square layers
        _square(d), X, 0.3 * X, rule="iterated_output", beta=[0.1, 0.2],
        decoders=inverse_decoders(_square(d), perturbation=0.1, seed=3)),
    "local_decoders": lambda d: LocalDecoders(_net(d), X, TARGET, output_loss="mse"),
    "backprop": _learning("backprop"),
    "feedback_alignment": _learning("feedback_alignment"),
    "pseudo_backprop": _learning("pseudo_backprop"),
    "ndi": _learning("ndi"),
    "plastic_di": _learning("di", gate="settled"),
    "plastic_sdi": _learning("sdi"),
    "plastic_dfc": _learning("dfc"),
    "pc_arrival": _learning("pc"),
    "z_il": _learning("z_il"),
    "iterated_dtp": _learning("iterated_dtp"),
    "ddtp_linear": _learning("ddtp_linear"),
}


def _solve(circuit, method="euler", t1=1.0, dt=0.05):
    return solve(circuit, circuit.initial_state(), 0.0, t1, dt=dt, method=method,
                 steady_state=False, save_every=5, progress=False)


def _tensors(value, seen=None):
    """Every tensor reachable from ``value``, found independently of the package's walker:
    through any object's ``__dict__``, containers, bound methods and closure cells."""
    seen = set() if seen is None else seen
    if id(value) in seen or isinstance(value, (type, types.ModuleType, str, bytes)):
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from _tensors(v, seen)
    elif isinstance(value, types.MethodType):
        yield from _tensors(value.__self__, seen)
    elif isinstance(value, types.FunctionType):
        for cell in value.__closure__ or ():
            try:
                yield from _tensors(cell.cell_contents, seen)
            except ValueError:
                pass
    elif hasattr(value, "__dict__"):
        yield from _tensors(vars(value), seen)


# -- .to(dtype) -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_to_float32_solves_like_the_circuit_built_in_float32(family):
    build = FAMILIES[family]
    original = build(torch.float64)
    before = _solve(original)
    moved = original.to(dtype=torch.float32)
    assert moved is not original
    got, want = _solve(moved), _solve(build(torch.float32))
    for name, v in want.ys.items():
        assert got.ys[name].dtype == torch.float32
        scale = float(v.abs().max()) + 1.0
        assert torch.allclose(got.ys[name], v, rtol=1e-4, atol=1e-5 * scale), name
    # the original is untouched: still float64, and it solves bit for bit as before
    assert original.network.dtype == torch.float64
    after = _solve(original)
    for name, v in before.ys.items():
        assert after.ys[name].dtype == torch.float64 and torch.equal(after.ys[name], v), name


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_after_to_float32_no_float64_tensor_is_reachable(family):
    original = FAMILIES[family](torch.float64)
    assert any(t.dtype == torch.float64 for t in _tensors(original))     # the walk finds them
    moved = original.to(torch.float32)
    left = [tuple(t.shape) for t in _tensors(moved) if t.dtype == torch.float64]
    assert not left, f"float64 tensors still reachable after .to(float32): {left}"
    assert moved.network.dtype == torch.float32
    back = moved.to(torch.float64)
    assert not [t for t in _tensors(back) if t.dtype == torch.float32]
    assert back.network.dtype == torch.float64


@pytest.mark.parametrize("family", ["di", "dfc", "pc", "plastic_di", "iterated_dtp"])
def test_round_trip_through_float32_agrees_to_float32_rounding(family):
    original = FAMILIES[family](torch.float64)
    same = original.to(torch.float64)             # nothing to convert: a copy, bit for bit
    round_trip = original.to(torch.float32).to(torch.float64)
    want = _solve(original)
    exact, rounded = _solve(same), _solve(round_trip)
    for name, v in want.ys.items():
        assert torch.equal(exact.ys[name], v), name
        assert rounded.ys[name].dtype == torch.float64
        scale = float(v.abs().max()) + 1.0
        assert torch.allclose(rounded.ys[name], v, rtol=1e-5, atol=1e-6 * scale), name


def test_to_keeps_sharing_and_expanded_drives():
    plastic = FAMILIES["plastic_di"](torch.float64)
    moved = plastic.to(torch.float32)
    assert moved.template is moved.network and moved._held is moved.circuit
    di = FAMILIES["di"](torch.float64)
    assert 0 in di.x.stride()                      # a [B, n] input shared by the replicas
    assert 0 in di.to(torch.float32).x.stride()    # converted once, not materialised S times


def test_forward_network_to():
    net = ForwardNetwork([3, 4, 2], seed=1, replicas=3)
    low = net.to(torch.float32)
    assert low is not net and low.dtype == torch.float32 and net.dtype == torch.float64
    assert all(w.dtype == torch.float32 for w in low.weights + low.biases)
    assert torch.equal(low.weights[0], net.weights[0].float())
    assert low.replicas == 3 and low.forward(X).r[-1].dtype == torch.float32


class _Indexed(Circuit):
    """A circuit holding what the walker must reach: an integer index tensor, a tuple, a dict
    of tensors, a closure over a tensor and a bound method of itself."""

    def __init__(self):
        self.S = 1
        self.populations = [Population("v", Role.FORWARD, 3, 1)]
        self.order = torch.tensor([2, 0, 1])
        self.scales = ({"a": torch.full((1, 1, 3), 0.5, dtype=torch.float64)},)
        rate = torch.ones(1, 1, 3, dtype=torch.float64)
        self.rate = lambda: rate
        self.field = self._field

    def initial_state(self):
        return {"v": torch.ones(1, 2, 3, dtype=self.rate().dtype)}

    def _field(self, y):
        return -self.rate() * y[..., self.order] * self.scales[0]["a"]

    def vector_field(self, t, y):
        return {"v": self.field(y["v"])}


def test_to_converts_floats_keeps_integers_and_rebinds_methods():
    c = _Indexed()
    low = c.to(dtype=torch.float32)
    assert low.order.dtype == torch.int64 and torch.equal(low.order, c.order)
    assert low.scales[0]["a"].dtype == torch.float32 and low.rate().dtype == torch.float32
    assert low.field.__self__ is low                    # the copy's own method
    assert c.rate().dtype == torch.float64              # the original's closure untouched
    out = low.vector_field(0.0, low.initial_state())["v"]
    assert out.dtype == torch.float32
    assert torch.equal(out.double(), c.vector_field(0.0, c.initial_state())["v"])


@pytest.mark.parametrize("bad, error, words", [
    (dict(dtype=torch.int64), ValueError, ("dtype", "torch.int64", "floating")),
    (dict(dtype=torch.float16), ValueError, ("dtype", "torch.float16", "floating")),
    (dict(dtype="float32"), TypeError, ("dtype", "'float32'", "floating")),
    (dict(device="nowhere"), ValueError, ("device", "'nowhere'",)),
])
def test_to_names_what_is_wrong(bad, error, words):
    c = FAMILIES["di"](torch.float64)
    for target in (c, c.network):
        with pytest.raises(error) as info:
            target.to(**bad)
        assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.cuda
@pytest.mark.parametrize("family", ["di", "dfc", "pc", "plastic_di", "iterated_dtp"])
def test_to_cuda_solves_like_the_cpu(family):
    cpu = FAMILIES[family](torch.float64)
    gpu = cpu.to("cuda")
    assert all(t.device.type == "cuda" for t in _tensors(gpu))
    assert gpu.network.device == torch.device("cuda", torch.cuda.current_device())
    want, got = _solve(cpu, "rk4"), _solve(gpu, "rk4")
    for name, v in want.ys.items():
        assert got.ys[name].device.type == "cuda"
        assert torch.allclose(got.ys[name].cpu(), v, rtol=0, atol=1e-12), name
    back = gpu.to("cpu")
    assert all(t.device.type == "cpu" for t in _tensors(back))


# -- torchdiffeq.odeint -----------------------------------------------------------------------

ODE_FAMILIES = ["di", "dfc", "pc", "plastic_di"]


@pytest.mark.parametrize("family", ODE_FAMILIES)
@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_odeint_fixed_grid_matches_solve(family, method):
    circuit = FAMILIES[family](torch.float64)
    y0 = circuit.initial_state()
    dt, ts = 0.05, torch.linspace(0.0, 2.0, 11, dtype=torch.float64)
    func, y0_flat, unpack = as_odeint(circuit, y0)
    assert y0_flat.shape == (sum(v.numel() for v in y0.values()),)
    ys = torchdiffeq.odeint(func, y0_flat, ts, method=method, options={"step_size": dt})
    got = unpack(ys)
    want = solve(circuit, y0, 0.0, 2.0, dt=dt, method=method, save_at=ts,
                 steady_state=False, progress=False)
    assert set(got) == set(y0)
    for name, v in want.ys.items():
        assert got[name].shape == (11, *y0[name].shape)
        assert torch.allclose(got[name], v, rtol=0, atol=1e-12), name
    assert func.evaluations >= 40 * (1 if method == "euler" else 2)


@pytest.mark.parametrize("family", ODE_FAMILIES)
def test_odeint_rk4_agrees_with_solve_rk4_to_the_methods_accuracy(family):
    """torchdiffeq's ``rk4`` is Kutta's 3/8 rule, solve's the classic tableau: both are fourth
    order, so they agree to O(dt⁴) (~1e-6 of the trajectory's scale at dt = 0.05), not bit
    for bit."""
    circuit = FAMILIES[family](torch.float64)
    y0 = circuit.initial_state()
    dt, ts = 0.05, torch.linspace(0.0, 2.0, 11, dtype=torch.float64)
    func, y0_flat, unpack = as_odeint(circuit, y0)
    got = unpack(torchdiffeq.odeint(func, y0_flat, ts, method="rk4",
                                    options={"step_size": dt}))
    want = solve(circuit, y0, 0.0, 2.0, dt=dt, method="rk4", save_at=ts, steady_state=False,
                 progress=False)
    fine = solve(circuit, y0, 0.0, 2.0, dt=dt / 8, method="rk4", save_at=ts,
                 steady_state=False, progress=False)
    for name, v in want.ys.items():
        scale = float(v.abs().max()) + 1.0
        assert torch.allclose(got[name], v, rtol=0, atol=1e-6 * scale), name
        assert torch.allclose(got[name], fine.ys[name], rtol=0, atol=1e-6 * scale), name


@pytest.mark.parametrize("family", ["di", "dfc"])
def test_odeint_dopri5_reaches_the_settled_state(family):
    circuit = FAMILIES[family](torch.float64)
    y0 = circuit.initial_state()
    settled = solve(circuit, y0, 0.0, 2000.0, dt=0.02, method="rk4", atol=1e-12, rtol=1e-10,
                    progress=False)
    assert settled.converged.all()
    t_end = float(settled.t_stop.max()) * 1.5
    func, y0_flat, unpack = as_odeint(circuit, y0)
    ys = torchdiffeq.odeint(func, y0_flat, torch.tensor([0.0, t_end], dtype=torch.float64),
                            method="dopri5", rtol=1e-10, atol=1e-12)
    final = unpack(ys[-1])
    for name, v in settled.y1.items():
        scale = float(v.abs().max()) + 1.0
        assert torch.allclose(final[name], v, rtol=0, atol=1e-7 * scale), name


def test_odeint_takes_a_plain_callable_and_checks_its_input():
    rate = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    y0 = {"v": torch.ones(2, 3, dtype=torch.float64)}
    func, y0_flat, unpack = as_odeint(lambda t, y: {"v": -rate * y["v"]}, y0)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ys = unpack(torchdiffeq.odeint(func, y0_flat, ts, method="dopri5", rtol=1e-10, atol=1e-12))
    assert torch.allclose(ys["v"][-1], torch.exp(-rate).expand(2, 3), atol=1e-9)
    with pytest.raises(ValueError, match=r"y: received .*\[6\]"):
        func(0.0, torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"ys: received .*\[\.\.\., 6\]"):
        unpack(torch.ones(3, 5, dtype=torch.float64))
    circuit = FAMILIES["di"](torch.float64)
    with pytest.raises(ValueError, match="y0: received populations"):
        as_odeint(circuit, {"v": torch.ones(2, 3, dtype=torch.float64)})
    with pytest.raises(ValueError, match="y0: received dtype torch.float32"):
        as_odeint(circuit, {k: v.float() for k, v in circuit.initial_state().items()})
