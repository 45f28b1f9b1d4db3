"""Weight flows (circuits.weight_flow): Adam as an ODE, integrated by solvers.train, against
the Adam recurrence written out by hand with autograd's gradients, in float64."""
import pytest
import torch

from circuits import AdamFlow, ClosedForm, DynamicInversion, ForwardNetwork, Plastic, Settling
from circuits.registry import learning_circuit
from circuits.weight_flow import GradientFlow, weight_flow
from solvers import train

DT = torch.float64
g = torch.Generator().manual_seed(0)
X = torch.randn(24, 4, generator=g, dtype=DT)
Y = ForwardNetwork([4, 6, 5, 3], activation="tanh", seed=7, scale=1.0).forward(X).r[-1][0]
BATCH = 6


def stream(k):
    i = (k % (X.shape[0] // BATCH)) * BATCH
    return X[i:i + BATCH], Y[i:i + BATCH]


def net(seed=1):
    return ForwardNetwork([4, 6, 5, 3], activation="tanh", seed=seed)


def ascent(network, x, y):
    """−∂/∂θ of mean_B ½‖y − r_L‖² by autograd: every W_ℓ, then every b_ℓ."""
    params = [w.clone().requires_grad_() for w in network.weights + network.biases]
    L = network.L
    out = network.with_parameters(params[:L], params[L:]).forward(x).r[-1]
    loss = 0.5 * ((out - y) ** 2).sum(-1).mean()
    return [-q for q in torch.autograd.grad(loss, params)]


@pytest.mark.parametrize("h", [1.0, 0.5])
def test_euler_of_the_adam_flow_is_adam_one_step_behind(h):
    """Backprop's update through AdamFlow, Euler with step h for 12 minibatches of one step
    each, equals Adam with β₁ = 1 − h/τ_m, β₂ = 1 − h/τ_v and learning rate η h whose weight
    step uses the moments before the current gradient, to 1e-12; the clock is Adam's bias
    correction 1 − β^k exactly."""
    eta, tau_m, tau_v, eps, K = 0.01, 4.0, 50.0, 1e-8, 12
    network = net()
    c = Plastic(ClosedForm("backprop"), network, *stream(0), eta=eta, gate="always",
                flow=AdamFlow(tau_m=tau_m, tau_v=tau_v, eps=eps))
    r = train(c, c.initial_state(), stream, period=h, presentations=K, dt=h, chunk=4)

    b1, b2 = 1 - h / tau_m, 1 - h / tau_v
    params = list(network.weights + network.biases)
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for k in range(K):
        grads = ascent(network.with_parameters(params[:3], params[3:]), *stream(k))
        if k:
            params = [p + eta * h * (mi / (1 - b1 ** k)) / ((vi / (1 - b2 ** k)).sqrt() + eps)
                      for p, mi, vi in zip(params, m, v)]
        m = [b1 * mi + (1 - b1) * q for mi, q in zip(m, grads)]
        v = [b2 * vi + (1 - b2) * q * q for vi, q in zip(v, grads)]
    names = [f"W_{l}" for l in (1, 2, 3)] + [f"b_{l}" for l in (1, 2, 3)]
    for name, p, mi, vi in zip(names, params, m, v):
        torch.testing.assert_close(r.y[name], p, rtol=0, atol=1e-12)
        torch.testing.assert_close(r.y[f"adam_m:{name}"], mi, rtol=0, atol=1e-14)
        torch.testing.assert_close(r.y[f"adam_v:{name}"], vi, rtol=0, atol=1e-14)
        clock = torch.tensor([1 - b1 ** K, 1 - b2 ** K], dtype=DT)
        torch.testing.assert_close(r.y[f"adam_c:{name}"][0, 0], clock, rtol=0, atol=1e-14)
    moved = max((r.y[n] - p0).abs().max().item() for n, p0 in
                zip(names, network.weights + network.biases))
    assert moved > 0.05                 # ~ η h (K − 1) per weight: Adam's steps are ~η h each


def test_a_closed_gate_stops_the_optimiser_clock():
    """The gate multiplies every derivative: at g = 0 the weights, moments and clock stand
    still; at g = 1/2 each moves at half its open rate."""
    flow = AdamFlow(tau_m=2.0, tau_v=8.0)
    w = torch.randn(2, 3, 4, generator=g, dtype=DT)
    y = {"W": w, **flow.initial_state({"W": w})}
    y["adam_m:W"] = torch.randn_like(w)
    y["adam_v:W"] = torch.rand(w.shape, generator=g, dtype=DT)
    y["adam_c:W"] = torch.full((2, 1, 2), 0.5, dtype=DT)
    u = torch.randn_like(w)
    open_ = flow.field("W", u, 0.1, None, y)
    for gate in (torch.zeros(2, 1, 1, dtype=DT), torch.full((2, 1, 1), 0.5, dtype=DT)):
        shut = flow.field("W", u, 0.1 * gate, gate, y)
        for k in open_:
            torch.testing.assert_close(shut[k], gate * open_[k], rtol=1e-15, atol=0)
    # the open derivatives themselves: m̂ = m / 0.5, v̂ = v / 0.5
    torch.testing.assert_close(open_["W"], 0.1 * (2 * y["adam_m:W"]) /
                               ((2 * y["adam_v:W"]).sqrt() + 1e-8), rtol=1e-14, atol=0)
    torch.testing.assert_close(open_["adam_c:W"], torch.tensor([0.25, 0.0625], dtype=DT)
                               .expand(2, 1, 2), rtol=1e-15, atol=0)


def test_a_settling_circuit_trains_with_adam_and_the_loss_falls():
    """DI with the settle gate and AdamFlow: the moment populations ride along with the
    weights (one state), the clock only runs while the gate is open (it stays below the time
    spent: measured 50 of 128), and the training loss falls (measured 0.253 → 0.059 over 32
    minibatches; gradient flow at η = 0.5: 0.042)."""
    network = net()
    c = Plastic(Settling(DynamicInversion, alpha=0.01, k_i=5.0), network, *stream(0), eta=0.01,
                gate="settled", theta=0.5, flow="adam")
    assert {p.name for p in c.populations} >= {"adam_m:W_1", "adam_v:b_3", "adam_c:W_2"}
    r = train(c, c.initial_state(), stream, period=4.0, presentations=32, dt=0.05, chunk=8)

    def loss(p):
        out = network.with_parameters([p[f"W_{l}"] for l in (1, 2, 3)],
                                      [p[f"b_{l}"] for l in (1, 2, 3)]).forward(X).r[-1]
        return (0.5 * ((out - Y) ** 2).sum(-1).mean()).item()
    before, after = loss(c.initial_state()), loss(r.y)
    assert after < 0.3 * before, (before, after)
    plastic_time = -torch.log1p(-r.y["adam_c:W_1"][0, 0, 0]).item() * 10.0
    assert 0.2 * 128 < plastic_time < 0.6 * 128            # the gate closed during settles


def test_flow_specs_and_bad_input():
    assert isinstance(weight_flow(None), GradientFlow)
    assert weight_flow({"adam": {"tau_m": 5}}).tau_m == 5.0
    with pytest.raises(ValueError, match=r"flow.adam: received keys \['beta1'\]"):
        weight_flow({"adam": {"beta1": 0.9}})
    with pytest.raises(ValueError, match="flow.tau_v: received 0"):
        AdamFlow(tau_v=0)
    with pytest.raises(ValueError, match="flow: received 'sgd'"):
        Plastic(ClosedForm("backprop"), net(), *stream(0), flow="sgd")
    with pytest.raises(ValueError, match="flow: received 'adam' for method 'z_il'"):
        learning_circuit("z_il", ForwardNetwork([4, 5, 3], "tanh", seed=0), *stream(0),
                         flow="adam")


def test_the_adam_method_table_config_follows_its_one_rule():
    """configs/mnist1d_adam.yaml: every method is a Plastic one with AdamFlow, and each is Adam
    at 1e-3 and β = (0.9, 0.999) per minibatch: η T = 1e-3, τ_m = 10 T, τ_v = 1000 T for its
    measured plastic time per minibatch T (so η τ_m = 0.01 and τ_v = 100 τ_m)."""
    from demos import train
    from demos.config import read_yaml
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "configs" / "mnist1d_adam.yaml"
    cfg = train.load(path)
    assert cfg["task"] == "mnist1d" and len(cfg["methods"]) == 9
    for method in cfg["methods"]:
        s = train.spec(cfg, method)
        flow = weight_flow(s.flow)
        assert isinstance(flow, AdamFlow), method
        T = flow.tau_m / 10
        assert s.eta * T == pytest.approx(1e-3, rel=0.03), method
        assert flow.tau_v == pytest.approx(1000 * T, rel=1e-12), method
    assert read_yaml(path)["task"] == "mnist1d"
    with pytest.raises(ValueError, match="method.z_il.flow: received 'adam'"):
        train.load({"task": "mnist1d", "methods": ["z_il"],
                    "method": {"z_il": {"eta": 0.1, "period": 3.0, "dt": 1.0,
                                        "flow": "adam"}}})
