"""The stiff methods (solvers.implicit) against known maps: backward Euler's one-step map, the
fixed point of a stiff linear system at huge steps, replica independence, the geometric grid,
and the dynamic-inversion circuit against its closed form (NDI)."""
import math

import pytest
import torch

from circuits import DynamicInversion, ForwardNetwork, SingleLoopDynamicInversion
from solvers import IMPLICIT, MAX_SIZE, Status, get_method, rk_step, solve
from circuits.stability import jacobian
from solvers.implicit import replica_jacobian

F64 = torch.float64


def stiff_matrix(fast: float = -1e4, slow: float = -1e-2, seed: int = 0,
                 D: int = 2) -> torch.Tensor:
    """A non-normal D × D matrix with eigenvalues spread from ``fast`` to ``slow``."""
    g = torch.Generator().manual_seed(seed)
    V = torch.eye(D, dtype=F64) + 0.3 * torch.randn(D, D, generator=g, dtype=F64)
    lam = torch.logspace(math.log10(-fast), math.log10(-slow), D, dtype=F64).neg()
    return V @ torch.diag(lam) @ torch.linalg.inv(V)


class Affine:
    """``dy/dt = A y + c`` per replica: ``A [S, D, D]``, ``c [S, D]``."""

    def __init__(self, A: torch.Tensor, c: torch.Tensor):
        self.A, self.c = A, c

    def __call__(self, t, y):
        return {"y": (self.A @ y["y"][..., None])[..., 0] + self.c}

    def fixed_point(self) -> torch.Tensor:
        return -torch.linalg.solve(self.A, self.c)


A1 = stiff_matrix()
C1 = torch.tensor([1.0, -2.0], dtype=F64)
Y0 = torch.tensor([[0.5, 3.0]], dtype=F64)


# at h = 1e3, cond(I − hA) ≈ 1e6: the two ways of writing the map differ by ~cond · ε
@pytest.mark.parametrize("h, tol", [(1e-5, 1e-12), (1e-2, 1e-12), (1.0, 1e-12), (1e3, 1e-10)])
def test_one_step_is_backward_eulers_map(h, tol):
    f = Affine(A1[None], C1[None])
    sol = solve(f, {"y": Y0}, 0.0, h, dt=h, method="implicit_euler", steady_state=False)
    eye = torch.eye(2, dtype=F64)
    expected = torch.linalg.solve(eye - h * A1, Y0[0] + h * C1)
    assert sol.stats["steps"] == 1
    err = (sol.y1["y"][0] - expected).abs().max() / expected.abs().max()
    assert err < tol, err.item()


@pytest.mark.parametrize("h", [1e-3, 1.0, 1e4])
def test_exp_rosenbrock_step_is_the_exact_flow_of_an_affine_field(h):
    f = Affine(A1[None], C1[None])
    sol = solve(f, {"y": Y0}, 0.0, h, dt=h, method="exp_rosenbrock", steady_state=False)
    star = f.fixed_point()[0]
    exact = star + torch.linalg.matrix_exp(h * A1) @ (Y0[0] - star)
    # matrix_exp's squarings cost accuracy as ‖hA‖ grows: ~3e-10 relative at ‖hA‖ = 1e8
    assert (sol.y1["y"][0] - exact).abs().max() / exact.abs().max() < 1e-9


def test_huge_steps_reach_the_fixed_point_where_explicit_euler_diverges():
    f = Affine(A1[None], C1[None])
    star = f.fixed_point()
    for method in ("implicit_euler", "exp_rosenbrock"):
        sol = solve(f, {"y": Y0}, 0.0, 1e12, dt=1e8, method=method, check_every=1,
                    atol=1e-14, rtol=1e-12)
        assert sol.status.tolist() == [Status.CONVERGED], method
        assert sol.stats["steps"] <= 3, (method, sol.stats["steps"])
        # the reference −A⁻¹c itself is good to ~cond(A) ε ≈ 1e-10
        assert ((sol.y1["y"] - star).norm() / star.norm()).item() < 1e-9, method
    # explicit Euler is unstable for dt > 2/1e4 on this system
    explicit = solve(f, {"y": Y0}, 0.0, 10.0, dt=1e-3, method="euler")
    assert explicit.status.tolist() == [Status.DIVERGED]


