"""Dynamic inversion and single-loop DI against their closed forms (float64), stability
prediction against simulation, replica independence."""
import pytest
import torch

from circuits import (DynamicInversion, ForwardNetwork, SingleLoopDynamicInversion,
                      analyse_circuit, effective_leak)
from solvers import Status, solve

F64 = torch.float64


def make(widths, activation="tanh", seed=0, B=3, init="orthogonal"):
    """Orthogonal weights (all singular values 1) keep the slowest mode fast: the tests are
    about the fixed point, not about how long an ill-conditioned layer takes to reach it."""
    net = ForwardNetwork(widths, activation=activation, seed=seed, init=init)
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(B, widths[0], generator=g, dtype=F64)
    y = torch.randn(B, widths[-1], generator=g, dtype=F64)
    return net, x, y


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def settle(circuit, t1=10000.0, dt=0.2, method="exp_euler", **kw):
    kw = {"atol": 1e-13, "rtol": 1e-11, **kw}
    return solve(circuit, circuit.initial_state(), 0.0, t1, dt=dt, method=method, **kw)


SHAPES = {
    "contracting": [5, 8, 6, 3],
    "square": [4, 5, 5, 5],
    "expanding": [3, 4, 6, 7],
}


# α = 0 with an expanding layer has no fixed point: see test_expanding_layer_at_zero_leak.
@pytest.mark.parametrize("shape,alpha", [(s, a) for s in sorted(SHAPES)
                                         for a in (0.0, 0.01, 0.3, 2.0)
                                         if not (s == "expanding" and a == 0.0)])
def test_layerwise_steady_state_matches_closed_form(shape, alpha):
    net, x, y = make(SHAPES[shape])
    circuit = DynamicInversion(net, x, y, alpha=alpha)
    sol = settle(circuit)
    assert sol.status.tolist() == [Status.CONVERGED]
    star = circuit.steady_state()
    assert set(star) == set(sol.y1)
    for name, value in star.items():
        assert rel(sol.y1[name], value) <= 1e-6, name


def test_expanding_layer_at_zero_leak():
    """α = 0, expanding layer: the controller drifts along null(Wᵀ) (no fixed point), but the
    error populations converge to the least-squares inverse (BW)⁻¹Bδ = W⁺δ."""
    net, x, y = make(SHAPES["expanding"], activation="linear")
    circuit = DynamicInversion(net, x, y, alpha=0.0)
    sol = settle(circuit, t1=3000.0)
    assert sol.status.tolist() == [Status.REACHED_T1]
    star = circuit.steady_state()
    assert "u_3" not in star
    W3 = net.weights[2][0]
    assert torch.allclose(star["delta_2"][0], circuit.delta_L[0] @ torch.linalg.pinv(W3).T)
    for name in ("delta_1", "delta_2"):
        assert rel(sol.y1[name], star[name]) <= 1e-6


def test_closed_form_is_damped_pseudo_inverse_for_transposed_feedback():
    net, x, y = make([5, 8, 6, 3])
    for alpha in (1e-4, 0.1, 10.0):
        c = DynamicInversion(net, x, y, alpha=alpha)
        W3 = net.weights[2][0]
        expected = c.delta_L[0] @ (W3.T @ torch.linalg.inv(W3 @ W3.T + alpha * torch.eye(3,
                                                                                      dtype=F64))).T
        assert rel(c.steady_state()["delta_2"][0], expected) < 1e-12
    # α ≫ σ_max² gives the backprop direction Wᵀδ / α
    c = DynamicInversion(net, x, y, alpha=1e6)
    assert rel(c.steady_state()["delta_2"][0] * 1e6, c.delta_L[0] @ W3) < 1e-5


