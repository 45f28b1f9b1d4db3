"""Local learning through linear decoders (SPEC §6) against autograd and closed forms (float64).

The reference for every gradient is ``torch.autograd`` on each layer's local loss, written here
independently of the module (``F.mish``, ``F.normalize``, ``F.binary_cross_entropy``), with
layer ℓ's input detached: the stop-gradient between layers.
"""
import math

import pytest
import torch

from circuits.gates import Signals
import torch.nn.functional as F

from circuits import ForwardNetwork
from circuits.local_decoders import LayerSchedule, LocalDecoders
from solvers import solve

F64 = torch.float64
WIDTHS = [2, 6, 5, 4, 2]          # L = 4, n_y = 2
L = len(WIDTHS) - 1


def network(seed=(0, 1), output="sigmoid", widths=WIDTHS):
    """A Mish network with nonzero biases (zero biases would hide a wrong ∂ℒ/∂b)."""
    net = ForwardNetwork(list(widths), "mish", output, seed=list(seed))
    g = torch.Generator().manual_seed(99)
    biases = [0.3 * torch.randn(len(seed), 1, n, generator=g, dtype=F64) for n in widths[1:]]
    return ForwardNetwork(list(widths), "mish", output, weights=net.weights, biases=biases)


def data(B=7, n0=2, ny=2, seed=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, n0, generator=g, dtype=F64) * 2 - 1
    y = (torch.rand(B, ny, generator=g, dtype=F64) > 0.5).to(F64)
    return x, y


def perturbed_state(c, seed=3, size=0.3):
    """The initial state moved off its start, so decoders are not at their defaults."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + size * torch.randn(v.shape, generator=g, dtype=F64)
            for k, v in c.initial_state().items()}


def autograd_local_gradients(state, x, y, *, normalize, output_loss, output_activation):
    """∂ℒ_ℓ/∂θ_ℓ for every layer by autograd, each layer's input detached."""
    grads, r = {}, x.expand(state["W_1"].shape[0], -1, -1)
    for l in range(1, L + 1):
        W = state[f"W_{l}"].clone().requires_grad_(True)
        b = state[f"b_{l}"].clone().requires_grad_(True)
        a = r.detach() @ W.transpose(-1, -2) + b
        params = [W, b]
        if l < L:
            m = F.mish(a)
            out = F.normalize(m, dim=-1) if normalize else m
            D = state[f"D_{l}"].clone().requires_grad_(True)
            params.append(D)
            # mean over (B, n_y) per replica, summed over replicas: replicas are independent
            loss = ((out @ D.transpose(-1, -2) - y) ** 2).mean((-2, -1)).sum()
        else:
            out = torch.sigmoid(a) if output_activation == "sigmoid" else torch.tanh(a)
            if output_loss == "bce":
                loss = F.binary_cross_entropy(out, y.expand_as(out), reduction="none"
                                              ).mean((-2, -1)).sum()
            else:
                loss = ((out - y) ** 2).mean((-2, -1)).sum()
        got = torch.autograd.grad(loss, params)
        grads[f"W_{l}"], grads[f"b_{l}"] = got[0], got[1]
        if l < L:
            grads[f"D_{l}"] = got[2]
        r = out.detach()
    return grads


CASES = [(normalize, loss, train) for normalize in (True, False) for loss in ("bce", "mse")
         for train in (True, False)]


@pytest.mark.parametrize("normalize,output_loss,train", CASES)
def test_vector_field_is_minus_eta_gate_times_the_autograd_local_gradient(normalize,
                                                                          output_loss, train):
    output = "sigmoid" if output_loss == "bce" else "tanh"
    x, y = data()
    eta, eta_d = [0.7, 1.3], [0.2, 2.5]            # per replica, different for decoders
    schedule = LayerSchedule([(0.0, 2.0), (1.0, 3.0), (0.5, 1.5), (2.5, math.inf)])
    c = LocalDecoders(network(output=output), x, y, schedule=schedule, eta=eta,
                      eta_decoders=eta_d, train_decoders=train, normalize=normalize,
                      output_loss=output_loss, decoder_seed=[4, 5])
    state = perturbed_state(c)
    ref = autograd_local_gradients(state, x, y, normalize=normalize, output_loss=output_loss,
                                   output_activation=output)
    closed = c.gradients(state)
    assert set(closed) == set(ref) == set(state)
    for k in ref:
        torch.testing.assert_close(closed[k], ref[k], rtol=0, atol=1e-12, msg=k)
        assert ref[k].abs().max() > 1e-4, k          # not a vacuous comparison
    eta_t = torch.tensor(eta, dtype=F64).view(2, 1, 1)
    eta_dt = torch.tensor(eta_d, dtype=F64).view(2, 1, 1)
    for t in (0.2, 1.2, 2.7):
        gates = [float(s <= t < e) for s, e in schedule.windows]
        field = c.vector_field(t, state)
        assert set(field) == set(state)
        for l in range(1, L + 1):
            for p in ("W", "b") + (("D",) if l < L else ()):
                k = f"{p}_{l}"
                rate = (eta_dt if p == "D" else eta_t) * gates[l - 1]
                if p == "D" and not train:
                    rate = 0.0 * rate
                want = -rate * ref[k]
                torch.testing.assert_close(field[k], want, rtol=0, atol=1e-12, msg=(t, k))
                if gates[l - 1] == 0 or (p == "D" and not train):
                    assert (field[k] == 0).all(), (t, k)


