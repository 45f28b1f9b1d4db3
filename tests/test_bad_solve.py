"""``solve`` checks its state against the circuit before any work: each case asserts the error
type and that the message names the parameter and what was expected."""
import pytest
import torch

from circuits import DynamicInversion, ForwardNetwork
from solvers import solve

F64 = torch.float64
NET = ForwardNetwork([3, 4, 2], seed=0, dtype=F64)
X = torch.zeros(2, 3, dtype=F64)
Y = torch.ones(2, 2, dtype=F64)
DI = DynamicInversion(NET, X, Y, alpha=[0.1, 0.2])            # S = 2, B = 2, u_2 [2, 2, 2]


def state(**change):
    y = DI.initial_state()
    y.update(change)
    return {k: v for k, v in y.items() if v is not None}


@pytest.mark.parametrize("y0,error,match", [
    (state(u_2=None), ValueError, r"y0: received populations \['delta_1'\], expected .*missing "
                                  r"\['u_2'\]"),
    (state(extra=torch.zeros(2, 2, 2, dtype=F64)), ValueError, r"unexpected \['extra'\]"),
    ({k: v[:1] for k, v in state().items()}, ValueError, r"y0: received S = 1 replicas, "
                                                          r"expected S = 2"),
    (state(u_2=torch.zeros(2, 2, 3, dtype=F64)), ValueError,
     r"y0\['u_2'\]: received shape \(2, 2, 3\), expected \[S, B, 2\]"),
    (state(u_2=torch.zeros(2, 2, dtype=F64)), ValueError, r"y0\['u_2'\]: received shape \(2, 2\)"),
    ({k: v.float() for k, v in state().items()}, ValueError,
     r"y0: received dtype torch.float32, expected torch.float64 like the circuit"),
    ({k: v.half() for k, v in state().items()}, TypeError,
     r"y0: received dtype torch.float16, expected torch.float32 or torch.float64"),
    ({k: v.to(torch.complex128) for k, v in state().items()}, TypeError, r"y0\['u_2'\]: .*complex"),
    ({k: v.long() for k, v in state().items()}, TypeError, r"y0\['u_2'\]: received dtype torch.int64"),
    ({k: v.to("meta") for k, v in state().items()}, ValueError,
     r"y0: received device meta, expected cpu"),
    ({k: v[:0] for k, v in state().items()}, ValueError, r"y0: received S = 0 replicas"),
])
def test_solve_checks_y0_against_the_circuit(y0, error, match):
    with pytest.raises(error, match=match):
        solve(DI, y0, 0.0, 1.0, dt=0.1)


def test_solve_checks_plain_fields_for_empty_and_wrong_dtypes():
    f = (lambda t, y: {"v": -y["v"]})
    with pytest.raises(ValueError, match=r"y0: received empty populations \['v'\]"):
        solve(f, {"v": torch.zeros(2, 0)}, 0.0, 1.0, dt=0.1)
    with pytest.raises(TypeError, match=r"y0: received dtype torch.bfloat16"):
        solve(f, {"v": torch.zeros(2, 3, dtype=torch.bfloat16)}, 0.0, 1.0, dt=0.1)


@pytest.mark.parametrize("field,match", [
    (lambda t, y: {"w": -y["v"]}, r"f: returned \['w'\], expected a mapping with the state's "
                                  r"populations \['v'\]"),
    (lambda t, y: {"v": -y["v"][0]}, r"f: returned 'v' with \(3,\) torch.float64, expected "
                                     r"shape \(2, 3\)"),
    (lambda t, y: {"v": (-y["v"]).float()}, r"f: returned 'v' .*torch.float32, expected .*"
                                            r"dtype torch.float64"),
    (lambda t, y: -y["v"], r"f: returned Tensor, expected a mapping"),
    (lambda t, y: {"v": 1.0}, r"f: returned 'v' with float"),
])
def test_solve_checks_the_fields_first_output(field, match):
    with pytest.raises(ValueError, match=match):
        solve(field, {"v": torch.ones(2, 3, dtype=F64)}, 0.0, 1.0, dt=0.1)


def test_step_budget_is_checked_before_any_work():
    with pytest.raises(ValueError, match=r"t1, dt: received t1 = 1000000000.0, dt = 0.1 .*"
                                         r"expected at most max_steps = 10000000"):
        solve(DI, DI.initial_state(), 0.0, 1e9, dt=0.1)
    with pytest.raises(ValueError, match=r"max_steps: received 0"):
        solve(DI, DI.initial_state(), 0.0, 1.0, dt=0.1, max_steps=0)
    # a long span is fine with a growing step, and with a raised budget
    sol = solve(DI, DI.initial_state(), 0.0, 1e9, method="auto", dt=0.1)
    assert bool(sol.converged.all()) and sol.stats["steps"] < 100
    assert solve(DI, DI.initial_state(), 0.0, 2.0, dt=0.1, max_steps=20).stats["steps"] == 20


@pytest.mark.parametrize("kwargs,match", [
    (dict(adaptive_rtol=-1.0), r"adaptive_rtol: received -1.0, expected a finite number > 0"),
    (dict(adaptive_rtol=0.0), r"adaptive_rtol: received 0.0"),
    (dict(adaptive_atol=float("nan")), r"adaptive_atol: received nan"),
])
def test_adaptive_tolerances_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve(DI, DI.initial_state(), 0.0, 1.0, method="dopri5", **kwargs)
