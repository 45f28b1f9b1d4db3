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
