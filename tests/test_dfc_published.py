"""DFC as published (issue 15, part 1): the rate-difference weight rule (default) against a direct
implementation, the angle to the voltage-difference rule, the authors' two step orders against a
hand-written loop of their equations, the time-averaged update, and the sleep phase that learns
Q. Float64 throughout."""
import math

import pytest
import torch

from circuits import ForwardNetwork, Plastic, Settling, angle
from circuits.feedback_control import DeepFeedbackControl
from circuits.feedback_control_learning import DFCSleep, stacked_jacobian
from workbench.sleep import learn_dfc_feedback
from solvers import solve

F64 = torch.float64


def problem(widths, seed, B=3, activation="tanh", biases=True):
    """A random net (random biases too) and a batch; float64."""
    g = torch.Generator().manual_seed(100 + seed)
    bs = ([0.3 * torch.randn(1, 1, n, generator=g, dtype=F64) for n in widths[1:]]
          if biases else None)
    net = ForwardNetwork(list(widths), activation, seed=seed, biases=bs)
    x = torch.randn(B, widths[0], generator=g, dtype=F64)
    y = torch.randn(B, widths[-1], generator=g, dtype=F64)
    return net, x, y


def random_state(c, seed):
    """A state away from rest and from the steady state (so every term matters)."""
    g = torch.Generator().manual_seed(seed)
    y = c.initial_state()
    return {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=F64) for k, v in y.items()}


def relative(a, b):
    num = sum(((p - q) ** 2).sum() for p, q in zip(a, b)).sqrt()
    den = sum((q ** 2).sum() for q in b).sqrt()
    return (num / den).item()


def direct_rate_difference(net, x, y):
    """ΔW_ℓ = mean_B (φ(v_ℓ) − φ(W_ℓ φ(v_{ℓ-1}) + b_ℓ)) φ(v_{ℓ-1})ᵀ, written out per example."""
    W = [w[0] for w in net.weights]
    b = [v[0, 0] for v in net.biases]
    B = x.shape[0]
    out = []
    for l in range(1, net.L + 1):
        dW = torch.zeros_like(W[l - 1])
        db = torch.zeros_like(b[l - 1])
        for i in range(B):
            pre = x[i] if l == 1 else net.activation(l - 1).phi(y[f"v_{l - 1}"][0, i])
            phi = net.activation(l).phi
            change = phi(y[f"v_{l}"][0, i]) - phi(W[l - 1] @ pre + b[l - 1])
            dW += torch.outer(change, pre) / B
            db += change / B
        out.append((dW, db))
    return out


# -- 1. the published weight rule -------------------------------------------------------------