def test_implicit_euler_converges_with_order_one_and_exp_rosenbrock_is_exact():
    A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=F64)
    f = Affine(A[None], C1[None])
    star = f.fixed_point()[0]
    exact = star + torch.linalg.matrix_exp(2.0 * A) @ (Y0[0] - star)
    errs = []
    for dt in (0.02, 0.01, 0.005):
        sol = solve(f, {"y": Y0}, 0.0, 2.0, dt=dt, method="implicit_euler", steady_state=False)
        errs.append((sol.y1["y"][0] - exact).norm().item())
        ros = solve(f, {"y": Y0}, 0.0, 2.0, dt=dt, method="exp_rosenbrock", steady_state=False)
        assert (ros.y1["y"][0] - exact).norm().item() < 1e-9 * exact.norm().item()
    slopes = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(abs(s - 1.0) < 0.1 for s in slopes), (errs, slopes)


@pytest.mark.parametrize("method", sorted(IMPLICIT))
def test_replicas_are_independent(method):
    S = 3
    A = torch.stack([stiff_matrix(-10.0 ** (2 + s), -10.0 ** (-s), seed=s, D=4)
                     for s in range(S)])
    c = torch.randn(S, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    y0 = torch.randn(S, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    kwargs = dict(dt=0.01, method=method, dt_growth=1.5, check_every=1, atol=1e-12,
                  rtol=1e-10)
    together = solve(Affine(A, c), {"y": y0}, 0.0, 1e9, **kwargs)
    assert together.counts()["converged"] == S
    assert len(set(together.t_stop.tolist())) == S          # each stopped on its own
    for s in range(S):
        alone = solve(Affine(A[s:s + 1], c[s:s + 1]), {"y": y0[s:s + 1]}, 0.0, 1e9, **kwargs)
        assert alone.t_stop.item() == together.t_stop[s].item()
        assert torch.allclose(alone.y1["y"][0], together.y1["y"][s], rtol=1e-12, atol=1e-14)
        star = Affine(A[s:s + 1], c[s:s + 1]).fixed_point()
        assert ((alone.y1["y"] - star).norm() / star.norm()).item() < 1e-9


def test_replica_jacobian_matches_the_matrix():
    A = torch.stack([stiff_matrix(seed=s, D=5) for s in range(3)])
    f = Affine(A, torch.zeros(3, 5, dtype=F64))
    J = replica_jacobian(lambda y: f(0.0, {"y": y})["y"], torch.randn(3, 5, dtype=F64))
    assert torch.allclose(J, A, rtol=1e-13, atol=1e-9)


def test_geometric_grid_times_and_saved_points():
    f = Affine(A1[None], C1[None])
    sol = solve(f, {"y": Y0}, 0.0, 100.0, dt=1.0, dt_growth=2.0, method="exp_rosenbrock",
                steady_state=False, save_every=1)
    # t_k = 2^k − 1 up to 63, then the last step is cut to end at t1
    assert sol.ts.tolist() == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 100.0]
    assert sol.stats["steps"] == 7
    star = f.fixed_point()[0]
    for t, y in zip(sol.ts.tolist(), sol.ys["y"][:, 0]):
        exact = star + torch.linalg.matrix_exp(t * A1) @ (Y0[0] - star)
        assert (y - exact).norm().item() < 1e-9 * exact.norm().item(), t
    mid = solve(f, {"y": Y0}, 0.0, 100.0, dt=1.0, dt_growth=2.0, method="exp_rosenbrock",
                steady_state=False, save_at=[5.0])
    y3, y7 = sol.ys["y"][2, 0], sol.ys["y"][3, 0]
    assert torch.allclose(mid.ys["y"][0, 0], torch.lerp(y3, y7, 0.5), rtol=1e-14, atol=0)


def _network(scale: float = 1.5):
    return ForwardNetwork([6, 5, 4, 3], activation="tanh", bias=True, seed=0, scale=scale)


@pytest.mark.parametrize("method, jacobian_every",
                         [("implicit_euler", 1), ("implicit_euler", None),
                          ("exp_rosenbrock", None)])
def test_dynamic_inversion_settles_onto_ndi(method, jacobian_every):
    net = _network()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 6, generator=g, dtype=F64), torch.randn(2, 3, generator=g, dtype=F64)
    di = DynamicInversion(net, x, y, alpha=torch.tensor([1e-1, 1e-2, 1e-3], dtype=F64))
    sol = solve(di, di.initial_state(), 0.0, 1e9, dt=0.1, method=method, dt_growth=1.5,
                jacobian_every=jacobian_every, check_every=1, atol=1e-13, rtol=1e-12)
    assert sol.counts()["converged"] == 3
    star = di.steady_state()
    for name, v in star.items():
        err = ((sol.y1[name] - v).norm() / v.norm()).item()
        assert err < 1e-8, (name, err)
    assert sol.stats["steps"] < 80


