"""Every learning circuit steps without synchronising with the host.

A step that reads a tensor's value on the host (``.item()``, ``bool(t)``, ``if t``) stalls the
pipeline and makes a chunk of steps uncapturable. Here every family's presentation
(``present(..., check=False)``, the jump a drive makes inside a chunk) and a chunk of steps is run
under a dispatch mode that counts ``aten::_local_scalar_dense`` — the op every host read goes
through — and the count must be zero.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from circuits import (ArrivalGate, ClosedForm, DeepFeedbackControl, DynamicInversion,
                      ForwardNetwork, LocalDecoders, Plastic, PredictiveCoding, Schedule,
                      Settling, SingleLoopDynamicInversion, Targets, inverse_decoders)
from solvers import Layout
from solvers.methods import EULER, rk_step
from solvers.partitioned import PartitionedExponential

DT = torch.float64
G = torch.Generator().manual_seed(7)
X = torch.randn(24, 4, generator=G, dtype=DT)
Y = torch.randn(24, 3, generator=G, dtype=DT)


def stream(k):
    i = 6 * (k % 4)
    return X[i:i + 6], Y[i:i + 6]


class HostReads(TorchDispatchMode):
    """Counts ``aten::_local_scalar_dense`` (``.item()``, ``bool()``, ``float()`` of a tensor)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def net(**kw):
    return ForwardNetwork([4, 6, 5, 3], activation="tanh", seed=[0, 1], **kw)


def square():
    return ForwardNetwork([4, 4, 4, 4], activation="tanh", init="orthogonal", scale=0.5,
                          seed=[0, 1])


FAMILIES = {
    "backprop": lambda: Plastic(ClosedForm("backprop"), net(), *stream(0)),
    "feedback_alignment": lambda: Plastic(ClosedForm("feedback_alignment"), net(), *stream(0)),
    "pseudo_backprop": lambda: Plastic(ClosedForm("pseudo_backprop"), net(), *stream(0)),
    "ndi": lambda: Plastic(ClosedForm("ndi", alpha=0.05), net(), *stream(0)),
    "di": lambda: Plastic(Settling(DynamicInversion, alpha=0.05, k_i=5.0), net(), *stream(0)),
    "sdi": lambda: Plastic(Settling(SingleLoopDynamicInversion, alpha=0.05), net(), *stream(0)),
    "dfc": lambda: Plastic(Settling(DeepFeedbackControl, alpha=0.05, k_p=1.0), net(),
                           *stream(0)),
    "iterated_dtp": lambda: Plastic(
        Targets("iterated_output", beta=0.05, anchor=0.5,
                feedback=lambda n, x: inverse_decoders(n, perturbation=0.1)),
        square(), 0.3 * stream(0)[0], 0.1 * stream(0)[0]),
    "ddtp_linear": lambda: Plastic(Targets("ddtp_linear", beta=0.1), net(), *stream(0)),
    "dfa": lambda: Plastic(Targets("dfa", beta=0.1), net(), *stream(0)),
    "il": lambda: PredictiveCoding(net(), *stream(0), eta=0.1,
                                   plasticity=Schedule.z_il(3)),
    "fa_z_il": lambda: PredictiveCoding(net(), stream(0)[0], None, eta=0.1,
                                        plasticity=ArrivalGate()),
    "local_decoders": lambda: LocalDecoders(
        ForwardNetwork([4, 6, 5, 3], "tanh", output_activation="sigmoid", seed=[0, 1]),
        stream(0)[0], (stream(0)[1] > 0).to(DT), eta=0.5),
}


def _target(name, k):
    x, y = stream(k)
    if name == "iterated_dtp":                   # square layers: the output has 4 units
        return 0.3 * x, 0.1 * x
    return (x, (y > 0).to(DT)) if name == "local_decoders" else (x, y)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_chunk_of_steps_reads_nothing_on_the_host(name):
    circuit = FAMILIES[name]()
    y = circuit.initial_state()
    layout = Layout(y)
    field = lambda t, v: layout.pack(circuit.vector_field(t, layout.unpack(v)))  # noqa: E731
    yf = layout.pack(y)
    rk_step(EULER, field, 0.0, yf, 0.1)                          # warm-up outside the count
    stepper = None
    if getattr(circuit, "fast", None):
        stepper = PartitionedExponential(circuit, layout)
        stepper.jump(0.0, yf)                                    # linearised at a jump
        stepper(0.0, yf, 0.1)
    with HostReads() as reads:
        for k in range(1, 4):
            x, target = _target(name, k)
            if name == "fa_z_il":
                circuit.present(x, None, layout.unpack(yf), check=False)
            else:
                circuit.present(x, target, layout.unpack(yf), check=False)
            for i in range(5):
                yf, _ = rk_step(EULER, field, 0.1 * i, yf, 0.1)
                if stepper is not None:
                    yf = stepper(0.1 * i, yf, 0.1)
    assert reads.count == 0
    assert torch.isfinite(yf).all()


