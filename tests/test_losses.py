"""Loss-gradient targets for every family (SPEC §1–§5): the target ``r_L − ∂ℒ/∂r_L`` turns each
family's own output convention into its loss-gradient form, checked against autograd for the
squared error and softmax cross-entropy, in float64."""
from __future__ import annotations

import pytest
import torch

from circuits import ClosedForm, DeepFeedbackControl, ForwardNetwork, Plastic, Settling
from circuits.losses import equivalent_target, loss_gradient, loss_value
from circuits.registry import learning_circuit
from circuits.target_propagation import TargetPropagation
from solvers import train

F64 = torch.float64


def _data(B=5, n0=4, nL=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, n0, generator=g, dtype=F64)
    labels = torch.nn.functional.one_hot(torch.randint(nL, (B,), generator=g), nL).to(F64)
    return x, labels


def _net(widths=(4, 6, 3), seed=1):
    return ForwardNetwork(list(widths), "tanh", bias=True, seed=seed, dtype=F64)


def _autograd(net, x, labels, loss):
    """``∂(mean_B ℒ)/∂W_ℓ``, ``∂(mean_B ℒ)/∂b_ℓ``, ``∂ℒ/∂a_L`` and ``∂ℒ/∂r_L`` per example."""
    W = [w.clone().requires_grad_(True) for w in net.weights]
    b = [c.clone().requires_grad_(True) for c in net.biases]
    r = x[None]
    a = None
    for l, (w, c) in enumerate(zip(W, b), 1):
        a = r @ w.transpose(-1, -2) + c
        a.retain_grad()
        r = torch.tanh(a) if l < len(W) else a
        r.retain_grad()
    if loss == "squared_error":
        per = 0.5 * ((r - labels) ** 2).sum(-1)
    else:
        per = torch.nn.functional.cross_entropy(r[0], labels, reduction="none")[None]
    per.sum().backward()
    B = x.shape[0]
    return [w.grad / B for w in W], [c.grad / B for c in b], a.grad, r.grad


@pytest.mark.parametrize("loss", ["squared_error", "cross_entropy"])
def test_loss_gradient_and_value_are_autograds(loss):
    g = torch.Generator().manual_seed(4)
    out = torch.randn(2, 5, 3, generator=g, dtype=F64, requires_grad=True)
    labels = torch.softmax(torch.randn(2, 5, 3, generator=g, dtype=F64), -1)
    value = loss_value(loss, out, labels)
    value.sum().backward()
    torch.testing.assert_close(loss_gradient(loss, out.detach(), labels), out.grad,
                               rtol=1e-14, atol=1e-15)
    if loss == "cross_entropy":
        ref = -(labels * torch.log_softmax(out.detach(), -1)).sum(-1)
        torch.testing.assert_close(value.detach(), ref, rtol=1e-14, atol=0)


def test_squared_error_targets_are_the_labels_bit_for_bit():
    out, labels = torch.randn(1, 4, 3, dtype=F64), torch.randn(1, 4, 3, dtype=F64)
    assert torch.equal(equivalent_target("squared_error", out, labels), labels)


