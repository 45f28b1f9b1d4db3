"""Predictive coding against autograd's backprop and the closed forms of SPEC §3 (float64).

* Z-IL (C1 start at the feed-forward pass, C2 layer-by-distance schedule, C3 γ = 1) and
  Fa-Z-IL (prediction-mode settle, then the teacher; the arrival gate decides) reproduce
  autograd's backprop update to ≤ 1e-10 relative, for tanh, ReLU with dead units and linear
  nets of depth 2–5, with B > 1 examples and S > 1 independent replicas.
* Breaking C1, C2 or C3 alone diverges by orders of magnitude.
* The naive gates (first change of ε; derivative-weighted drive) are right on tanh and wrong
  on ReLU; the ordered feedback gate stays shut during a prediction-mode settle.
* IL's divergence from backprop falls monotonically with the output variance.
* Fixed-prediction PC settles on backprop's δ with the binomial / Erlang transient.
"""
import pytest
import torch

from circuits import (ArrivalGate, ForwardNetwork, PredictiveCoding, Schedule, backprop_updates,
                      fixed_prediction_transient, update_divergence)
from solvers import solve

F64 = torch.float64
ETA = 0.1
SETTLE = dict(dt=0.1, atol=1e-14, rtol=1e-12)


def problem(depth, activation, S=3, B=4, seed=0, width=12, dtype=F64):
    widths = [5] + [width] * (depth - 1) + [3]
    net = ForwardNetwork(widths, activation, seed=[seed + s for s in range(S)], dtype=dtype)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(B, widths[0], generator=g, dtype=F64)
    y = torch.randn(B, widths[-1], generator=g, dtype=F64)
    return net, x, y


def autograd_updates(net, x, y, eta=ETA):
    """−η ∂ℒ/∂θ with ℒ = Σ_s mean_B ½‖y − a_L‖², by torch.autograd (the oracle)."""
    W = [w.detach().clone().requires_grad_() for w in net.weights]
    b = [v.detach().clone().requires_grad_() for v in net.biases]
    r = net.input(x)
    for l, (Wl, bl) in enumerate(zip(W, b), start=1):
        a = r @ Wl.transpose(-1, -2) + bl
        r = a if l == net.L else net.hidden_activation.phi(a)
    loss = 0.5 * ((net.output_like(y) - r) ** 2).sum(-1).mean(-1).sum()
    grads = torch.autograd.grad(loss, W + b)
    L = net.L
    return [(-eta * gw, -eta * gb) for gw, gb in zip(grads[:L], grads[L:])]


def relative_divergence(change, reference):
    dist, size = update_divergence(change, reference, biases=True)
    return (dist / size).max().item()


def z_il(net, x, y, *, dt=1.0, tau_x=1.0, schedule=None, perturbation=0.0):
    L = net.L
    c = PredictiveCoding(net, x, y, eta=ETA, tau_x=tau_x,
                         plasticity=schedule or Schedule.z_il(L))
    y0 = c.initial_state(perturbation=perturbation, seed=1)
    sol = solve(c, y0, 0.0, L * dt, dt=dt, steady_state=False)
    return c.weight_changes(y0, sol.y1)


def fa_z_il(net, x, y, gate=None, teacher_steps=None):
    """Input alone until the circuit settles (steady-state stop), then the teacher."""
    c = PredictiveCoding(net, x, None, eta=ETA, plasticity=gate or ArrivalGate())
    settled = solve(c, c.initial_state(), 0.0, 1000.0, **SETTLE)
    assert bool(settled.converged.all())
    c.present(target=y)
    steps = teacher_steps or 2 * net.L
    learned = solve(c, settled.y1, 0.0, float(steps), dt=1.0, steady_state=False)
    return c.weight_changes(settled.y1, learned.y1)


def wave_reaches_every_neuron(net, x, y):
    """Fa-Z-IL's precondition: every neuron's feedback input W_{ℓ+1}ᵀδ_{ℓ+1} is nonzero (a
    whole dead ReLU layer would silence the wave below it)."""
    fwd = net.forward(x)
    d = net.output_like(y) - fwd.a[-1]
    for l in range(net.L, 1, -1):
        fb = d @ net.weights[l - 1]
        if not bool((fb.abs() > 1e-6).all()):
            return False
        d = fwd.dphi[l - 2] * fb
    return True