def test_plastic_rebinds_instead_of_rebuilding():
    """An evaluation binds the built circuit to the state's weights: the result equals a
    circuit built from scratch on those weights (1e-12), and the constructor is not called."""
    c = Plastic(Settling(DynamicInversion, alpha=0.05, k_i=5.0, k_p=1.0), net(), *stream(0))
    y = c.initial_state()
    y = {k: v + 0.01 * torch.randn(v.shape, generator=G, dtype=DT) for k, v in y.items()}
    calls = []
    init = DynamicInversion.__init__
    DynamicInversion.__init__ = lambda self, *a, **k: (calls.append(1), init(self, *a, **k))[1]
    try:
        d = c.vector_field(0.0, y)
    finally:
        DynamicInversion.__init__ = init
    assert not calls
    fresh = DynamicInversion(c.network_of(y), *stream(0), alpha=0.05, k_i=5.0, k_p=1.0)
    ref = fresh.vector_field(0.0, {k: y[k] for k in c.fast})
    for k in c.fast:
        torch.testing.assert_close(d[k], ref[k], rtol=1e-12, atol=1e-14)


def test_z_il_in_one_integration_is_sgd():
    """Z-IL trained in one integration: every presentation jumps the values to the feed-forward
    pass (C1, ``reset="feed_forward"``), the teacher clamps the output and L Euler steps of
    dt = τ_x (C3) follow with W_ℓ learning at step L − ℓ (C2, a schedule restarting every
    period). Each presentation is then one SGD step on ½‖y − a_L‖² (batch mean): the weights
    after 8 presentations equal autograd's SGD to 1e-12."""
    from solvers import train
    from tests.test_plasticity import assert_is_sgd, stream as sgd_stream
    network = ForwardNetwork([4, 6, 5, 3], activation="tanh", seed=1)
    L, eta = network.L, 0.1
    pc = PredictiveCoding(network, *sgd_stream(0), eta=eta, reset="feed_forward",
                          plasticity=Schedule.z_il(L, cycle=float(L)))
    r = train(pc, pc.initial_state(), sgd_stream, period=float(L), presentations=8, dt=1.0,
              chunk=4)
    assert_is_sgd(r.y, network, eta, 8)


def test_one_gate_protocol_gates_plastic_layers():
    """Plastic takes any gate of the one protocol: a LayerSchedule lets only layer ℓ learn in
    its window, and ``gate="settled"`` is ``Settled(theta)``."""
    from circuits import LayerSchedule, Settled
    seq = Plastic(ClosedForm("backprop"), net(), *stream(0), gate=LayerSchedule.sequential(3, 1.0))
    y = seq.initial_state()
    for t, layer in ((0.5, 1), (1.5, 2), (2.5, 3)):
        d = seq.vector_field(t, y)
        moving = [l for l in (1, 2, 3) if d[f"W_{l}"].abs().max() > 0]
        assert moving == [layer], t
    a = Plastic(Settling(DynamicInversion, alpha=0.05), net(), *stream(0), gate="settled",
                theta=0.2)
    b = Plastic(Settling(DynamicInversion, alpha=0.05), net(), *stream(0), gate=Settled(0.2))
    y = {k: v + 0.1 for k, v in a.initial_state().items()}
    for k, v in a.vector_field(0.0, y).items():
        assert torch.equal(v, b.vector_field(0.0, y)[k])
    with pytest.raises(ValueError, match="gate"):
        Plastic(ClosedForm("backprop"), net(), *stream(0), gate=ArrivalGate())


def mirrored_dtp():
    """Iterated DTP with mirrored decoders ``g(h) = V φ(h) + c`` (random, seeded)."""
    from circuits import initial_feedback
    return Plastic(Targets("iterated_output", beta=0.05, anchor=0.5,
                           feedback=lambda n, x: initial_feedback("decoders", n, scale=0.3,
                                                                  seed=4)),
                   square(), 0.3 * stream(0)[0], 0.1 * stream(0)[0])