def test_gains_give_effective_leak():
    """With k_i and k_p the steady state is the α̃ = α/(k_i + α k_p) one (SPEC §1)."""
    net, x, y = make([4, 6, 5, 3])
    c = DynamicInversion(net, x, y, alpha=0.2, k_i=[0.5, 2.0, 1.0], k_p=[0.0, 0.7, 3.0])
    sol = settle(c, dt=0.02)
    assert sol.converged.all()
    for s, (ki, kp) in enumerate([(0.5, 0.0), (2.0, 0.7), (1.0, 3.0)]):
        ref = DynamicInversion(net, x, y, alpha=0.2 / (ki + 0.2 * kp))   # k_i = 1, k_p = 0
        for l in (1, 2):
            assert rel(sol.y1[f"delta_{l}"][s], ref.steady_state()[f"delta_{l}"][0]) < 1e-6
    assert torch.allclose(c.alpha_tilde.flatten(),
                          effective_leak(torch.tensor(0.2), torch.tensor([0.5, 2.0, 1.0]),
                                         torch.tensor([0.0, 0.7, 3.0])).to(F64))


@pytest.mark.parametrize("widths", [[5, 8, 6, 3], [4, 5, 5, 5], [3, 4, 6, 7], [6, 3, 9, 2]])
def test_transposed_feedback_is_stable_for_every_leak(widths):
    net, x, y = make(widths)
    alphas = [0.0, 1e-3, 0.1, 1.0, 10.0]
    c = DynamicInversion(net, x, y, alpha=alphas, k_p=0.0)
    for l in range(2, net.L + 1):
        M = c.loop_matrix(l)
        sym = torch.linalg.eigvalsh(M + M.transpose(-1, -2))   # M + Mᵀ ≼ 0
        assert (sym <= 1e-10).all()
    report = analyse_circuit(c)
    positive = torch.tensor(alphas) > 0
    assert (report.spectral_abscissa[positive] < 0).all()
    assert (report.spectral_abscissa <= 1e-10).all()


def test_cascade_spectrum_is_union_of_loop_spectra():
    net, x, y = make([4, 6, 5, 3], B=1)
    c = DynamicInversion(net, x, y, alpha=[0.05, 0.5], feedback="random", k_p=0.3)
    full = torch.sort(torch.linalg.eigvals(
        __import__("circuits").jacobian(c, c.initial_state())).real, dim=-1).values
    parts = torch.sort(torch.cat([torch.linalg.eigvals(c.loop_matrix(l)).real
                                  for l in (2, 3)], dim=-1), dim=-1).values
    assert torch.allclose(full, parts, atol=1e-10)


def test_predicted_stability_agrees_with_simulation():
    """Random feedback: some replicas unstable. Eigenvalues predict which ones the simulation
    reports diverged; a stable circuit with too large an Euler step diverges as predicted."""
    S = 48
    net, x, y = make([4, 6, 5, 3], B=1)
    c = DynamicInversion(net, x, y, alpha=torch.linspace(0.05, 1.0, S), feedback="random")
    report = analyse_circuit(c, method="euler", dt=0.1)
    sol = settle(c, t1=4000.0, dt=0.1, method="euler", atol=1e-9, rtol=1e-7)
    clear = report.spectral_abscissa.abs() > 0.02       # leave out the marginal ones
    assert clear.sum() >= 0.8 * S
    predicted = report.converges[clear]
    assert predicted.any() and (~predicted).any()
    assert torch.equal(sol.converged[clear], predicted)
    assert torch.equal(sol.diverged[clear], ~predicted)
    # Euler's own limit: B = −Wᵀ is stable, but not with dt beyond the unit disc around −1.
    stable = DynamicInversion(net, x, y, alpha=[0.1, 0.1], tau_delta=[1.0, 0.02])
    report = analyse_circuit(stable, method="euler", dt=0.05)
    assert report.stable.all() and report.step_stable.tolist() == [True, False]
    sol = settle(stable, t1=5000.0, dt=0.05, method="euler", atol=1e-9, rtol=1e-7)
    assert sol.status.tolist() == [Status.CONVERGED, Status.DIVERGED]
    # exponential Euler treats the fast leak exactly: stable at the same dt
    report = analyse_circuit(stable, method="exp_euler", dt=0.05)
    assert report.converges.all()