@pytest.mark.parametrize("loss", ["squared_error", "cross_entropy"])
def test_backprop_learns_the_losss_gradient(loss):
    """One Euler step of unit length of Plastic(backprop) is −η ∂(mean_B ℒ)/∂W (autograd)."""
    x, labels = _data()
    net = _net()
    bp = Plastic(ClosedForm("backprop"), net, x, labels, eta=0.3, gate="always", loss=loss)
    y1 = train(bp, bp.initial_state(), lambda k: (x, labels), period=1.0, dt=1.0,
               presentations=1, progress=False).y
    gW, gb, _, _ = _autograd(net, x, labels, loss)
    for l in (1, 2):
        torch.testing.assert_close(y1[f"W_{l}"] - net.weights[l - 1], -0.3 * gW[l - 1],
                                   rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(y1[f"b_{l}"] - net.biases[l - 1], -0.3 * gb[l - 1],
                                   rtol=1e-12, atol=1e-15)


def test_dynamic_inversion_output_credit_is_minus_the_loss_gradient():
    x, labels = _data()
    net = _net((4, 6, 5, 3))
    for method in ("ndi", "di"):
        lc = learning_circuit(method, net, x, labels, loss="cross_entropy",
                              circuit={"alpha": 0.1})
        circuit = lc.bound(lc.initial_state())
        _, _, dL_da, _ = _autograd(net, x, labels, "cross_entropy")
        torch.testing.assert_close(circuit.delta_L, -dL_da, rtol=1e-13, atol=1e-16)


def test_dfc_nudges_the_output_down_the_losss_gradient():
    """Meulemans et al. 2021: r_L* = r_L^ff − λ ∂ℒ/∂r_L."""
    x, labels = _data()
    net = _net()
    dfc = Plastic(Settling(DeepFeedbackControl, nudge=0.05), net, x, labels, loss="cross_entropy")
    circuit = dfc.bound(dfc.initial_state())
    _, _, _, dL_dr = _autograd(net, x, labels, "cross_entropy")
    r_ff = net.forward(x).r[-1]
    torch.testing.assert_close(circuit.r_star, r_ff - 0.05 * dL_dr, rtol=1e-13, atol=1e-15)


def test_target_propagation_output_target_is_a_gradient_step_on_the_preactivation():
    """Bengio 2020 / Meulemans et al. 2020: τ_L = h_L − β ∂ℒ/∂h_L."""
    x, labels = _data()
    net = ForwardNetwork([4, 6, 3], "tanh", bias=True, seed=1, dtype=F64,
                         output_activation="tanh")
    lc = learning_circuit("ddtp_linear", net, x, labels, loss="cross_entropy",
                          circuit={"beta": 0.1})
    circuit = lc.bound(lc.initial_state())
    assert isinstance(circuit, TargetPropagation)
    out = net.forward(x)
    h = out.a[-1].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(torch.tanh(h)[0], labels, reduction="sum").backward()
    torch.testing.assert_close(circuit.output_target, out.a[-1] - 0.1 * h.grad, rtol=1e-13,
                               atol=1e-15)


def test_z_il_with_cross_entropy_is_backprop_on_cross_entropy():
    """Predictive coding clamps the output to r_L − ∂ℒ/∂r_L; Z-IL then updates every layer
    exactly by backprop's gradient of the cross-entropy."""
    x, labels = _data(B=6)
    net = _net()
    stream = lambda k: (x * (1 + 0.1 * k), labels)            # noqa: E731
    zil = learning_circuit("z_il", net, x, labels, eta=0.2, period=2.0, loss="cross_entropy")
    got = train(zil, zil.initial_state(), stream, period=2.0, dt=1.0, presentations=3,
                progress=False).y
    bp = learning_circuit("backprop", net, x, labels, eta=0.2, loss="cross_entropy")
    want = train(bp, bp.initial_state(), stream, period=1.0, dt=1.0, presentations=3,
                 progress=False).y
    for k in ("W_1", "W_2", "b_1", "b_2"):
        moved = (want[k] - bp.initial_state()[k]).abs().max()
        assert moved > 1e-3
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-12 * float(moved))


@pytest.mark.parametrize("bad", ["hinge", "mse"])
def test_an_unknown_loss_is_refused(bad):
    x, labels = _data()
    with pytest.raises(ValueError, match="loss"):
        Plastic(ClosedForm("backprop"), _net(), x, labels, loss=bad)
    with pytest.raises(ValueError, match="loss"):
        learning_circuit("z_il", _net(), x, labels, loss=bad)
    with pytest.raises(ValueError, match="loss"):
        learning_circuit("local_decoders", _net(), x, labels, loss="cross_entropy")