@pytest.mark.parametrize("name", ["iterated_dtp_mirrored", "ddtp_linear", "dfa"])
def test_closed_form_jacobian_of_targets_equals_jacobian_vector_products(name):
    """``TargetPropagation.mean_jacobian`` (the batch mean of ∂τ̇/∂τ at fixed weights, used by
    ``exp_partitioned``) equals the batch mean of the Jacobian built column by column from
    Jacobian-vector products of the same field, at a state away from the fixed point
    (measured: 1e-16)."""
    circuit = mirrored_dtp() if name == "iterated_dtp_mirrored" else FAMILIES[name]()
    y = circuit.initial_state()
    g = torch.Generator().manual_seed(3)
    y = {k: v + (0.1 * torch.randn(v.shape, generator=g, dtype=DT) if k in circuit.fast
                 else 0) for k, v in y.items()}
    closed = circuit.fast_jacobian(y)
    layout = Layout(y)
    stepper = PartitionedExponential(circuit, layout)
    circuit.fast_jacobian = lambda state: None            # force the generic route
    stepper.jump(0.0, layout.pack(y))
    torch.testing.assert_close(closed, stepper.J, rtol=1e-10, atol=1e-12)
    assert closed.abs().max() > 0.1


@pytest.mark.parametrize("method", ["backprop", "feedback_alignment", "pseudo_backprop", "ndi",
                                    "di", "sdi", "dfc", "pc", "z_il", "iterated_dtp",
                                    "ddtp_linear", "local_decoders"])
def test_registered_methods_train_a_chunk_without_host_reads(method):
    """Every method of the registry, as the method table builds it (iterated DTP with decoders
    at their auto-encoder rule's fixed point, recomputed at each presentation), trains a chunk
    of 3 presentations through ``solvers.train`` after its first, checked one: the chunk's
    jumps (``present``, feedback learning, Z-IL's reset) and steps read nothing on the host
    except the one divergence check that ends the chunk."""
    from circuits.registry import learning_circuit
    from solvers import train
    from tests.test_learning_apis import registry_problem
    net, x, target = registry_problem(method)
    data = lambda k: (x * (1 + 0.1 * k), target)  # noqa: E731
    c = learning_circuit(method, net, x, target, period=3.0, gate="settled")
    method_kw = {"pc": dict(teacher_from=2.0, period=3.0, dt=1.0)}.get(
        method, dict(period=3.0, dt=1.0 if method in ("z_il", "local_decoders") else 0.5))
    counts = []
    with HostReads() as reads:
        r = train(c, c.initial_state(), data, presentations=6, chunk=3,
                  on_chunk=lambda k, y, sol: counts.append(reads.count), **method_kw)
    assert counts[1] - counts[0] == 1           # the second chunk: its divergence check only
    assert not r.diverged.any()


def test_partitioned_exponential_step_is_the_exact_flow_of_an_affine_settle():
    """DI with one hidden layer is affine in its populations at fixed weights, with the same
    Jacobian for every example; with the weights held (η = 0) two ``exp_partitioned`` steps of
    h = 5 from rest land where a fine RK4 integration of the same 10 time units does (measured:
    4e-15 relative), while two Euler steps of h = 5 are off by 1.8–14 (relative) and twenty
    of h = 0.5 by 2 %."""
    from circuits import ForwardNetwork
    from solvers import solve, train
    network = ForwardNetwork([4, 6, 3], activation="tanh", seed=[0, 1])
    c = Plastic(Settling(DynamicInversion, alpha=0.05, k_i=2.0), network, *stream(0), eta=0.0)
    fine = solve(c, c.initial_state(), 0.0, 10.0, dt=2e-3, method="rk4",
                 steady_state=False).y1
    coarse = train(c, c.initial_state(), stream, period=10.0, presentations=1, dt=5.0,
                   method="exp_partitioned").y
    euler = train(c, c.initial_state(), stream, period=10.0, presentations=1, dt=5.0).y
    for k in c.fast:
        err = ((coarse[k] - fine[k]).norm() / fine[k].norm()).item()
        assert err < 1e-12, (k, err)
        assert ((euler[k] - fine[k]).norm() / fine[k].norm()).item() > 1.0
    assert fine["delta_1"].abs().max() > 0.01