@pytest.mark.parametrize("widths", [(3, 5, 2), (4, 6, 5, 3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rate_difference_is_the_default_and_equals_the_direct_formula(widths, seed):
    net, x, target = problem(widths, seed)
    c = DeepFeedbackControl(net, x, target, alpha=0.1, k_p=1.0, nudge=0.3)
    assert c.update_rule == "rate_difference" and c.presynaptic_rates == "controlled"
    y = random_state(c, seed)
    expected = direct_rate_difference(net, x, y)
    got = c.weight_updates(y)
    assert relative([w[0] for w, _ in got], [w for w, _ in expected]) <= 1e-12
    assert relative([b[0, 0] for _, b in got], [b for _, b in expected]) <= 1e-12
    # the learning circuit reads the same rule (credits and controlled presynaptic rates)
    plastic = Plastic(Settling(DeepFeedbackControl, alpha=0.1, k_p=1.0, nudge=0.3), net, x,
                      target, eta=1.0, gate="always")
    state = {**{k: y[k] for k in plastic.fast}, **{k: v for k, v in plastic.initial_state().items()
                                                  if k[:2] in ("W_", "b_")}}
    flow = plastic.vector_field(0.0, state)
    assert relative([flow[f"W_{l}"][0] for l in range(1, net.L + 1)],
                    [w for w, _ in expected]) <= 1e-12
    assert relative([flow[f"b_{l}"][0, 0] for l in range(1, net.L + 1)],
                    [b for _, b in expected]) <= 1e-12
    # observe shows the same credit
    obs = c.observe(y)
    for l, credit in enumerate(c.credits(y), 1):
        assert torch.equal(obs[f"credit_{l}"], credit)


@pytest.mark.parametrize("seed", [0, 1])
def test_voltage_difference_is_the_previous_rule(seed):
    """Q_ℓ u (u = u_int + k_p e) with the feed-forward rates; presynaptic='controlled' swaps
    in the controlled rates."""
    net, x, target = problem((4, 6, 5, 3), seed)
    c = DeepFeedbackControl(net, x, target, alpha=0.1, k_p=1.0, update="voltage_difference")
    assert c.presynaptic_rates == "feed_forward"
    y = random_state(c, seed)
    e = c.r_star - net.activation(3).phi(y["v_3"])
    u = y["u"] + 1.0 * e
    credits = [u @ q.transpose(-1, -2) for q in c.feedback]
    fwd = net.forward(x)
    for (dW, _), cr, r in zip(c.weight_updates(y), credits, fwd.r[:-1]):
        assert relative([dW], [cr.transpose(-1, -2) @ r / x.shape[0]]) <= 1e-12
    cc = DeepFeedbackControl(net, x, target, alpha=0.1, k_p=1.0, update="voltage_difference",
                             presynaptic="controlled")
    rates = [c.x] + [net.activation(l).phi(y[f"v_{l}"]) for l in (1, 2)]
    for (dW, _), cr, r in zip(cc.weight_updates(y), credits, rates):
        assert relative([dW], [cr.transpose(-1, -2) @ r / x.shape[0]]) <= 1e-12


def reported_case(activation):
    """ForwardNetwork([4, 6, 5, 3], activation, seed=0) with one example drawn like
    tests/test_feedback_control.py's ``make`` (generator seeded 0), nudge 1e-3, α 1e-3,
    k_p 2, leak="total", settled to its steady state."""
    net = ForwardNetwork([4, 6, 5, 3], activation, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, generator=g, dtype=F64)
    y = torch.randn(1, 3, generator=g, dtype=F64)
    circuits = {u: DeepFeedbackControl(net, x, y, nudge=1e-3, alpha=1e-3, k_p=2.0, leak="total",
                                       update=u)
                for u in ("rate_difference", "voltage_difference")}
    c = circuits["rate_difference"]
    sol = solve(c, c.initial_state(), 0.0, 2000.0, dt=0.02, method="rk4", atol=1e-16,
                rtol=1e-12, progress=False)
    assert sol.converged.all()
    return {u: [w for w, _ in cc.weight_updates(sol.y1)] for u, cc in circuits.items()}


def test_angle_between_the_two_rules_on_the_reported_case():
    """The issue reports 5.8° (tanh) and 0.01° (linear). Measured here: tanh 5.36° over all
    layers (6.77° over the hidden ones); linear 0.035° over all layers, 0.011° over the hidden
    ones. On the linear net the credits agree (φ' = 1: the rate change is Q u) and the angle
    comes from the presynaptic rates, controlled vs feed-forward."""
    tanh = reported_case("tanh")
    a = angle(tanh["rate_difference"], tanh["voltage_difference"]).item()
    hidden = angle(tanh["rate_difference"][:-1], tanh["voltage_difference"][:-1]).item()
    assert 4.5 < a < 6.5 and 5.5 < hidden < 8.0
    linear = reported_case("linear")
    a = angle(linear["rate_difference"], linear["voltage_difference"]).item()
    hidden = angle(linear["rate_difference"][:-1], linear["voltage_difference"][:-1]).item()
    assert 0.01 < a < 0.06 and 0.005 < hidden < 0.02


def test_rate_difference_steady_state_credit_is_phi_prime_times_feedback():
    """Linearised closed form: credit_ℓ* = φ'(a_ℓ) ⊙ Q_ℓ u*, to first order in the nudge."""
    net, x, target = problem((4, 6, 5, 3), 0, B=1)
    c = DeepFeedbackControl(net, x, target, nudge=1e-4, alpha=0.1, k_p=1.0)
    sol = solve(c, c.initial_state(), 0.0, 2000.0, dt=0.02, method="rk4", atol=1e-16,
                rtol=1e-12, progress=False)
    star, observed = c.observed_steady_state(), c.observe(sol.y1)
    keys = [f"credit_{l}" for l in (1, 2, 3)]
    assert relative([observed[k] for k in keys], [star[k] for k in keys]) < 1e-3


# -- 2. the authors' step orders ---------------------------------------------------------------

def authors_loop(c, steps, dt, inst_transmission, proactive_controller):
    """Their ``controller`` (layerwise, apical time constant = dt, k_i = 1, leak on the total u),
    written out with plain tensors for one example batch; τ_u = 1 so their dt is ours and
    time_constant_ratio = τ_v."""
    net = c.network
    W = [w[0] for w in net.weights]
    b = [v[0] for v in net.biases]
    Q = [q[0] for q in c.feedback]
    tau_v, alpha, k_p = c.tau_v.item(), c.alpha.item(), c.k_p.item()
    target = c.r_star[0]
    vs = [a[0].clone() for a in c.forward.a]
    r = [net.activation(l + 1).phi(v) for l, v in enumerate(vs)]
    u = torch.zeros_like(target)
    u_int = torch.zeros_like(target)
    for _ in range(steps):
        e = target - r[-1]
        u_int_new = u_int + dt * (e - alpha * u)
        u_new = u_int_new + k_p * e
        r_old = list(r)
        for i in range(net.L):
            r_prev = c.x[0] if i == 0 else (r[i - 1] if inst_transmission else r_old[i - 1])
            vb = r_prev @ W[i].T + b[i]
            va = (u_new if proactive_controller else u) @ Q[i].T
            vs[i] = vs[i] + dt / tau_v * (va + vb - vs[i])
            r[i] = net.activation(i + 1).phi(vs[i])
        u, u_int = u_new, u_int_new
    return vs, u_int, u


@pytest.mark.parametrize("inst", [False, True])
@pytest.mark.parametrize("proactive", [False, True])
def test_step_authors_is_their_loop(inst, proactive):
    net, x, target = problem((4, 6, 5, 3), 3, B=2)
    c = DeepFeedbackControl(net, x, target, nudge=0.5, alpha=0.05, k_p=0.7, tau_v=0.2,
                            leak="total", feedback="random", feedback_seed=4)
    y = c.authors_initial_state()
    for _ in range(40):
        y = c.step_authors(y, 0.02, inst_transmission=inst, proactive_controller=proactive)
    vs, u_int, u = authors_loop(c, 40, 0.02, inst, proactive)
    assert relative([y[f"v_{l}"][0] for l in (1, 2, 3)], vs) <= 1e-13
    assert relative([y["u"][0], y["u_total"][0]], [u_int, u]) <= 1e-13


def _both_ways(c, dt, steps, **switches):
    """``(Euler of the vector field, the authors' discrete order)`` after ``steps`` steps."""
    sol = solve(c, c.initial_state(), 0.0, dt * steps, dt=dt, method="euler",
                steady_state=False, progress=False)
    y = c.authors_initial_state()
    for _ in range(steps):
        y = c.step_authors(y, dt, **switches)
    return sol.y1, y


def test_euler_on_the_vector_field_is_their_default_order_without_proportional_gain():
    net, x, target = problem((4, 6, 5, 3), 5, B=2)
    dt, steps = 0.02, 50
    c = DeepFeedbackControl(net, x, target, nudge=0.5, alpha=0.05, k_p=0.0, tau_v=0.2,
                            leak="total")
    euler, y = _both_ways(c, dt, steps)
    assert relative([y[k] for k in euler], [euler[k] for k in euler]) <= 1e-13
    # the two switches change the trajectory; with k_p > 0 their P term lags one step
    for kw in (dict(inst_transmission=True), dict(proactive_controller=True)):
        assert relative([_both_ways(c, dt, steps, **kw)[1]["v_1"]], [y["v_1"]]) > 1e-6
    cp = DeepFeedbackControl(net, x, target, nudge=0.5, alpha=0.05, k_p=0.7, tau_v=0.2,
                             leak="total")
    euler, z = _both_ways(cp, dt, steps)
    assert relative([z["v_1"]], [euler["v_1"]]) > 1e-6


def test_step_authors_settles_where_the_field_settles():
    """Both switches on (the published MNIST configs): the same fixed point."""
    net, x, target = problem((4, 6, 5, 3), 6, B=2)
    c = DeepFeedbackControl(net, x, target, nudge=0.1, alpha=0.05, k_p=2.0, tau_v=0.2,
                            leak="total")
    sol = solve(c, c.initial_state(), 0.0, 2000.0, dt=0.02, method="rk4", atol=1e-15,
                rtol=1e-12, progress=False)
    y = c.authors_initial_state()
    for _ in range(10000):
        y = c.step_authors(y, 0.02, inst_transmission=True, proactive_controller=True)
    assert relative([y[f"v_{l}"] for l in (1, 2, 3)], [sol.y1[f"v_{l}"] for l in (1, 2, 3)]
                    ) <= 1e-9


# -- 3. the time-averaged update ---------------------------------------------------------------

def test_time_averaged_update_is_the_mean_over_saved_points():
    net, x, target = problem((4, 6, 5, 3), 7, B=3)
    c = DeepFeedbackControl(net, x, target, nudge=0.3, alpha=0.05, k_p=1.0)
    sol = solve(c, c.initial_state(), 0.0, 4.0, dt=0.02, method="euler", save_every=1,
                steady_state=False, progress=False)
    T = len(sol.ts)
    assert T == 201 and sol.ys["v_1"].shape[0] == T
    points = [c.weight_updates({k: v[t] for k, v in sol.ys.items()}) for t in range(T)]
    average = c.weight_updates(sol.ys, average=True)
    for l in range(net.L):
        dW = sum(p[l][0] for p in points) / T
        db = sum(p[l][1] for p in points) / T
        assert relative([average[l][0]], [dW]) <= 1e-12
        assert relative([average[l][1]], [db]) <= 1e-12
    direct = [direct_rate_difference(net, x, {k: v[t] for k, v in sol.ys.items()})
              for t in range(50, T, 50)]
    for t, d in zip(range(50, T, 50), direct):
        assert relative([w[0] for w, _ in points[t]], [w for w, _ in d]) <= 1e-12
    # the average differs from the last point's (steady-state) update while settling
    assert relative([w for w, _ in average], [w for w, _ in points[-1]]) > 1e-3
    with pytest.raises(ValueError, match=r"y: received populations with 3 axes, expected 4"):
        c.weight_updates(sol.y1, average=True)
    with pytest.raises(ValueError, match=r"y: received populations with 4 axes, expected 3"):
        c.weight_updates(sol.ys)


def test_bad_options_name_the_parameter():
    net, x, target = problem((3, 4, 2), 0)
    with pytest.raises(ValueError, match=r"update: received 'rates', expected one of "
                                         r"\['rate_difference', 'voltage_difference'\]"):
        DeepFeedbackControl(net, x, target, update="rates")
    with pytest.raises(ValueError, match=r"presynaptic: received 'basal', expected one of "
                                         r"\['controlled', 'feed_forward'\] or None"):
        DeepFeedbackControl(net, x, target, presynaptic="basal")
    c = DeepFeedbackControl(net, x, target)
    with pytest.raises(ValueError, match=r"dt: received 0, expected a finite number > 0"):
        c.step_authors(c.authors_initial_state(), 0)
    with pytest.raises(ValueError, match=r"leak: received 'u', expected one of"):
        DFCSleep(net, x, leak="u")
    with pytest.raises(ValueError, match=r"sigma: received 0, expected a finite number > 0"):
        DFCSleep(net, x, sigma=0)
    with pytest.raises(ValueError, match=r"feedback: received 'jacobian', expected 'random'"):
        DFCSleep(net, x, feedback="jacobian")
    with pytest.raises(ValueError, match=r"time: received -1, expected a finite number > 0"):
        learn_dfc_feedback(net, x, time=-1)


# -- 4. the sleep phase ------------------------------------------------------------------------

def test_sleep_phase_euler_is_euler_maruyama_of_the_written_equations():
    """Hand-written Euler–Maruyama of SPEC §2's sleep equations, given the circuit's ξ_k."""
    net, x, _ = problem((3, 5, 4, 2), 1, B=2)
    dt, steps, sigma, so = 0.01, 30, 0.2, 0.05
    c = DFCSleep(net, x, sigma=sigma, sigma_output=so, tau_A=0.3, tau_Q=5.0, alpha=0.4,
                 k_p=0.3, beta=0.1, dt=dt, seed=11, leak="integral")
    sol = solve(c, c.initial_state(), 0.0, dt * steps, dt=dt, method="euler",
                steady_state=False, progress=False)
    W = [w[0] for w in net.weights]
    b = [v[0] for v in net.biases]
    fb = [torch.zeros(2, n, dtype=F64) for n in net.widths[1:]]
    Q = [c.initial_state()[f"Q_{l}"][0] for l in (1, 2, 3)]
    u_int = torch.zeros(2, 2, dtype=F64)
    r_ff = net.forward(x).r[-1][0]
    for k in range(steps):
        r = x
        for l in range(3):
            r = net.activation(l + 1).phi(r @ W[l].T + b[l] + fb[l])
        e = r_ff - r
        u = u_int + 0.3 * e
        xi = [z[0] for z in c.noise(k * dt)]
        new_fb = [f + dt / 0.3 * (-f + u @ q.T) + (so if l == 2 else sigma) * math.sqrt(dt)
                  / 0.3 * xi[l] for l, (f, q) in enumerate(zip(fb, Q))]
        new_Q = [q + dt / 5.0 * (-(f.T @ u) / 2 / sigma ** 2 - 0.1 * q) for f, q in zip(fb, Q)]
        u_int = u_int + dt * (e - 0.4 * u_int)
        fb, Q = new_fb, new_Q
    assert relative([sol.y1[f"fb_{l}"][0] for l in (1, 2, 3)], fb) <= 1e-12
    assert relative([sol.y1[f"Q_{l}"][0] for l in (1, 2, 3)], Q) <= 1e-12
    assert relative([sol.y1["u"][0]], [u_int]) <= 1e-12


def test_sleep_noise_is_deterministic_and_chunk_invariant():
    net, x, _ = problem((3, 5, 2), 2, B=2)
    c = DFCSleep(net, x, dt=0.02, seed=3)
    whole = solve(c, c.initial_state(), 0.0, 2.0, dt=0.02, method="euler", steady_state=False,
                  progress=False).y1
    half = solve(c, c.initial_state(), 0.0, 1.0, dt=0.02, method="euler", steady_state=False,
                 progress=False).y1
    rest = solve(c, half, 1.0, 2.0, dt=0.02, method="euler", steady_state=False,
                 progress=False).y1
    assert all(torch.allclose(whole[k], rest[k], rtol=1e-13, atol=1e-15) for k in whole)
    again = learn_dfc_feedback(net, x, time=2.0, dt=0.02, seed=3)
    assert all(torch.equal(a, whole[f"Q_{l}"]) for l, a in enumerate(again, 1))
    other = learn_dfc_feedback(net, x, time=2.0, dt=0.02, seed=4)
    assert not torch.equal(other[0], again[0])


def test_sleep_phase_aligns_q_with_the_jacobian_on_a_linear_network():
    """Q learns into the column space of Jᵀ (Q = Jᵀ M) and towards Jᵀ itself. Measured
    (k_p = 0.5, τ_Q = 30, dt = 0.02, sleep phases of 50, 50, 100, 200 from a random Q, whose
    angle to Jᵀ is > 45°): angle to Jᵀ 10.7°, 9.5°, 9.3°, 9.5°; angle to the column space of Jᵀ
    6.8°, 4.0°, 2.2°, 1.6°, shrinking with sleep time (1.1° after 400 more). M is not a
    multiple of I (the decay Q ⟨u uᵀ⟩/σ² is anisotropic), so the angle to Jᵀ plateaus. (The
    same run on the tanh net with the batch-mean J: 8.2° to Jᵀ, 1.2° to its column space.)"""
    net = ForwardNetwork([4, 6, 5, 3], "linear", seed=0)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    Jt = stacked_jacobian(net, x).transpose(-1, -2)            # [S, Σn, n_L]
    project = Jt @ torch.linalg.pinv(Jt)
    Q, elapsed, to_J, to_span = "random", 0, [], []
    start = DFCSleep(net, x, k_p=0.5).initial_state()
    first = torch.cat([start[f"Q_{l}"] for l in (1, 2, 3)], 1)
    assert angle(first, Jt).item() > 45
    for T in (50, 50, 100, 200):
        Q = learn_dfc_feedback(net, x, time=T, seed=elapsed, feedback=Q, k_p=0.5, tau_Q=30.0,
                               dt=0.02)
        elapsed += T
        Qs = torch.cat(Q, 1)
        to_J.append(angle(Qs, Jt).item())
        to_span.append(angle(Qs, project @ Qs).item())
    assert all(a < 11.5 for a in to_J) and to_J[-1] < 10.5
    assert all(later < earlier for earlier, later in zip(to_span, to_span[1:]))
    assert to_span[0] > 5 and to_span[-1] < 2.0
    # wake: DFC with the learned Q updates the weights within 2.6° (measured) of DFC with Q = Jᵀ
    y = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    updates = []
    for feedback in (Q, "jacobian"):
        c = DeepFeedbackControl(net, x, y, nudge=1e-3, alpha=1e-3, k_p=2.0, feedback=feedback)
        updates.append([w for w, _ in c.weight_updates(c.steady_state())])
    assert angle(*updates).item() < 4.0