def test_single_loop_di_settles_onto_its_closed_form():
    net = _network(scale=0.5)            # at scale 1.5 this SDI loop is unstable (Re λ ≈ +1.2)
    x, y = torch.randn(1, 6, dtype=F64), torch.randn(1, 3, dtype=F64)
    sdi = SingleLoopDynamicInversion(net, x, y, alpha=torch.tensor([1e-2, 1e-3], dtype=F64))
    assert (torch.linalg.eigvals(jacobian(sdi, sdi.initial_state())).real.amax() < 0).item()
    sol = solve(sdi, sdi.initial_state(), 0.0, 1e9, dt=1.0, method="exp_rosenbrock",
                dt_growth=2.0, jacobian_every=None, check_every=1, atol=1e-13, rtol=1e-12)
    star = sdi.steady_state()
    assert sol.counts()["converged"] == 2
    for name, v in star.items():
        assert ((sol.y1[name] - v).norm() / v.norm()).item() < 1e-8, name


def test_backward_euler_settles_an_unstable_fixed_point_that_exp_rosenbrock_does_not():
    # dy/dt = y − 1: the fixed point 1 repels. Backward Euler's R(z) = 1/(1 − z) has |R| < 1 for
    # z = h > 2, so with large steps it "settles" there; the exact flow runs away.
    f = lambda t, y: {"y": y["y"] - 1.0}                                       # noqa: E731
    y0 = {"y": torch.zeros(1, 1, dtype=F64)}
    be = solve(f, y0, 0.0, 1e6, dt=10.0, method="implicit_euler", check_every=1)
    assert be.status.tolist() == [Status.CONVERGED]
    assert abs(be.y1["y"].item() - 1.0) < 1e-6
    ros = solve(f, y0, 0.0, 1e6, dt=10.0, method="exp_rosenbrock", check_every=1)
    assert ros.status.tolist() == [Status.DIVERGED]


def test_nonlinear_stiff_field_reaches_its_root():
    # dy/dt = −k (y³ + y − c): one real root per replica, stiffness k up to 1e6
    k = torch.tensor([[1.0], [1e3], [1e6]], dtype=F64)
    c = torch.tensor([[0.5], [2.0], [10.0]], dtype=F64)
    f = lambda t, y: {"y": -k * (y["y"] ** 3 + y["y"] - c)}                  # noqa: E731
    sol = solve(f, {"y": torch.zeros(3, 1, dtype=F64)}, 0.0, 1e6, dt=1e-3, dt_growth=1.5,
                method="implicit_euler", check_every=1, atol=1e-12, rtol=1e-12)
    assert sol.counts()["converged"] == 3
    r = sol.y1["y"]
    assert (r ** 3 + r - c).abs().max().item() < 1e-10


def test_bad_input_is_refused_with_the_method_named():
    big = {"y": torch.zeros(1, MAX_SIZE + 1, dtype=F64)}
    with pytest.raises(ValueError, match=r"method: received 'implicit_euler'.*D = 4097"):
        solve(lambda t, y: y, big, 0.0, 1.0, dt=0.1, method="implicit_euler")
    with pytest.raises(ValueError, match="dt_growth.*'rk4'"):
        solve(lambda t, y: y, {"y": Y0}, 0.0, 1.0, dt=0.1, method="rk4", dt_growth=2.0)
    with pytest.raises(ValueError, match="dt_growth"):
        solve(lambda t, y: y, {"y": Y0}, 0.0, 1.0, dt=0.1, method="implicit_euler",
              dt_growth=0.5)
    with pytest.raises(ValueError, match="jacobian_every"):
        solve(lambda t, y: y, {"y": Y0}, 0.0, 1.0, dt=0.1, method="euler", jacobian_every=None)
    with pytest.raises(ValueError, match="jacobian_every"):
        solve(lambda t, y: y, {"y": Y0}, 0.0, 1.0, dt=0.1, method="implicit_euler",
              jacobian_every=0)
    with pytest.raises(ValueError, match="implicit_euler.*exp_rosenbrock|exp_rosenbrock.*"
                                         "implicit_euler"):
        get_method("backward_euler")
    assert get_method("implicit_euler").order == 1 and get_method("implicit_euler").stages == 1
    with pytest.raises(ValueError, match="per-replica Jacobian"):
        rk_step(get_method("implicit_euler"), lambda t, y: y, 0.0, Y0, 0.1)
