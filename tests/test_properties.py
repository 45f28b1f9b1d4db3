"""Property-based tests (issue 13, item 5): construction, ``solve``, ``sweep`` and ``train`` across
random valid and invalid inputs (hypothesis).

Properties, for every drawn input:

* only the project's own error types escape: ``ValueError`` and ``TypeError`` (and their
  subclasses, e.g. :class:`solvers.checkpoint.CheckpointError`); an ``IndexError``,
  ``RuntimeError``, ``AssertionError``, ``KeyError``, ``ZeroDivisionError`` or a torch error is
  a defect;
* every returned result holds finite values only: a :class:`solvers.Solution`'s ``y1``, ``ys``,
  ``ts`` and ``t_stop``; a :class:`solvers.sweep.SweepResult`'s arrays (``settle_time`` is NaN
  exactly where a replica did not converge, by its definition; a diverged replica's ``error``
  may be NaN); a :class:`solvers.TrainingResult`'s state;
* statuses are valid codes (:class:`solvers.Status`), one per replica;
* a replica whose state exceeds the divergence bound is flagged diverged, never "converged" or
  "reached t1" with huge values.

Inputs are tiny (widths ≤ 6, S ≤ 4, B ≤ 3, spans ≤ 3 time units) and the runs are bounded and
reproducible: ``derandomize=True`` (the same examples every run), no example database, no
deadline; the whole file takes well under a minute on a 2-core CPU. Inputs that once crashed
are kept as explicit ``@example`` s.
"""
from __future__ import annotations

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from circuits import (ClosedForm, DynamicInversion, ForwardNetwork, Plastic,  # noqa: E402
                      PredictiveCoding)
from circuits.feedback_control import DeepFeedbackControl  # noqa: E402
from circuits.registry import learning_circuit  # noqa: E402
from circuits.target_propagation import TargetPropagation  # noqa: E402
from solvers import Status, solve  # noqa: E402
from solvers import train as integrate  # noqa: E402
from solvers.sweep import Grid, sweep  # noqa: E402

#: the project's own error types for bad input
OWN_ERRORS = (ValueError, TypeError)
STATUS_CODES = {int(s) for s in Status}
NAN, INF = float("nan"), float("inf")


