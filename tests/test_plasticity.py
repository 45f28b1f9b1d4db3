"""Weights as state (circuits.plasticity) and training as one integration (solvers.training),
float64, against autograd, the closed-form credits and uninterrupted runs."""
import math

import pytest
import torch

from circuits import (ArrivalGate, ClosedForm, DeepFeedbackControl, DynamicInversion,
                      ForwardNetwork, LocalDecoders, Plastic, PredictiveCoding, Settling,
                      SingleLoopDynamicInversion, Targets, credit)
from circuits.plasticity import outer_updates
from solvers import Drive, solve, train

DT = torch.float64


def data(n=24, d=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=DT), torch.randn(n, k, generator=g, dtype=DT))


X, _ = data()
#: a learnable target: a random tanh teacher of the students' shape
Y = ForwardNetwork([4, 6, 5, 3], activation="tanh", seed=7, scale=1.0).forward(X).r[-1][0]
BATCH = 6


def stream(k):
    i = (k % (X.shape[0] // BATCH)) * BATCH
    return X[i:i + BATCH], Y[i:i + BATCH]


def net(seed=1, **kw):
    return ForwardNetwork([4, 6, 5, 3], activation="tanh", seed=seed, **kw)


def loss_gradients(network, x, y):
    """−∂/∂θ of mean_B ½‖y − r_L‖² by autograd, for every W and b."""
    W = [w.clone().requires_grad_() for w in network.weights]
    b = [v.clone().requires_grad_() for v in network.biases]
    out = network.with_parameters(W, b).forward(x).r[-1]
    loss = 0.5 * ((out - y) ** 2).sum(-1).mean()
    grads = torch.autograd.grad(loss, W + b)
    return [-g for g in grads[:len(W)]], [-g for g in grads[len(W):]]


def assert_is_sgd(y, network, eta, presentations):
    """The weights of state ``y`` equal ``presentations`` SGD steps (rate η, autograd) on the
    stream from ``network`` to 1e-12, and moved (> 0.01)."""
    W, b = list(network.weights), list(network.biases)
    for k in range(presentations):
        gW, gb = loss_gradients(network.with_parameters(W, b), *stream(k))
        W = [w + eta * g for w, g in zip(W, gW)]
        b = [v + eta * g for v, g in zip(b, gb)]
    for l in range(network.L):
        torch.testing.assert_close(y[f"W_{l + 1}"], W[l], rtol=0, atol=1e-12)
        torch.testing.assert_close(y[f"b_{l + 1}"], b[l], rtol=0, atol=1e-12)
    assert max((y[f"W_{l + 1}"] - network.weights[l]).abs().max()
               for l in range(network.L)) > 0.01


def test_backprop_flow_is_the_negative_loss_gradient():
    c = Plastic(ClosedForm("backprop"), net(), *stream(0), eta=0.3)
    y = c.initial_state()
    d = c.vector_field(0.0, y)
    gW, gb = loss_gradients(c.network, *stream(0))
    for l in range(3):
        torch.testing.assert_close(d[f"W_{l + 1}"], 0.3 * gW[l], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(d[f"b_{l + 1}"], 0.3 * gb[l], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["pseudo_backprop", "feedback_alignment", "ndi"])
def test_closed_form_flows_use_the_credit_modules(name):
    kw = {"alpha": 0.05} if name == "ndi" else {}
    fam = ClosedForm(name, **kw)
    c = Plastic(fam, net(), *stream(0), eta=1.0)
    d = c.vector_field(0.0, c.initial_state())
    n = c.network
    fwd = n.forward(stream(0)[0])
    dL = fwd.dphi[-1] * (n.output_like(stream(0)[1]) - fwd.r[-1])
    if name == "pseudo_backprop":
        deltas = credit.pseudo_backprop(n, fwd, dL)
    elif name == "feedback_alignment":
        deltas = credit.feedback_alignment(n, fwd, dL, fam.feedback)
    else:
        di = DynamicInversion(n, *stream(0), alpha=0.05)
        deltas = di.credits(di.steady_state())
    ref = outer_updates(deltas, fwd.r[:-1], True)
    for l, (dW, db) in enumerate(ref, 1):
        torch.testing.assert_close(d[f"W_{l}"], dW, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(d[f"b_{l}"], db, rtol=1e-12, atol=1e-14)
    if name == "feedback_alignment":     # FA's feedback is fixed: not the transpose
        assert credit.angle(deltas[0], credit.backprop(n, fwd, dL)[0]).max() > 1.0


def test_settled_dynamic_inversion_learns_ndi_direction_and_the_gate_follows_settling():
    """DI's populations settle on a presented example; the weight velocity then points along
    NDI's update, and the settle gate is shut right after the input changes and open once
    settled."""
    fam = Settling(DynamicInversion, alpha=0.05, k_i=5.0, k_p=1.0)
    c = Plastic(fam, net(), *stream(0), eta=1e-9)
    drive = Drive(c, stream, period=1e3)
    sol = solve(drive, c.initial_state(), 0.0, 200.0, dt=0.01, method="exp_euler",
                steady_state=False)
    y = sol.y1
    obs = c.observe(y)
    assert obs["gate"].item() > 0.999
    d = c.vector_field(200.0, y)
    ndi = Plastic(ClosedForm("ndi", alpha=0.05, k_i=5.0, k_p=1.0), c.network_of(y),
                  *stream(0), eta=1e-9).vector_field(0.0, {**{k: v for k, v in y.items()
                                                              if k[:2] in ("W_", "b_")}})
    for l in (1, 2, 3):
        assert credit.angle(d[f"W_{l}"], ndi[f"W_{l}"]).item() < 1e-4
    c.present(*stream(1))                 # a new input: the populations must move again
    assert c.observe(y)["gate"].item() < 1e-6


@pytest.mark.parametrize("family", [
    ClosedForm("backprop"),
    Settling(DynamicInversion, alpha=0.05, k_i=5.0, k_p=1.0),
    Settling(SingleLoopDynamicInversion, alpha=0.05, k_i=5.0, k_p=1.0),
    Settling(DeepFeedbackControl, alpha=0.05, nudge=1.0),
    Targets("ddtp_linear", beta=0.5),
], ids=repr)
def test_every_family_learns_the_teacher_in_one_integration(family):
    """16 presentations (4 passes over 4 minibatches) of a period of 10 with the settle gate:
    every family at least halves the loss (measured: ×0.15 BP, ×0.21 DI, ×0.39 SDI, ×0.23 DFC,
    ×0.17 DDTP-linear)."""
    network = net()
    c = Plastic(family, network, *stream(0), eta=0.2)
    r = train(c, c.initial_state(), stream, period=10.0, presentations=16, dt=0.05, chunk=4,
              method="exp_euler")
    assert not r.diverged.any()

    def loss(n):
        return 0.5 * ((n.forward(X).r[-1][0] - Y) ** 2).sum(-1).mean().item()
    assert loss(c.network_of(r.y)) < 0.5 * loss(network)


def test_chunking_and_resume_are_bit_for_bit():
    def run(pieces):
        fam = Settling(DynamicInversion, alpha=0.05, k_i=5.0)
        c = Plastic(fam, net(), *stream(0), eta=0.2)
        y, diverged, start = c.initial_state(), None, 0
        for chunk, stop in pieces:
            c = Plastic(fam, net(), *stream(0), eta=0.2)   # a fresh process
            r = train(c, y, stream, period=1.5, presentations=stop, dt=0.05, chunk=chunk,
                      start=start, diverged=diverged)
            y, diverged, start = r.y, r.diverged, r.presentations
        return y
    whole = run([(3, 12)])
    resumed = run([(3, 6), (3, 12)])
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    single = run([(12, 12)])
    assert all(torch.equal(whole[k], single[k]) for k in whole)


def test_replicas_are_independent_and_a_diverging_one_is_held():
    """A sweep over η in one integration: each replica equals its solo run; the one whose η is
    far too large is flagged diverged and held at a finite state."""
    etas = [0.1, 0.3, 1e4]
    fam = ClosedForm("backprop")
    c = Plastic(fam, net(), *stream(0), eta=etas)
    r = train(c, c.initial_state(), stream, period=1.0, presentations=8, dt=0.1, chunk=2,
              divergence_bound=1e3)
    assert r.diverged.tolist() == [False, False, True]
    assert all(torch.isfinite(v).all() for v in r.y.values())
    for s, eta in enumerate(etas[:2]):
        solo = Plastic(fam, net(), *stream(0), eta=eta)
        rs = train(solo, solo.initial_state(), stream, period=1.0, presentations=8, dt=0.1,
                   chunk=2)
        for k in rs.y:
            torch.testing.assert_close(r.y[k][s], rs.y[k][0], rtol=1e-13, atol=1e-15)


def test_sweep_over_alpha_trains_all_networks_at_once():
    alphas = [1e-3, 1e-2, 1e-1]
    c = Plastic(Settling(DynamicInversion, alpha=alphas, k_i=5.0), net(), *stream(0), eta=0.2,
                gate="always")
    assert c.S == 3 and c.initial_state()["W_1"].shape == (3, 6, 4)
    r = train(c, c.initial_state(), stream, period=1.0, presentations=4, dt=0.05, chunk=4)
    solo = Plastic(Settling(DynamicInversion, alpha=alphas[1], k_i=5.0), net(), *stream(0),
                   eta=0.2, gate="always")
    rs = train(solo, solo.initial_state(), stream, period=1.0, presentations=4, dt=0.05,
               chunk=4)
    torch.testing.assert_close(r.y["W_1"][1], rs.y["W_1"][0], rtol=1e-12, atol=1e-14)
    assert not torch.equal(r.y["W_1"][0], r.y["W_1"][2])


def test_drive_shows_the_teacher_only_from_teacher_from():
    network = ForwardNetwork([4, 5, 3], activation="tanh", seed=0)
    pc = PredictiveCoding(network, *stream(0))
    drive = Drive(pc, stream, period=2.0, teacher_from=1.5)
    drive.vector_field(0.2, pc.initial_state())
    assert pc.teacher.item() == 0.0
    drive.vector_field(1.5, pc.initial_state())
    assert pc.teacher.item() == 1.0
    drive.vector_field(2.0, pc.initial_state())            # the next example, free again
    assert pc.teacher.item() == 0.0 and torch.equal(pc.x[0], stream(1)[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(period=0.0), "period"), (dict(period=1.0, start=3, chunk=2), "start"),
    (dict(period=1.0, presentations=0), "presentations"),
    (dict(period=1.0, teacher_from=1.0), "teacher_from")])
def test_train_rejects_bad_arguments(kwargs, match):
    c = Plastic(ClosedForm("backprop"), net(), *stream(0))
    args = dict(presentations=4, dt=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        train(c, c.initial_state(), stream, **args)


def test_plastic_rejects_bad_arguments():
    with pytest.raises(TypeError, match="family"):
        Plastic("backprop", net(), *stream(0))
    with pytest.raises(ValueError, match="gate"):
        Plastic(ClosedForm("backprop"), net(), *stream(0), gate="sometimes")
    with pytest.raises(ValueError, match="credit"):
        ClosedForm("hebbian")
    with pytest.raises(ValueError, match="alpha"):
        ClosedForm("backprop", alpha=0.1)
    c = Plastic(ClosedForm("backprop"), net(), *stream(0))
    with pytest.raises(ValueError, match="expected B = 6"):
        c.present(X[:6], Y[:5])
    with pytest.raises(TypeError, match="present"):
        Drive(DynamicInversion(net(), *stream(0)), stream, 1.0)
    assert math.isfinite(c.theta)


def test_fa_z_il_in_one_integration_is_sgd():
    """Predictive coding with the autonomous arrival gate, driven through one integration: a
    free phase (the input alone, Euler dt = 0.5, long enough for every error to fall below the
    gate's quiet threshold) then the teacher (Euler at dt = τ_x, teacher_dt) in every period.
    Each presentation is then exactly one SGD step on ½‖y − a_L‖² (Z-IL), here over 8
    presentations (measured 1e-16). A free phase too short to go quiet leaves the gates
    disarmed: that presentation is simply not learned (measured: 0.03 off SGD at 60)."""
    network = ForwardNetwork([4, 6, 5, 3], activation="tanh", seed=1)
    L, eta, free = network.L, 0.1, 80.0
    pc = PredictiveCoding(network, stream(0)[0], None, eta=eta, plasticity=ArrivalGate())
    r = train(pc, pc.initial_state(), stream, period=free + L + 1, presentations=8, dt=0.5,
              teacher_from=free, teacher_dt=1.0, chunk=4)
    assert_is_sgd(r.y, network, eta, 8)


def test_local_decoders_learn_on_a_stream():
    """LocalDecoders owns its weights; driven by a stream of minibatches in one integration its
    local losses fall (measured on the first minibatch: 0.45 → 0.13, 0.21 → 0.14 for the two
    decoders, 0.655 → 0.631 for the output's BCE)."""
    network = ForwardNetwork([4, 8, 6, 3], activation="tanh", output_activation="sigmoid",
                             seed=2)
    target = lambda k: (stream(k)[0], (stream(k)[1] > 0).to(DT))  # noqa: E731
    c = LocalDecoders(network, *target(0), eta=0.5)
    y0 = c.initial_state()
    r = train(c, y0, target, period=1.0, presentations=24, dt=0.1, chunk=8)
    before = c.local_losses(y0)
    c.present(*target(0))
    after = c.local_losses(r.y)
    assert after[0].item() < 0.5 * before[0].item()
    assert after[1].item() < 0.8 * before[1].item()
    assert after[2].item() < before[2].item() - 0.01
