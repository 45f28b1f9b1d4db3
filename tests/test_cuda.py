"""The batched path on a GPU gives the CPU's numbers (skipped where no CUDA device exists)."""
import pytest
import torch

from circuits import DynamicInversion, ForwardNetwork, analyse_circuit
from circuits.feedback_control import DeepFeedbackControl
from solvers import solve

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("method", ["euler", "rk4", "exp_euler"])
def test_dynamic_inversion_on_cuda_matches_cpu(method):
    results = {}
    for device in ("cpu", "cuda"):
        net = ForwardNetwork([4, 6, 5, 3], seed=0, device=device)
        x = torch.linspace(-1, 1, 8, dtype=torch.float64).reshape(2, 4)
        y = torch.ones(2, 3, dtype=torch.float64)
        c = DynamicInversion(net, x, y, alpha=torch.linspace(0.0, 1.0, 64),
                             tau_delta=[1.0] * 63 + [0.01])          # the last one diverges
        sol = solve(c, c.initial_state(), 0.0, 500.0, dt=0.05, method=method, save_every=100)
        results[device] = sol
        assert sol.ts.device.type == device and sol.status.device.type == device
    cpu, gpu = results["cpu"], results["cuda"]
    assert torch.equal(cpu.status, gpu.status.cpu())
    for k in cpu.ys:
        assert torch.allclose(cpu.ys[k], gpu.ys[k].cpu(), rtol=1e-9, atol=1e-12)


def test_feedback_control_and_stability_on_cuda():
    net = ForwardNetwork([4, 6, 5, 3], seed=0, device="cuda")
    x = torch.ones(1, 4, dtype=torch.float64)
    c = DeepFeedbackControl(net, x, torch.zeros(1, 3, dtype=torch.float64), nudge=1e-4,
                            alpha=[0.1, 0.01], k_p=[0.5, 2.0])
    sol = solve(c, c.initial_state(), 0.0, 500.0, dt=0.01, method="rk4", atol=1e-14, rtol=1e-11)
    assert sol.converged.all()
    assert analyse_circuit(c, method="rk4", dt=0.01).converges.all()


@pytest.mark.parametrize("gate", ["schedule", "arrival"])
def test_predictive_coding_on_cuda_matches_cpu(gate):
    from circuits import ArrivalGate, PredictiveCoding, Schedule
    changes = {}
    for device in ("cpu", "cuda"):
        net = ForwardNetwork([5, 8, 8, 3], "relu", seed=[0, 1, 2], device=device)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4, 5, generator=g, dtype=torch.float64)
        y = torch.randn(4, 3, generator=g, dtype=torch.float64)
        if gate == "schedule":
            c = PredictiveCoding(net, x, y, eta=0.1, plasticity=Schedule.z_il(net.L))
            y0 = c.initial_state()
        else:
            c = PredictiveCoding(net, x, None, eta=0.1, plasticity=ArrivalGate())
            y0 = solve(c, c.initial_state(), 0.0, 500.0, dt=0.1, atol=1e-14, rtol=1e-12).y1
            c.present(target=y)
        sol = solve(c, y0, 0.0, 6.0, dt=1.0, steady_state=False)
        changes[device] = c.weight_changes(y0, sol.y1)
    for (wc, bc), (wg, bg) in zip(changes["cpu"], changes["cuda"]):
        assert torch.allclose(wc, wg.cpu(), rtol=1e-9, atol=1e-13)
        assert torch.allclose(bc, bg.cpu(), rtol=1e-9, atol=1e-13)