def test_local_losses_and_observe_match_direct_formulas():
    x, y = data()
    c = LocalDecoders(network(), x, y, schedule=LayerSchedule.parallel(L), decoder_seed=[1, 2])
    state = perturbed_state(c)
    obs = c.observe(state)
    r = x.expand(2, -1, -1)
    for l in range(1, L + 1):
        a = r @ state[f"W_{l}"].transpose(-1, -2) + state[f"b_{l}"]
        if l < L:
            r = F.normalize(F.mish(a), dim=-1)
            out = r @ state[f"D_{l}"].transpose(-1, -2)
            loss = ((out - y) ** 2).mean((-2, -1))
        else:
            out = torch.sigmoid(a)
            loss = F.binary_cross_entropy(out, y.expand_as(out), reduction="none").mean((-2, -1))
        acc = ((out > 0.5) == (y > 0.5)).to(F64).mean((-2, -1))
        torch.testing.assert_close(obs[f"loss_{l}"].view(2), loss, rtol=0, atol=1e-14)
        torch.testing.assert_close(obs[f"accuracy_{l}"].view(2), acc, rtol=0, atol=0)
    torch.testing.assert_close(c.accuracy(state, x, y), obs[f"accuracy_{L}"].view(2),
                               rtol=0, atol=0)
    # observe works on a recorded trajectory [T, S, ...] as on a single state
    stacked = {k: torch.stack([v, v]) for k, v in state.items()}
    torch.testing.assert_close(c.observe(stacked)["loss_2"][1], obs["loss_2"], rtol=0, atol=1e-15)


def integrate(c, t1, dt, save_every=1):
    return solve(c, c.initial_state(), 0.0, t1, dt=dt, steady_state=False,
                 save_every=save_every, progress=False)


def test_sequential_schedule_changes_each_layer_only_in_its_window():
    x, y = data(B=9)
    period, dt = 0.5, 0.1
    c = LocalDecoders(network(), x, y, schedule=LayerSchedule.sequential(L, period), eta=2.0,
                      decoder_seed=[0, 1])
    sol = integrate(c, L * period, dt)
    ts = sol.ts.tolist()
    assert c.schedule.t1 == pytest.approx(L * period)
    for l in range(1, L + 1):
        start, end = (l - 1) * period, l * period
        i0 = min(range(len(ts)), key=lambda i: abs(ts[i] - start))
        i1 = min(range(len(ts)), key=lambda i: abs(ts[i] - end))
        for p in ("W", "b") + (("D",) if l < L else ()):
            traj = sol.ys[f"{p}_{l}"]
            assert torch.equal(traj[: i0 + 1], traj[:1].expand_as(traj[: i0 + 1])), (p, l)
            assert torch.equal(traj[i1:], traj[i1:i1 + 1].expand_as(traj[i1:])), (p, l)
            steps = (traj[i0 + 1: i1 + 1] - traj[i0: i1]).flatten(2).abs().amax(-1)
            assert (steps > 0).all(), (p, l)          # every step in the window moves it


def test_parallel_schedule_changes_every_layer_at_every_step():
    x, y = data(B=9)
    c = LocalDecoders(network(), x, y, schedule=LayerSchedule.parallel(L), decoder_seed=[0, 1])
    sol = integrate(c, 1.0, 0.1)
    for k, traj in sol.ys.items():
        steps = (traj[1:] - traj[:-1]).flatten(2).abs().amax(-1)
        assert (steps > 0).all(), k