def test_stabilised_random_feedback_converges_to_its_closed_form():
    net, x, y = make([4, 6, 5, 3], B=1)
    S = 16
    c0 = DynamicInversion(net, x, y, alpha=[0.1] * S, feedback="random", feedback_seed=3)
    assert (~analyse_circuit(c0).stable).any()
    c = DynamicInversion(net, x, y, alpha=[0.1] * S, feedback="random", feedback_seed=3,
                         stabilise=True, stability_margin=0.05)
    report = analyse_circuit(c, method="rk4", dt=0.1)
    assert (report.spectral_abscissa < -0.05).all() and report.converges.all()
    sol = settle(c, t1=20000.0, method="rk4", dt=0.1)
    assert sol.converged.all()
    for name, value in c.steady_state().items():
        assert rel(sol.y1[name], value) <= 1e-6


@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_single_loop_at_zero_leak_equals_layerwise(activation):
    net, x, y = make([4, 5, 5, 5, 5], activation=activation)
    layerwise = DynamicInversion(net, x, y, alpha=0.0)
    # Three lags and an integrator in one loop: k_i = 1 is unstable at this depth (spectral
    # abscissa +0.019), k_i = 0.5 is not; the steady state does not depend on k_i.
    assert not analyse_circuit(SingleLoopDynamicInversion(net, x, y, alpha=0.0)).stable.any()
    sdi = SingleLoopDynamicInversion(net, x, y, alpha=0.0, k_i=0.5)
    assert analyse_circuit(sdi).stable.all()
    sol = settle(sdi)
    assert sol.converged.all()
    for name, value in sdi.steady_state().items():
        assert rel(sol.y1[name], value) <= 1e-6
    if activation == "linear":       # carried linearly, the steady states coincide
        star = layerwise.steady_state()
        for l in (1, 2, 3):
            assert rel(sol.y1[f"delta_{l}"], star[f"delta_{l}"]) <= 1e-6


def test_replicas_in_one_call_equal_each_alone():
    net, x, y = make([4, 6, 5, 3])
    alphas, kis = [0.01, 0.1, 1.0], [1.0, 0.5, 2.0]
    together = settle(DynamicInversion(net, x, y, alpha=alphas, k_i=kis), t1=3000.0,
                      save_every=200)
    for s in range(3):
        alone = settle(DynamicInversion(net, x, y, alpha=alphas[s], k_i=kis[s]), t1=3000.0,
                       save_every=200)
        assert alone.status.item() == together.status[s].item()
        assert alone.t_stop.item() == together.t_stop[s].item()
        for k in alone.ys:
            assert torch.allclose(alone.ys[k][:, 0], together.ys[k][:, s], rtol=0, atol=1e-12)


def test_one_diverging_replica_leaves_the_others_unchanged():
    net, x, y = make([4, 6, 5, 3])
    tau = [1.0, 0.01, 1.0]        # replica 1 violates Euler's dt limit
    together = settle(DynamicInversion(net, x, y, alpha=0.1, tau_delta=tau), t1=500.0,
                      method="euler", dt=0.05, save_every=100, divergence_bound=1e8)
    assert together.status.tolist() == [Status.CONVERGED, Status.DIVERGED, Status.CONVERGED]
    assert all(torch.isfinite(v).all() and v.abs().max() <= 1e8 for v in together.ys.values())
    others = settle(DynamicInversion(net, x, y, alpha=0.1, tau_delta=[1.0, 1.0]), t1=500.0,
                    method="euler", dt=0.05, save_every=100, divergence_bound=1e8)
    for k in others.ys:
        assert torch.allclose(others.ys[k], together.ys[k][:, [0, 2]], rtol=0, atol=1e-13)


def test_float32_settles_with_the_default_tolerances():
    """The dtype-aware defaults let float32 replicas stop; the result is float32-accurate."""
    net = ForwardNetwork([5, 8, 6, 3], seed=0, init="orthogonal", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 5, generator=g), torch.randn(2, 3, generator=g)
    c = DynamicInversion(net, x, y, alpha=[0.1, 1.0])
    sol = solve(c, c.initial_state(), 0.0, 2000.0, dt=0.1, method="exp_euler")
    assert sol.converged.all()
    for name, value in c.steady_state().items():
        assert rel(sol.y1[name], value) < 1e-3