def bounded(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    print_blob=True, phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


def attempt(fn, *args, **kwargs):
    """``fn(...)``, or None where it refused its input with one of the project's own errors;
    any other exception escapes and fails the property."""
    name = getattr(fn, "__name__", type(fn).__name__)
    try:
        out = fn(*args, **kwargs)
    except OWN_ERRORS as e:
        event(f"{name}: refused ({str(e)[:110]})")
        return None
    event(f"{name}: returned")
    return out


# -- strategies -------------------------------------------------------------------------------

BAD_NUMBERS = [0.0, -1.0, NAN, INF, -INF, 1e300, True, "1", None, 1j, [1.0, 2.0, 3.0, 4.0, 5.0]]


def maybe_bad(valid, bad=BAD_NUMBERS, odds: int = 12):
    """Mostly valid values, about once in ``odds`` one of ``bad`` (rare enough that most
    examples get past construction to ``solve``; hypothesis still explores each bad value)."""
    return st.sampled_from([False] * (odds - 1) + [True]).flatmap(
        lambda corrupt: st.sampled_from(bad) if corrupt else valid)


def pick(valid, bad, only_valid: bool):
    """``valid``, or with ``only_valid`` False :func:`maybe_bad` of it (bad once in 4: the
    tests corrupt one part of an input at a time)."""
    return valid if only_valid else maybe_bad(valid, bad, odds=4)


def positive(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


ACTIVATIONS = ["linear", "tanh", "relu", "sigmoid", "mish"]
DTYPES = [torch.float64, torch.float32]
BAD = {
    "widths": [[], [3], [3, 0, 2], [3, -1, 2], [3, 2.5, 2], "3,2", [True, 2], [0, 2]],
    "activation": ["bogus", None, 3],
    "output_activation": ["bogus", 1.0],
    "init": ["zeros", None],
    "scale": [0.0, -1.0, NAN, INF, "1", 1j],
    "replicas": [0, -1, 2.5, True],
    "seed": [1.5, True, "0", [], [0, 1.5], 2 ** 70, torch.tensor(1.0)],
    "dtype": [torch.int64, torch.float16, torch.bfloat16, torch.complex64, "float32", None],
    "bias": ["yes"],
}


@st.composite
def network_specs(draw, valid: bool = False, max_layers: int = 3):
    L = draw(st.integers(2, max_layers))
    S = draw(st.integers(1, 4))
    spec = {"widths": [draw(st.integers(1, 6)) for _ in range(L + 1)],
            "activation": draw(st.sampled_from(ACTIVATIONS)),
            "output_activation": draw(st.sampled_from(
                ["linear"] if valid else ["linear", "sigmoid", "tanh"])),    # PC: linear only
            "init": draw(st.sampled_from(["uniform", "normal", "orthogonal"])),
            "scale": draw(st.one_of(st.none(), positive(0.1, 3.0))),
            "dtype": draw(st.sampled_from(DTYPES)),
            "bias": draw(st.booleans())}
    if draw(st.booleans()):
        spec["seed"] = [draw(st.integers(0, 2 ** 31)) for _ in range(S)]
    else:
        spec["seed"], spec["replicas"] = draw(st.integers(-5, 2 ** 40)), S
    if not valid and draw(st.sampled_from([False, False, False, True])):
        key = draw(st.sampled_from(sorted(BAD)))
        spec[key] = draw(st.sampled_from(BAD[key]))
    return spec


def values(draw, shape, dtype):
    """A tensor of ``shape``: mostly standard normal, sometimes with a NaN, an inf, a huge
    entry or a wrong dtype."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 1000)))
    t = torch.randn(*shape, generator=g, dtype=torch.float64) * draw(st.sampled_from(
        [1.0, 1.0, 1.0, 3.0, 1e-3]))
    kind = draw(st.sampled_from(["fine"] * 24 + ["nan", "inf", "huge", "int", "complex", "half"]))
    if kind in ("nan", "inf", "huge") and t.numel():
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = {"nan": NAN, "inf": INF,
                                                            "huge": 1e30}[kind]
    if kind == "int":
        return t.to(torch.int64)
    if kind == "complex":
        return t.to(torch.complex128)
    if kind == "half":
        return t.to(torch.float16)
    return t.to(dtype)


@st.composite
def data_specs(draw, n0, nL, S, dtype, valid: bool = False):
    """``(x, target)``: ``[B, n]`` or ``[S, B, n]``, sometimes with a wrong shape or values."""
    B = draw(st.integers(1, 3))
    lead = draw(st.sampled_from([(), (), (S,)]))
    shapes = [(*lead, B, n0), (*lead, B, nL)]
    if not valid and draw(st.sampled_from([False] * 9 + [True])):
        i = draw(st.integers(0, 1))
        shapes[i] = draw(st.sampled_from([(B,), (B, shapes[i][-1] + 1), (0, shapes[i][-1]),
                                          (S + 1, B, shapes[i][-1]), (1, 1, B, shapes[i][-1])]))
    if valid:
        g = torch.Generator().manual_seed(draw(st.integers(0, 1000)))
        return tuple(torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)
                     for s in shapes)
    return tuple(values(draw, s, dtype) for s in shapes)


def feedback_seeds(S):
    return st.one_of(st.none(), st.integers(0, 2 ** 31),
                     st.lists(st.integers(0, 100), min_size=S, max_size=S),
                     st.sampled_from([[0] * (S + 1), 1.5, "1", True, -1]))


@st.composite
def circuit_specs(draw, S: int, valid: bool = False):
    """``(family, kwargs)`` of one of the settling circuits, parameters sometimes bad."""
    family = draw(st.sampled_from(["di", "dfc", "pc", "tp"]))
    bad = BAD_NUMBERS if not valid else [1.0]

    def param(lo, hi):
        v = draw(pick(positive(lo, hi), bad, valid))
        if draw(st.sampled_from([False] * 7 + [True])):      # per replica, right or wrong length
            if valid:
                return [draw(positive(lo, hi)) for _ in range(S)]
            return [draw(positive(lo, hi)) for _ in range(draw(st.sampled_from([S] * 3 + [S + 1])))]
        return v
    if family == "di":
        kw = {"alpha": param(1e-3, 1.0), "k_i": param(0.1, 50.0), "k_p": param(0.0, 2.0),
              "tau_u": param(0.1, 2.0), "tau_delta": param(0.1, 2.0),
              "feedback": draw(pick(st.sampled_from(["transpose", "random"]),
                                    ["bogus", "jacobian", None], valid))}
    elif family == "dfc":
        kw = {"alpha": param(1e-3, 1.0), "k_i": param(0.1, 20.0), "k_p": param(0.0, 2.0),
              "tau_v": param(0.05, 1.0), "tau_u": param(0.1, 2.0),
              "nudge": draw(pick(positive(0.01, 1.0), bad, valid)),        # one scalar
              "feedback": draw(pick(st.sampled_from(["jacobian", "random"]), ["transpose"],
                                    valid))}
    elif family == "pc":      # variances: one per layer (not per replica) or one number
        kw = {"tau_x": param(0.1, 2.0), "variances": draw(pick(st.one_of(
            positive(0.5, 4.0), st.lists(positive(0.5, 4.0), min_size=2, max_size=2)),
            [0.0, -1.0, NAN, [1.0] * 5, "1"], valid))}
    else:
        kw = {"rule": "ddtp_linear", "beta": param(0.01, 1.0), "tau": param(0.1, 2.0),
              "damping": draw(st.one_of(positive(1e-4, 1.0), st.sampled_from(
                  [1e-3] if valid else [-1.0, NAN]))),
              "feedback": draw(st.sampled_from([None, "random", "gauss_newton"]))}
    if kw.get("feedback") == "random":
        kw["feedback_seed"] = draw(feedback_seeds(S)) if not valid else draw(
            st.integers(0, 100))
    return family, kw


def build_circuit(family, net, x, target, kw):
    cls = {"di": DynamicInversion, "dfc": DeepFeedbackControl, "pc": PredictiveCoding,
           "tp": TargetPropagation}[family]
    return cls(net, x, target, **kw)


METHODS = ["euler", "exp_euler", "rk4", "affine", "auto", "exp_rosenbrock"]


@st.composite
def solve_kwargs(draw, valid: bool = False):
    def one(strategy, bad):
        return draw(pick(strategy, bad, valid))
    kw = {"method": one(st.sampled_from(METHODS), ["bogus", None, "dopri"]),
          "dt": one(positive(0.02, 0.5), [None, 0.0, -0.1, NAN, INF, 1e-300, "0.1"]),
          "t1": one(positive(0.1, 3.0), [0.0, -1.0, NAN, INF]),
          "steady_state": one(st.booleans(), ["yes", None]),
          "check_every": one(st.integers(1, 20), [0, -1, 2.5, True]),
          "save_every": one(st.one_of(st.none(), st.integers(1, 10)), [0, -2, 1.5]),
          "compact": one(st.one_of(st.none(), st.floats(0.05, 0.95)),
                         [0.0, 1.0, -0.5, 2.0, NAN]),
          "divergence_bound": one(st.sampled_from([1e6, 1e6, 1e3, 10.0]), [0.0, -1.0, NAN])}
    if not valid and draw(st.sampled_from([False] * 7 + [True])):
        kw["save_every"] = None
        kw["save_at"] = draw(st.sampled_from([5, "ab", [NAN], [1j], [], [0.2, 0.1], {0.1}]))
    for tol in ("atol", "rtol"):
        kw[tol] = one(st.one_of(st.none(), st.sampled_from([1e-8, 1e-4, 1e-2])),
                      [0.0, -1e-3, NAN, INF])
    return kw


# -- checks of returned results ---------------------------------------------------------------

def replica_max(state: dict, S: int) -> torch.Tensor:
    """``[S]`` max |y| of each replica over every population of ``state`` ([S, ...] each)."""
    out = torch.zeros(S, dtype=torch.float64)
    for v in state.values():
        if v.shape[0] == S and v.numel():
            out = torch.maximum(out, v.detach().abs().reshape(S, -1).max(-1).values.double())
    return out


def check_finite(name: str, state: dict):
    for k, v in state.items():
        assert torch.isfinite(v).all(), f"{name}[{k!r}] holds a non-finite value"


def check_solution(sol, S: int, bound: float):
    status = sol.status
    assert status.shape == (S,), status.shape
    assert set(status.tolist()) <= STATUS_CODES, status
    check_finite("y1", sol.y1)
    for k, v in sol.ys.items():
        assert torch.isfinite(v).all(), f"ys[{k!r}] holds a non-finite value"
    assert torch.isfinite(sol.ts).all() and torch.isfinite(sol.t_stop).all()
    for name in sol.status_names():
        event(f"status {name}")
    big = replica_max(sol.y1, S) > bound
    flagged = status == Status.DIVERGED
    assert bool((flagged | ~big).all()), \
        f"replicas {big.nonzero().flatten().tolist()} exceed {bound} but are {status.tolist()}"


# -- properties -------------------------------------------------------------------------------


@bounded(150)
@given(spec=network_specs())
@example(spec={"widths": [3, 2], "activation": "tanh", "dtype": torch.float64, "seed": 0,
               "replicas": 1, "scale": INF})
def test_network_construction_refuses_or_builds_finite_float_weights(spec):
    net = attempt(ForwardNetwork, **spec)
    if net is None:
        return
    assert net.dtype in DTYPES
    for w in list(net.weights) + list(net.biases or []):
        assert w.dtype == net.dtype and torch.isfinite(w).all()
        assert w.shape[0] == net.replicas


@bounded(400)
@given(net_spec=network_specs(max_layers=2), data=st.data())
def test_circuit_construction_and_solve_only_own_errors_and_finite_flagged_results(
        net_spec, data):
    # one part of the input may be corrupt, so that a third of the examples are valid
    # throughout and reach solve's results
    corrupt = data.draw(st.sampled_from(["none", "none", "network", "data", "circuit",
                                         "solve"]))
    if corrupt != "network":
        net_spec = data.draw(network_specs(valid=True, max_layers=2))
    net = attempt(ForwardNetwork, **net_spec)
    if net is None:
        return
    S, w = net.replicas, net.widths
    x, target = data.draw(data_specs(w[0], w[-1], S, net.dtype, valid=corrupt != "data"))
    family, kw = data.draw(circuit_specs(S, valid=corrupt != "circuit"))
    circuit = attempt(build_circuit, family, net, x, target, kw)
    if circuit is None:
        return
    y0 = circuit.initial_state()
    check_finite("initial_state", y0)
    S = circuit.S                  # per-replica parameters of length S' may set S' > net's S
    skw = data.draw(solve_kwargs(valid=corrupt != "solve"))
    if corrupt != "solve" and skw["method"] == "affine" and not getattr(circuit, "affine", 0):
        skw["method"] = "auto"
    sol = attempt(solve, circuit, y0, 0.0, progress=False, **skw)
    if sol is None:
        return
    check_solution(sol, S, skw["divergence_bound"])


@bounded(60)
@given(net_spec=network_specs(valid=True, max_layers=2), data=st.data())
def test_valid_inputs_always_solve(net_spec, data):
    """Valid inputs are never refused: the property test above would otherwise pass by
    refusing everything."""
    net = ForwardNetwork(**net_spec)
    S, w = net.replicas, net.widths
    x, target = data.draw(data_specs(w[0], w[-1], S, net.dtype, valid=True))
    family, kw = data.draw(circuit_specs(S, valid=True))
    circuit = build_circuit(family, net, x, target, kw)
    S = circuit.S
    skw = data.draw(solve_kwargs(valid=True))
    if skw["method"] == "affine" and not getattr(circuit, "affine", False):
        skw["method"] = "auto"
    try:
        sol = solve(circuit, circuit.initial_state(), 0.0, progress=False, **skw)
    except ValueError as e:            # the only refusals a valid input may get
        assert any(s in str(e) for s in ("affine", "leak", "method")), e
        return
    check_solution(sol, S, skw["divergence_bound"])


AXES = {"alpha": positive(1e-3, 1.0), "k_i": positive(0.1, 50.0), "k_p": positive(0.0, 2.0),
        "feedback_seed": st.integers(0, 50)}
BAD_AXES = {"alpha": [[], [NAN], [-1.0], [INF], ["a"]], "k_i": [[0.0, -2.0], [[1.0]]],
            "bogus": [[1.0]], "feedback_seed": [[1.5], [-1]], "tau_u": [[0.0]]}


@st.composite
def grids(draw, valid: bool = False):
    names = draw(st.lists(st.sampled_from(sorted(AXES)), min_size=1, max_size=2, unique=True))
    axes = {n: draw(st.lists(AXES[n], min_size=1, max_size=2)) for n in names}
    if not valid and draw(st.sampled_from([False] * 5 + [True])):
        n = draw(st.sampled_from(sorted(BAD_AXES)))
        axes[n] = draw(st.sampled_from(BAD_AXES[n]))
    return axes


def sweep_builder(net, x, target, random_feedback):
    def build(points):
        kw = dict(points)
        if random_feedback or "feedback_seed" in kw:
            kw.setdefault("feedback_seed", 3)
            kw["feedback"] = "random"
        return DynamicInversion(net, x, target, **kw)
    return build


@bounded(80)
@given(axes=grids(), random_feedback=st.booleans(),
       skw=st.one_of(solve_kwargs(valid=True), solve_kwargs(valid=True), solve_kwargs()),
       chunk=st.sampled_from([None, None, 1, 2, 3, 0, -1, 1.5]),
       predict=st.sampled_from([None, None, "initial", "steady_state", "bogus"]),
       closed_form=st.booleans())
# found by this test: the sweep's memory estimate divided by save_every = 0 (and overflowed
# on t1 = inf, failed on save_at = 5) before solve could name the argument
@example(axes={"alpha": [1.0]}, random_feedback=False,
         skw={"method": "euler", "dt": 0.5, "t1": 1.0, "steady_state": False, "check_every": 1,
              "save_every": 0, "compact": None, "divergence_bound": 1e6, "atol": None,
              "rtol": None}, chunk=None, predict=None, closed_form=False)
@example(axes={"k_i": [1.0, 2.0]}, random_feedback=True,
         skw={"method": "euler", "dt": 0.5, "t1": INF, "save_every": 2}, chunk=None,
         predict=None, closed_form=True)
@example(axes={"alpha": [0.5]}, random_feedback=False,
         skw={"method": "euler", "dt": 0.0, "t1": 1.0, "save_every": 1}, chunk=None,
         predict="initial", closed_form=True)
@example(axes={"alpha": [0.5]}, random_feedback=False,
         skw={"method": "euler", "dt": 0.1, "t1": 1.0, "save_at": 5}, chunk=None,
         predict=None, closed_form=True)
def test_sweep_only_own_errors_and_finite_labelled_arrays(axes, random_feedback, skw, chunk,
                                                          predict, closed_form):
    net = ForwardNetwork([2, 3, 2], "tanh", seed=4)
    g = torch.Generator().manual_seed(0)
    x, target = (torch.randn(2, 2, generator=g, dtype=torch.float64),
                 torch.randn(2, 2, generator=g, dtype=torch.float64))
    grid = attempt(Grid, axes)
    if grid is None:
        return
    result = attempt(sweep, sweep_builder(net, x, target, random_feedback), grid,
                     {"t0": 0.0, **skw}, chunk=chunk, predict=predict,
                     error="closed_form" if closed_form else None)
    if result is None:
        return
    status = result["status"].data
    for code in status.reshape(-1).tolist():
        event(f"sweep status {code}")
    assert status.shape == grid.shape
    assert set(status.reshape(-1).tolist()) <= STATUS_CODES
    converged = status == int(Status.CONVERGED)
    diverged = status == int(Status.DIVERGED)
    for name, array in result.arrays.items():
        a = torch.as_tensor(array.data).double()
        assert a.shape == grid.shape, name
        if name == "settle_time":                     # NaN exactly where not converged
            assert torch.isfinite(a[torch.as_tensor(converged)]).all()
            assert torch.isnan(a[~torch.as_tensor(converged)]).all()
        elif name == "error":                         # a diverged replica has no error
            assert torch.isfinite(a[~torch.as_tensor(diverged)]).all(), a
        else:
            assert not torch.isinf(a).any() and (name.startswith("spectral")
                                                 or not torch.isnan(a).any()), (name, a)


TRAIN_METHODS = ["plastic_backprop", "backprop", "feedback_alignment", "di", "dfc", "pc",
                 "z_il", "ddtp_linear"]


@st.composite
def train_specs(draw):
    method = draw(st.sampled_from(TRAIN_METHODS))
    dt = draw(maybe_bad(st.sampled_from([0.1, 0.25, 0.5, 1.0]), [0.0, -0.1, NAN, 2.0, None]))
    return {"method": method,
            "eta": draw(maybe_bad(st.one_of(positive(0.01, 2.0), st.sampled_from([50.0, 1e4])),
                                  [0.0, -1.0, NAN, INF, "1"])),
            "period": draw(maybe_bad(st.sampled_from([0.5, 1.0, 2.0]), [0.0, -1.0, NAN, INF])),
            "dt": dt,
            "presentations": draw(maybe_bad(st.integers(1, 4), [0, -1, 1.5, True])),
            "chunk": draw(maybe_bad(st.integers(1, 3), [0, 2.5])),
            "integrator": draw(maybe_bad(st.sampled_from(["euler", "rk4", "exp_euler"]), ["bogus", None])),
            "divergence_bound": draw(st.sampled_from([1e6, 1e6, 10.0, 1e3])),
            "stream": draw(st.sampled_from(["fine"] * 15 + ["nan", "huge", "shape", "width",
                                                             "none"])),
            "S": draw(st.integers(1, 3)), "B": draw(st.integers(1, 3)),
            "data_seed": draw(st.integers(0, 1000))}


@bounded(100)
@given(spec=train_specs())
def test_train_only_own_errors_finite_state_and_flagged_replicas(spec):
    S, B, P = spec["S"], spec["B"], 3
    widths = [3, 4, 2]
    net = ForwardNetwork(widths, "tanh", seed=list(range(S)))
    g = torch.Generator().manual_seed(spec["data_seed"])
    xs = torch.randn(P, B, widths[0], generator=g, dtype=torch.float64)
    ys = torch.rand(P, B, widths[-1], generator=g, dtype=torch.float64)
    if spec["stream"] == "nan":
        xs[1, 0, 0] = NAN
    elif spec["stream"] == "huge":
        xs[1, 0, 0] = 1e30

    def stream(k):
        if spec["stream"] == "shape":
            return xs[k % P, :, :2], ys[k % P]
        if spec["stream"] == "width":
            return xs[k % P], ys[k % P, :, :1]
        if spec["stream"] == "none":
            return None
        return xs[k % P], ys[k % P]
    if spec["method"] == "plastic_backprop":
        circuit = attempt(Plastic, ClosedForm("backprop"), net, xs[0], ys[0], eta=spec["eta"],
                          gate="always")
    else:
        circuit = attempt(learning_circuit, spec["method"], net, xs[0], ys[0], eta=spec["eta"],
                          period=spec["period"] if isinstance(spec["period"], float) else 1.0)
    if circuit is None:
        return
    y0 = circuit.initial_state()
    check_finite("initial_state", y0)
    out = attempt(integrate, circuit, y0, stream, period=spec["period"], dt=spec["dt"],
                  presentations=spec["presentations"], chunk=spec["chunk"],
                  method=spec["integrator"], divergence_bound=spec["divergence_bound"],
                  progress=False)
    if out is None:
        return
    assert out.diverged.shape == (S,) and out.diverged.dtype == torch.bool
    event(f"train {spec['method']}: {int(out.diverged.sum())} of {S} diverged")
    assert out.presentations == spec["presentations"]
    check_finite("y", out.y)
    big = replica_max(out.y, S) > spec["divergence_bound"]
    assert bool((out.diverged | ~big).all()), (big, out.diverged)