@pytest.mark.parametrize("schedule", ["sequential", "parallel"])
def test_fixed_decoders_stay_exactly_fixed(schedule):
    x, y = data(B=9)
    sch = (LayerSchedule.sequential(L, 0.3) if schedule == "sequential"
           else LayerSchedule.parallel(L))
    given = [torch.randn(2, WIDTHS[-1], n, dtype=F64) for n in WIDTHS[1:-1]]
    c = LocalDecoders(network(), x, y, schedule=sch, train_decoders=False, decoders=given)
    sol = integrate(c, 1.2, 0.1)
    for l in range(1, L):
        assert torch.equal(sol.y1[f"D_{l}"], given[l - 1])
        assert not torch.equal(sol.y1[f"W_{l}"], c.initial_state()[f"W_{l}"])
    assert not torch.equal(sol.y1[f"W_{L}"], c.initial_state()[f"W_{L}"])


@pytest.mark.parametrize("schedule", ["sequential", "parallel"])
def test_replicas_integrated_together_equal_each_alone(schedule):
    x, y = data(B=8)
    seeds, etas = [3, 4, 5], [0.5, 1.0, 1.5]
    sch = (LayerSchedule.sequential(L, 0.25) if schedule == "sequential"
           else LayerSchedule.parallel(L))
    together = LocalDecoders(network(seeds), x, y, schedule=sch, eta=etas, decoder_seed=seeds)
    sol = integrate(together, 1.0, 0.05, save_every=None)
    full = network(seeds)
    for s, seed in enumerate(seeds):
        one = ForwardNetwork(WIDTHS, "mish", "sigmoid",
                             weights=[w[s:s + 1] for w in full.weights],
                             biases=[b[s:s + 1] for b in full.biases])
        alone = LocalDecoders(one, x, y, schedule=sch, eta=etas[s], decoder_seed=seed)
        sol1 = integrate(alone, 1.0, 0.05, save_every=None)
        for k, v in sol1.y1.items():
            torch.testing.assert_close(sol.y1[k][s:s + 1], v, rtol=0, atol=1e-12, msg=k)
    # and they did learn different things
    assert not torch.allclose(sol.y1["W_2"][0], sol.y1["W_2"][1])


def test_gradient_flow_lowers_the_active_layer_loss_monotonically():
    x, y = data(B=16, seed=7)
    period, dt = 1.0, 0.02
    c = LocalDecoders(network(), x, y, schedule=LayerSchedule.sequential(L, period), eta=1.0,
                      decoder_seed=[0, 1])
    sol = solve(c, c.initial_state(), 0.0, L * period, dt=dt, steady_state=False,
                save_every=1, observe=c.observe, progress=False)
    n = round(period / dt)
    for l in range(1, L + 1):
        loss = sol.ys[f"loss_{l}"][(l - 1) * n: l * n + 1, :, 0, 0]      # its window
        drops = loss[1:] - loss[:-1]
        assert (drops < 0).all(), (l, drops.max().item())
        assert (loss[-1] < loss[0]).all(), l


def test_schedule_gates_are_functions_of_time():
    like = torch.zeros((), dtype=F64)
    seq = LayerSchedule.sequential(3, 2.0)
    assert seq.windows == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)] and seq.t1 == 6.0
    for t, want in ((0.0, [1, 0, 0]), (1.999, [1, 0, 0]), (2.0, [0, 1, 0]), (5.5, [0, 0, 1]),
                    (6.0, [0, 0, 0]), (-1.0, [0, 0, 0])):
        assert [float(g) for g in seq.gates(t, {}, Signals(like=like, layers=3))[0]] == want, t
    par = LayerSchedule.parallel(3)
    assert par.t1 is None
    assert [float(g) for g in par.gates(1e6, {}, Signals(like=like, layers=3))[0]] == [1, 1, 1]


# -- bad input --------------------------------------------------------------------------------

X, Y = data()