@pytest.mark.parametrize("activation", ["tanh", "relu", "linear"])
@pytest.mark.parametrize("depth", [2, 3, 4, 5])
def test_z_il_and_fa_z_il_equal_autograd_backprop(activation, depth):
    net, x, y = problem(depth, activation)
    oracle = autograd_updates(net, x, y)
    # the closed form agrees with autograd
    assert relative_divergence(backprop_updates(net, x, y, ETA), oracle) <= 1e-12
    if activation == "relu":
        dead = sum(int((d == 0).sum()) for d in net.forward(x).dphi[:-1])
        assert dead > 0, "the ReLU case must contain dead units"
    assert wave_reaches_every_neuron(net, x, y)
    assert relative_divergence(z_il(net, x, y), oracle) <= 1e-10
    assert relative_divergence(fa_z_il(net, x, y), oracle) <= 1e-10


@pytest.fixture(scope="module")
def four_layers():
    net, x, y = problem(4, "tanh", S=2, B=8, width=16)
    return net, x, y, autograd_updates(net, x, y)


def test_each_broken_condition_diverges_by_orders_of_magnitude(four_layers):
    net, x, y, oracle = four_layers
    L = net.L
    exact = relative_divergence(z_il(net, x, y), oracle)
    broken = {
        "C1 perturbed start": z_il(net, x, y, perturbation=0.1),
        "C2 all layers together": z_il(net, x, y, schedule=Schedule.together(L)),
        # γ = dt/τ_x = 0.99999; the clock still ticks once per step, so only γ changes.
        "C3 gamma 0.99999": z_il(net, x, y, tau_x=1 / 0.99999,
                                 schedule=Schedule.z_il(L, period=1.0)),
    }
    assert exact <= 1e-13
    for name, change in broken.items():
        d = relative_divergence(change, oracle)
        assert d >= 1e3 * exact and d >= 1e-7, (name, d)
    # C1 and C2 broken are of the order of the update itself; C3 is first order in 1 − γ
    assert relative_divergence(broken["C2 all layers together"], oracle) > 0.05
    assert relative_divergence(broken["C1 perturbed start"], oracle) > 0.05
    assert 1e-7 < relative_divergence(broken["C3 gamma 0.99999"], oracle) < 1e-3


@pytest.mark.parametrize("signal", ["error", "drive"])
def test_naive_gates_are_right_on_tanh_and_wrong_on_relu(signal):
    for activation, right in (("tanh", True), ("relu", False)):
        net, x, y = problem(4, activation, S=2, B=8, width=16, seed=4)
        assert wave_reaches_every_neuron(net, x, y)
        oracle = autograd_updates(net, x, y)
        naive = relative_divergence(fa_z_il(net, x, y, ArrivalGate(signal), 3 * net.L), oracle)
        ordered = relative_divergence(fa_z_il(net, x, y, ArrivalGate(), 3 * net.L), oracle)
        assert ordered <= 1e-10, activation
        if right:
            assert naive <= 1e-10, (signal, activation, naive)
        else:
            assert naive >= 1e-3, (signal, activation, naive)


def test_ordered_gate_stays_shut_while_a_new_input_settles():
    """Rest on input A, then present B alone: the ordered feedback gate never opens and no
    weight moves; the unordered one and the error-change gate (Song et al.'s φ) do."""
    net, xa, _ = problem(4, "tanh", S=1, B=2, width=16)
    xb = torch.randn(2, 5, generator=torch.Generator().manual_seed(9), dtype=F64)
    opened = {}
    for name, gate in (("ordered", ArrivalGate()), ("unordered", ArrivalGate(ordered=False)),
                       ("error", ArrivalGate("error"))):
        c = PredictiveCoding(net, xa, None, eta=ETA, plasticity=gate)
        rest = solve(c, c.initial_state(), 0.0, 1000.0, **SETTLE)
        c.present(xb)
        sol = solve(c, rest.y1, 0.0, 1000.0, save_every=1, observe=c.observe, **SETTLE)
        assert bool(sol.converged.all())
        opened[name] = max(sol.ys[f"gate_{l}"].abs().max().item() for l in range(1, 5))
        moved = sum((sol.y1[f"W_{l}"] - rest.y1[f"W_{l}"]).abs().sum().item()
                    for l in range(1, 5))
        assert (moved == 0.0) == (opened[name] == 0.0), name
    assert opened["ordered"] == 0.0
    assert opened["unordered"] > 0.1 and opened["error"] > 0.1


