"""Deep feedback control against its linearised closed form, both leak conventions, and the
stability claim of SPEC §2."""
import pytest
import torch

from circuits import ForwardNetwork, analyse_circuit
from circuits.feedback_control import DeepFeedbackControl
from solvers import Status, solve

F64 = torch.float64


def make(widths=(4, 6, 5, 3), B=2, seed=1, activation="tanh"):
    net = ForwardNetwork(list(widths), activation=activation, seed=seed)
    g = torch.Generator().manual_seed(seed)
    return net, torch.randn(B, widths[0], generator=g, dtype=F64), \
        torch.randn(B, widths[-1], generator=g, dtype=F64)


def deviation_error(c, y1):
    """Relative error of the *deviation* from the feed-forward pass (v itself is O(1))."""
    star = c.steady_state()
    num = sum(((y1[f"v_{l}"] - star[f"v_{l}"]) ** 2).sum() for l in (1, 2, 3))
    den = sum(((star[f"v_{l}"] - c.forward.a[l - 1]) ** 2).sum() for l in (1, 2, 3))
    return (num / den).sqrt().item(), ((y1["u"] - star["u"]).norm() / star["u"].norm()).item()


@pytest.mark.parametrize("leak", ["integral", "total"])
def test_weak_nudge_settles_on_the_linearised_closed_form(leak):
    net, x, y = make(B=1)
    # B = 1 so that Q = Jᵀ exactly; the closed form is first order in the nudge.
    c = DeepFeedbackControl(net, x, y, nudge=1e-4, alpha=[0.1, 0.01, 0.05],
                            k_p=[0.5, 2.0, 0.0], k_i=[1.0, 1.0, 0.5], leak=leak)
    sol = solve(c, c.initial_state(), 0.0, 2000.0, dt=0.01, method="rk4", atol=1e-14,
                rtol=1e-11)
    assert sol.converged.all()
    dv, du = deviation_error(c, sol.y1)
    assert dv < 1e-4 and du < 1e-4
    # the two conventions' effective leaks
    a, ki, kp = c.alpha.flatten(), c.k_i.flatten(), c.k_p.flatten()
    expected = a / (ki + a * kp) if leak == "integral" else a / ki
    assert torch.allclose(c.alpha_tilde.flatten(), expected)
    # closed form error shrinks linearly with the nudge
    c2 = DeepFeedbackControl(net, x, y, nudge=1e-3, alpha=0.1, k_p=0.5, leak=leak)
    sol2 = solve(c2, c2.initial_state(), 0.0, 2000.0, dt=0.01, method="rk4", atol=1e-14,
                 rtol=1e-11)
    ratio = deviation_error(c2, sol2.y1)[0] / dv_first(net, x, y, leak)
    assert 5 < ratio < 20


def dv_first(net, x, y, leak):
    c = DeepFeedbackControl(net, x, y, nudge=1e-4, alpha=0.1, k_p=0.5, leak=leak)
    sol = solve(c, c.initial_state(), 0.0, 2000.0, dt=0.01, method="rk4", atol=1e-14,
                rtol=1e-11)
    return deviation_error(c, sol.y1)[0]


def test_feedback_delivered_is_damped_minimum_norm_for_jacobian_feedback():
    """Q = Jᵀ, α → 0: the stacked feedback Q u* = J⁺ δ_L (minimum norm, SPEC §2)."""
    net, x, y = make(B=1)
    c = DeepFeedbackControl(net, x, y, nudge=1e-4, alpha=1e-9)
    star = c.steady_state()
    Q = torch.cat(c.feedback, dim=1)[0]                # stacked [Σn, n_L]
    J = torch.cat([J[0, 0] for J in c.jacobians], dim=1)
    delivered = Q @ star["u_total"][0, 0]
    assert torch.allclose(delivered, torch.linalg.pinv(J) @ c.delta_L[0, 0], rtol=1e-6,
                          atol=1e-12)


def test_strong_target_drives_the_output_to_the_label():
    net, x, y = make(B=1)
    c = DeepFeedbackControl(net, x, y, target_mode="strong", alpha=0.0, k_p=1.0)
    sol = solve(c, c.initial_state(), 0.0, 500.0, dt=0.01, method="rk4", atol=1e-12,
                rtol=1e-10)
    assert sol.converged.all()
    assert torch.allclose(c.observe(sol.y1)["r_3"], y[None], atol=1e-8)


def test_pure_integral_control_diverges_where_proportional_gain_converges():
    """τ_v/τ_u = 0.2 and a large loop gain through the hidden layers: k_p = 0 is unstable
    (the output sees the controller through two lags and an integrator), k_p = 2 is stable.
    In a linear network the unstable mode grows without bound; with tanh it saturates into a
    limit cycle, which never settles (reached_t1) but stays bounded."""
    for activation, unstable_status in (("linear", Status.DIVERGED), ("tanh", Status.REACHED_T1)):
        net, x, y = make(B=1, activation=activation)
        c0 = DeepFeedbackControl(net, x, y, nudge=1e-2)
        Q = [30 * q for q in c0.feedback[:-1]] + [torch.zeros_like(c0.feedback[-1])]
        c = DeepFeedbackControl(net, x, y, nudge=1e-2, alpha=0.0, k_p=[0.0, 2.0], tau_v=0.2,
                                tau_u=1.0, feedback=Q)
        report = analyse_circuit(c, method="rk4", dt=0.02)
        assert report.converges.tolist() == [False, True]
        sol = solve(c, c.initial_state(), 0.0, 150.0, dt=0.02, method="rk4", atol=1e-10,
                    rtol=1e-8, divergence_bound=1e3)
        assert sol.status.tolist() == [unstable_status, Status.CONVERGED], activation