def build(**kwargs):
    args = dict(network=network(), x=X, y=Y)
    args.update(kwargs)
    return LocalDecoders(args.pop("network"), args.pop("x"), args.pop("y"), **args)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(schedule=LayerSchedule.parallel(3)), ValueError,
     r"schedule: received 3 windows, expected one per layer \(L = 4\)"),
    (dict(schedule="sequential"), TypeError, r"schedule: received str, expected a .*LayerSchedule"),
    (dict(eta=-1.0), ValueError, r"eta: received -1\.0, expected values ≥ 0"),
    (dict(eta=[1.0, 2.0, 3.0]), ValueError,
     r"eta: received 3 replica values, expected 1 or the network's S = 2"),
    (dict(eta="fast"), TypeError, r"eta: received str, expected a number"),
    (dict(eta_decoders=[1.0, 2.0, 3.0]), ValueError,
     r"eta_decoders: received 3 replica values, expected 1 or the network's S = 2"),
    (dict(decoders=torch.zeros(3)), ValueError,
     r"decoders: received Tensor of length 3, expected a list of L − 1 = 3 tensors"),
    (dict(eta_decoders=math.nan), ValueError, r"eta_decoders: received non-finite values"),
    (dict(output_loss="ce"), ValueError,
     r"output_loss: received 'ce', expected one of \['bce', 'mse'\]"),
    (dict(network=network(output="tanh")), ValueError,
     r"network.output_activation: received 'tanh' with output_loss='bce', expected 'sigmoid'"),
    (dict(train_decoders=1), ValueError, r"train_decoders: received 1, expected True or False"),
    (dict(normalize="yes"), ValueError, r"normalize: received 'yes', expected True or False"),
    (dict(decoders=[torch.zeros(2, 2, 6)]), ValueError,
     r"decoders: received list of length 1, expected a list of L − 1 = 3 tensors"),
    (dict(decoders=[torch.zeros(2, 2, 6), torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)]),
     ValueError, r"decoders\[1\]: received \(2, 2, 4\), expected a finite tensor of shape "
                 r"\(2, 2, 5\)"),
    (dict(decoders=[torch.zeros(2, 2, 6), torch.full((2, 2, 5), math.inf),
                    torch.zeros(2, 2, 4)]), ValueError, r"decoders\[1\]: .*expected a finite"),
    (dict(decoder_seed=[0, 1, 2]), ValueError,
     r"decoder_seed: received \[0, 1, 2\], expected an int or S = 2 ints"),
    (dict(decoder_seed=1.5), ValueError, r"decoder_seed: received 1\.5"),
    (dict(y=Y[:5]), ValueError, r"y: received 5 examples, expected B = 7 like x"),
    (dict(y=Y * 2), ValueError, r"y: received values outside \[0, 1\], expected targets in "
                                r"\[0, 1\] for output_loss='bce'"),
    (dict(y=torch.zeros(7, 3, dtype=F64)), ValueError, r"y: received shape \(7, 3\), expected "
                                                       r"last dimension n_L = 2"),
    (dict(x=torch.zeros(7, 3, dtype=F64)), ValueError, r"x: received shape \(7, 3\), expected"),
    (dict(x=X.clone().fill_(math.nan)), ValueError, r"x: received non-finite values"),
    (dict(network="net"), TypeError, r"network: received str, expected a circuits.ForwardNetwork"),
    (dict(network=ForwardNetwork([2, 3, 2], "mish", "sigmoid", bias=False)), ValueError,
     r"network: received a network without biases, expected one built with bias=True"),
    (dict(network=ForwardNetwork([2, 2], "mish", "sigmoid")), ValueError,
     r"network: received L = 1 layer\(s\), expected L ≥ 2"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        build(**kwargs)


@pytest.mark.parametrize("call,match", [
    (lambda: LayerSchedule.sequential(0, 1.0), r"layers: received 0, expected an integer ≥ 1"),
    (lambda: LayerSchedule.sequential(3, 0.0), r"period: received 0\.0, expected a finite "
                                               r"number > 0"),
    (lambda: LayerSchedule.sequential(3, math.inf), r"period: received inf"),
    (lambda: LayerSchedule.parallel(2.0), r"layers: received 2\.0, expected an integer"),
    (lambda: LayerSchedule([]), r"windows: received \[\], expected one \(start, end\) pair"),
    (lambda: LayerSchedule([(0.0, 1.0), (2.0, 1.0)]),
     r"windows\[1\] \(layer 2\): received \(2\.0, 1\.0\), expected a pair \(start, end\) of "
     r"numbers with a finite start < end"),
    (lambda: LayerSchedule([(0.0, math.nan)]), r"windows\[0\] \(layer 1\): received"),
    (lambda: LayerSchedule([(-math.inf, 1.0)]), r"windows\[0\] \(layer 1\): received"),
    (lambda: LayerSchedule([(0.0, 1.0, 2.0)]), r"windows\[0\] \(layer 1\): received"),
])
def test_bad_schedules_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