def test_arrival_gate_opens_once_per_neuron_at_its_distance_from_the_output():
    net, x, y = problem(4, "tanh", S=2, B=3, width=8)
    c = PredictiveCoding(net, x, None, eta=ETA, plasticity=ArrivalGate())
    settled = solve(c, c.initial_state(), 0.0, 1000.0, **SETTLE)
    c.present(target=y)
    sol = solve(c, settled.y1, 0.0, 8.0, dt=1.0, steady_state=False, save_every=1,
                observe=c.observe)
    for l in range(1, net.L + 1):
        g = sol.ys[f"gate_{l}"][:-1]                    # [steps, S, B, n]
        assert set(g.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(g.sum(0), torch.ones_like(g[0])), l   # exactly once each
        assert bool((g[net.L - l] == 1).all()), l                  # at step L − ℓ


def test_il_divergence_falls_monotonically_with_output_variance(four_layers):
    net, x, y, oracle = four_layers
    divergences = []
    for s2 in (1.0, 10.0, 100.0, 1000.0):
        c = PredictiveCoding(net, x, y, eta=ETA, variances=[1.0, 1.0, 1.0, s2])
        sol = solve(c, c.initial_state(), 0.0, 5000.0, **SETTLE)
        assert bool(sol.converged.all())
        divergences.append(relative_divergence(c.il_updates(sol.y1), oracle))
    assert all(b < a for a, b in zip(divergences, divergences[1:])), divergences
    assert divergences[0] > 0.1 and divergences[-1] < 0.01, divergences


def test_leaky_error_population_has_the_explicit_fixed_point(four_layers):
    net, x, y, _ = four_layers
    states = {}
    for errors in ("explicit", "leaky"):
        c = PredictiveCoding(net, x, y, errors=errors, tau_eps=0.2)
        sol = solve(c, c.initial_state(), 0.0, 5000.0, **SETTLE)
        assert bool(sol.converged.all())
        states[errors] = (sol.y1, c.errors(sol.y1))
    for l in range(1, net.L + 1):
        a, b = states["explicit"][1][l - 1], states["leaky"][1][l - 1]
        assert (a - b).norm() <= 1e-8 * a.norm(), l


def fixed_prediction_run(method, dt, t1):
    net, x, y = problem(4, "tanh", S=2, B=3, width=8)
    c = PredictiveCoding(net, x, y, predictions="fixed")
    sol = solve(c, c.initial_state(), 0.0, t1, dt=dt, method=method, steady_state=False,
                save_every=1, observe=c.observe)
    fwd = net.forward(x)
    delta = [net.output_like(y) - fwd.a[-1]]
    for l in range(net.L, 1, -1):
        delta.append(fwd.dphi[l - 2] * (delta[-1] @ net.weights[l - 1]))
    return net, sol, delta[::-1]


def test_fixed_prediction_equilibrium_is_backprop_delta_with_binomial_transient():
    gamma = 0.5
    net, sol, delta = fixed_prediction_run("euler", gamma, 40.0)
    L = net.L
    for l in range(1, L + 1):
        eps = sol.ys[f"eps_{l}"]                                # [T, S, B, n]
        assert (eps[-1] - delta[l - 1]).norm() <= 1e-10 * delta[l - 1].norm(), l
        k = L - l
        for n in (0, 1, 2, 3, 5, 8, 13):
            law = fixed_prediction_transient(k, n * gamma, gamma=gamma)
            assert torch.allclose(eps[n], law * delta[l - 1], rtol=0, atol=1e-12), (l, n)


def test_fixed_prediction_continuous_transient_is_erlang():
    net, sol, delta = fixed_prediction_run("rk4", 0.01, 6.0)
    for l in range(1, net.L + 1):
        k = net.L - l
        for i in (50, 100, 200, 400, 600):
            t = sol.ts[i].item()
            law = fixed_prediction_transient(k, t)
            err = (sol.ys[f"eps_{l}"][i] - law * delta[l - 1]).abs().max().item()
            assert err <= 1e-8 * delta[l - 1].abs().max().item(), (l, t, err)


def test_s_replicas_are_independent_and_b_examples_share_weights():
    """Replica s of a batched Z-IL run equals a run of replica s alone."""
    net, x, y = problem(3, "tanh", S=3, B=4)
    both = z_il(net, x, y)
    for s in range(3):
        one = ForwardNetwork(net.widths, "tanh", weights=[w[s:s + 1] for w in net.weights],
                             biases=[b[s:s + 1] for b in net.biases])
        alone = z_il(one, x, y)
        for (wa, ba), (wb, bb) in zip(both, alone):
            assert torch.allclose(wa[s:s + 1], wb, rtol=0, atol=1e-15)
            assert torch.allclose(ba[s:s + 1], bb, rtol=0, atol=1e-15)


def test_z_il_in_float32_agrees_to_rounding():
    net64, x, y = problem(4, "tanh", S=2, B=8, width=16)
    net32 = ForwardNetwork(net64.widths, "tanh", dtype=torch.float32,
                           weights=[w.float() for w in net64.weights],
                           biases=[b.float() for b in net64.biases])
    change = [(w.double(), b.double()) for w, b in z_il(net32, x, y)]
    d = relative_divergence(change, autograd_updates(net64, x, y))
    assert 1e-10 < d < 1e-5


def test_training_in_phases_is_backprop_one_presentation_at_a_time():
    """Two presentations of Fa-Z-IL (input until settled, then the teacher) through
    ``solvers.train(phases=...)`` equal two SGD steps; every unit's gate opens exactly once per
    presentation. The retired ``present_all`` still gives the same, with a warning."""
    from solvers import Phase, present_all, train
    net, x, y = problem(3, "tanh", S=2, B=4, width=8)
    batches = [(x, y), (-x, 0.5 * y)]
    c = PredictiveCoding(net, x, None, eta=ETA, plasticity=ArrivalGate())
    phases = [Phase("predict", 1000.0, 0.1, teacher=False, steady_state=True, atol=1e-14,
                    rtol=0.0),
              Phase("learn", float(net.L + 1), 1.0, teacher=True, save_every=1)]
    openings = []
    final = train(c, c.initial_state(), lambda k: batches[k], phases=phases, presentations=2,
                  observe=c.observe, on_presentation=lambda k, y1, sols: openings.append(
                      [sols[1].ys[f"gate_{l}"].sum(0) for l in range(1, net.L + 1)])).y
    c2 = PredictiveCoding(net, x, None, eta=ETA, plasticity=ArrivalGate())
    with pytest.warns(DeprecationWarning, match="solvers.train"):
        old = present_all(c2, c2.initial_state(), batches, phases)
    assert all(torch.equal(old[k], final[k]) for k in final)
    weights, biases = net.weights, net.biases
    for xb, yb in batches:
        step = ForwardNetwork(net.widths, "tanh", weights=weights, biases=biases)
        updates = backprop_updates(step, xb, yb, ETA)
        weights = [w + dw for w, (dw, _) in zip(weights, updates)]
        biases = [b + db for b, (_, db) in zip(biases, updates)]
    for l in range(1, net.L + 1):
        assert torch.allclose(final[f"W_{l}"], weights[l - 1], rtol=0, atol=1e-13)
        assert torch.allclose(final[f"b_{l}"], biases[l - 1], rtol=0, atol=1e-13)
    assert len(openings) == 2
    assert all(torch.equal(g, torch.ones_like(g)) for gs in openings for g in gs)
