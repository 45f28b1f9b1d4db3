"""Hand-written numba Euler loops for DI and DFC: the "what a numerics person would write" baseline
of :mod:`benchmarks.settle_race`.

One ``@njit`` (nopython, float64, no fastmath) kernel per circuit steps every replica in an outer
loop over replicas, one replica at a time (one thread), with explicit scalar loops for the small
matrix-vector products. Each kernel has two modes:

* fixed: ``n_steps`` forward-Euler steps (a replica that diverges is still caught at the checks,
  rolled back and frozen, as :func:`solvers.solve` does);
* stop: :func:`solvers.solve`'s stopping rule, per replica: every ``check_every`` steps, the
  replica has diverged if an entry is non-finite or ``max |y| > divergence_bound`` (it is rolled
  back to its state at the previous check), and has converged if ``‖f(y_prev)‖₂ ≤ atol +
  rtol ‖y_prev‖₂`` with ``y_prev`` the state before the last step of the chunk (it keeps the
  state after that step).

How the kernels are written (what a careful author does for a fixed network):

* specialised on the network: the vector field of each kernel is generated as Python source with
  the layer widths and every offset into the state and weight arrays written as literals, and
  compiled once per network shape (cached by source). Literal sizes let LLVM unroll the short
  loops and drop the index arithmetic and negative-index checks of generic loops (about 2×);
* register-blocked matrix-vector products: each product is computed for blocks of at most 8
  outputs held in scalar accumulators, the inputs read once per block, every output summed in
  the same order (input index ascending, from 0.0) as a plain dot-product loop, so the sums are
  bitwise those of the straightforward loop; the weights are stored transposed (input-major) so a
  block reads contiguous memory. (Numba disables LLVM's SLP vectoriser and the loop vectoriser
  cannot vectorise a reduction without reassociation, which fastmath would allow: the products
  stay scalar);
* no allocation in the step loop: the scratch vectors are allocated once per call, outside the
  replica loop; the per-replica gains are read once per replica and ``1/τ`` is hoisted, so the
  step multiplies by it (the one departure from the torch field's rounding, ``x/τ``, of about an
  ulp per step: results agree with the division to ~1e-15 relative);
* what is fixed during a settle is computed once (DFC's first-layer drive ``W_1 x + b_1``).

Step order. ``controller_first=False`` is plain forward Euler, ``y ← y + dt f(y)``: what
``solve(method="euler")`` does with ``circuits.DynamicInversion.vector_field``, and what the
agreement checks compare. Podlaski & Machens' code updates the controller first within a step and
feeds the *new* controller into the error population (``u ← u + dt(…)``, then
``δ ← δ + dt(−δ + B u_new)``): a semi-implicit Euler with a different trajectory (the same fixed
point). ``controller_first=True`` runs that order (DI only), for information.

Status codes are those of :class:`solvers.solve.Status`: 0 reached_t1, 1 converged, 2 diverged.

The wrappers (:class:`DIKernel`, :class:`DFCKernel`) read a batched circuit built on one shared
network and one example (B = 1) and keep only the per-replica gains; the state is replica-major,
``[S, D]``, in the population order of ``Layout(circuit.initial_state()).pack_by_replica``.
``kernel.source`` holds the generated source of its vector field.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from numba import njit

REACHED_T1, CONVERGED, DIVERGED = 0, 1, 2
BLOCK = 8                   # outputs per register block of a matrix-vector product


@njit(cache=False, fastmath=False)
def _norm(a):
    s = 0.0
    for k in range(a.shape[0]):
        s += a[k] * a[k]
    return np.sqrt(s)


@njit(cache=False, fastmath=False)
def _absmax_ok(a, bound):
    """``max |a| <= bound`` (False for any NaN, like solve's test)."""
    for k in range(a.shape[0]):
        if not (abs(a[k]) <= bound):
            return False
    return True


# -- code generation -------------------------------------------------------------------------------

def _matvec(A: str, off: int, n_out: int, n_in: int, x, out, indent: str = "    ") -> list[str]:
    """Source lines of ``out(i, s) for s = Σ_j M[i, j] x(j)``, ``M`` ``[n_out, n_in]`` stored
    transposed and flat at ``A[off + j * n_out + i]``; ``x(j)`` is an expression in the loop index
    ``j``, ``out(i, acc)`` the lines that consume output ``i`` (held in the scalar ``acc``). The
    outputs are taken in balanced blocks of at most :data:`BLOCK`, each summed from 0.0 in
    ascending ``j`` (the order of a plain dot-product loop)."""
    lines = []
    n_blocks = -(-n_out // BLOCK)
    bounds = [round(b * n_out / n_blocks) for b in range(n_blocks + 1)]
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        acc = [f"s{t}" for t in range(b1 - b0)]
        lines.append(indent + " = ".join(acc) + " = 0.0")
        lines.append(indent + f"for j in range({n_in}):")
        lines.append(indent + f"    xj = {x('j')}")
        lines.append(indent + f"    row = {off + b0} + j * {n_out}")
        lines += [indent + f"    {a} += {A}[row + {t}] * xj" for t, a in enumerate(acc)]
        for t, a in enumerate(acc):
            lines += [indent + line for line in out(b0 + t, a)]
    return lines


_RUN = """
def run(Y0, n_steps, dt, stop, atol, rtol, check_every, bound, {shared}, alpha, k_i, k_p,
        tau_a, tau_b):
    S = Y0.shape[0]
    Y = Y0.copy()
    steps = np.zeros(S, dtype=np.int64)
    status = np.zeros(S, dtype=np.int64)
    f = np.empty({D})
    good = np.empty({D})
{scratch}
    for s in range(S):
        y = Y[s]
        for k in range({D}):
            good[k] = y[k]
        a = alpha[s]
        ki = k_i[s]
        kp = k_p[s]
        ia = 1.0 / tau_a[s]
        ib = 1.0 / tau_b[s]
        i = 0
        rate = 0.0
        ynorm = 0.0
        st = 0
        while i < n_steps:
            end = min(i + check_every, n_steps)
            while i < end:
                if i == end - 1:
                    ynorm = _norm(y)
                step(y, f, dt, {shared}, {scratch_args}, a, ki, kp, ia, ib)
                if i == end - 1:
                    rate = _norm(f)
                i += 1
            if not _absmax_ok(y, bound):
                for k in range({D}):
                    y[k] = good[k]
                st = 2
                break
            if stop and rate <= atol + rtol * ynorm:
                st = 1
                break
            for k in range({D}):
                good[k] = y[k]
        steps[s] = i
        status[s] = st
    return Y, steps, status
"""

_COMPILED: dict[str, object] = {}


def _compile(step_src: str, D: int, shared: list[str], scratch: dict[str, int]):
    """njit ``run`` around the generated ``step(y, f, dt, *shared, *scratch, a, ki, kp, ia,
    ib)`` (one Euler step of one replica, ``f`` receiving the rate); cached by source."""
    names = list(scratch)
    src = step_src + "\n" + _RUN.format(
        D=D, shared=", ".join(shared), scratch_args=", ".join(names),
        scratch="\n".join(f"    {n} = np.empty({max(size, 1)})" for n, size in scratch.items()))
    if src not in _COMPILED:
        scope = {"np": np, "_norm": _norm, "_absmax_ok": _absmax_ok}
        exec(compile(src, "<numba_loops generated>", "exec"), scope)
        scope["step"] = njit(cache=False, fastmath=False)(scope["step"])
        _COMPILED[src] = njit(cache=False, fastmath=False)(scope["run"])
    return _COMPILED[src], src


# -- dynamic inversion -----------------------------------------------------------------------------

def _di_source(L, widths, Woff, Boff, phoff, uoff, doff, D, controller_first):
    """One Euler step of the DI field: ``e_ℓ = W_ℓ δ_{ℓ-1} − c_ℓ`` (``c_L`` the output error,
    ``c_ℓ = φ'_ℓ δ_ℓ`` below), ``τ_u u̇_ℓ = k_i e_ℓ − α u_ℓ``, ``τ_δ δ̇_{ℓ-1} = −δ_{ℓ-1} +
    B_ℓ (u_ℓ + k_p e_ℓ)``. Plain: ``y += dt f(y)``. Controller first: every ``u`` from the old
    state, then every ``δ`` from the new ``u`` plus ``k_p`` × the old mismatch, ``f`` receiving the
    effective rate. ``w`` is scratch (``Σ_{ℓ≥2} n_ℓ``)."""
    lines = ["def step(y, f, dt, Wt, Bt, dphi, deltaL, w, a, ki, kp, iu, id_):"]
    wo = {l: sum(widths[2:l]) for l in range(2, L + 1)}     # layer ℓ's block of w

    def controller(l):
        U = uoff[l]

        def out(i, acc):
            c = f"deltaL[{i}]" if l == L else f"dphi[{phoff[l] + i}] * y[{doff[l] + i}]"
            lines = [f"ei = {acc} - {c}",
                     f"u = y[{U + i}]",
                     f"f[{U + i}] = (ki * ei - a * u) * iu"]
            if controller_first:
                return lines + [f"w[{wo[l] + i}] = kp * ei"]
            return lines + [f"w[{wo[l] + i}] = u + kp * ei"]
        return _matvec("Wt", Woff[l], widths[l], widths[l - 1],
                       lambda j: f"y[{doff[l - 1]} + {j}]", out)

    def error(l):
        dlo = doff[l - 1]
        return _matvec("Bt", Boff[l], widths[l - 1], widths[l],
                       lambda j: f"w[{wo[l]} + {j}]",
                       lambda i, acc: [f"f[{dlo + i}] = ({acc} - y[{dlo + i}]) * id_"])

    if not controller_first:
        for l in range(2, L + 1):
            lines += controller(l) + error(l)
        lines += [f"    for k in range({D}):", "        y[k] += dt * f[k]"]
    else:
        for l in range(2, L + 1):
            lines += controller(l)
        for l in range(2, L + 1):           # new controllers; w ← u_new + k_p e
            U, n = uoff[l], widths[l]
            lines += [f"    for i in range({n}):",
                      f"        y[{U} + i] += dt * f[{U} + i]",
                      f"        w[{wo[l]} + i] += y[{U} + i]"]
        for l in range(2, L + 1):
            lines += error(l)
        for l in range(1, L):
            lines += [f"    for j in range({widths[l]}):",
                      f"        y[{doff[l]} + j] += dt * f[{doff[l]} + j]"]
    return "\n".join(lines) + "\n"


# -- deep feedback control -------------------------------------------------------------------------

def _dfc_source(L, widths, acts, Woff, Qoff, voff, uo, has_bias, leak_total):
    """One Euler step of the DFC field: output error ``e = r* − φ_L(v_L)``, total control
    ``u_t = u + k_p e``, ``τ_u u̇ = k_i e − α (u_t or u)``, ``τ_v v̇_ℓ = Q_ℓ u_t + (W_ℓ φ_{ℓ-1}(v_{ℓ-1})
    + b_ℓ − v_ℓ)`` (``W_1 x + b_1`` precomputed as ``drive1``). ``ut``, ``r``, ``dr`` are
    scratch."""
    nL = widths[L]
    phi = {1: "np.tanh({})", 0: "{}"}
    lines = ["def step(y, f, dt, Wt, bias, drive1, Qt, rstar, ut, r, dr, a, ki, kp, iv, iu):",
             f"    for k in range({nL}):",
             f"        ek = rstar[k] - {phi[acts[L]].format(f'y[{voff[L]} + k]')}",
             f"        ut[k] = y[{uo} + k] + kp * ek",
             f"        f[{uo} + k] = (ki * ek - a * {'ut[k]' if leak_total else f'y[{uo} + k]'})"
             " * iu"]
    for l in range(1, L + 1):
        V, n = voff[l], widths[l]
        if l == 1:
            drive = lambda i: f"drive1[{i}]"                                     # noqa: E731
        else:
            m, src = widths[l - 1], voff[l - 1]
            if acts[l - 1] == 1:
                lines += [f"    for j in range({m}):", f"        r[j] = np.tanh(y[{src} + j])"]
                x = lambda j: f"r[{j}]"                                          # noqa: E731
            else:
                x = lambda j, src=src: f"y[{src} + {j}]"                         # noqa: E731
            b = (lambda i: f" + bias[{V + i}]") if has_bias else (lambda i: "")  # noqa: E731
            lines += _matvec("Wt", Woff[l], n, m, x,
                             lambda i, acc: [f"dr[{i}] = {acc}{b(i)}"])
            drive = lambda i: f"dr[{i}]"                                         # noqa: E731
        lines += _matvec("Qt", Qoff[l], n, nL, lambda k: f"ut[{k}]",
                         lambda i, acc: [f"f[{V + i}] = ({acc} + ({drive(i)} - y[{V + i}])) * iv"])
    lines += [f"    for k in range({uo + nL}):", "        y[k] += dt * f[k]"]
    return "\n".join(lines) + "\n"


# -- wrappers: circuit → flat arrays ---------------------------------------------------------------

def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float64).numpy())


def _shared(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t [S, ...]`` → ``t[0]``, after checking that every replica holds the same values."""
    if t.shape[0] > 1 and not torch.equal(t, t[:1].expand_as(t)):
        raise ValueError(f"{name}: differs across replicas; the numba kernels take one shared "
                         "network and one example")
    return t[0]


def _per_replica(t: torch.Tensor, S: int) -> np.ndarray:
    return _np(torch.as_tensor(t).reshape(-1).expand(S) if torch.as_tensor(t).numel() == 1
               else torch.as_tensor(t).reshape(-1))


class _Kernel:
    """What both kernels read off their circuit first: one example, the network's shape."""

    def _shape(self, circuit):
        net = circuit.network
        if circuit.batch != 1:
            raise ValueError(f"circuit: received B = {circuit.batch} examples, expected 1")
        self.S, self.L = circuit.S, net.L
        self.widths = np.array(net.widths, dtype=np.int64)
        return net, net.L, circuit.S


class DIKernel(_Kernel):
    """The numba DI loop for a batched :class:`circuits.DynamicInversion` (one example)."""

    def __init__(self, circuit):
        net, L, S = self._shape(circuit)
        names = [p.name for p in circuit.populations]
        sizes = {p.name: p.size for p in circuit.populations}
        pos, self.uoff, self.doff = 0, np.zeros(L + 1, np.int64), np.zeros(L + 1, np.int64)
        for n in names:                               # Layout order: u_2..u_L, delta_1..
            kind, l = n.rsplit("_", 1)
            (self.uoff if kind == "u" else self.doff)[int(l)] = pos
            pos += sizes[n]
        self.D = pos
        # W_ℓ [n_ℓ, n_{ℓ-1}] and B_ℓ [n_{ℓ-1}, n_ℓ], stored transposed (input-major)
        self.Wt, self.Woff = self._flat({l: _shared(f"W_{l}", net.weights[l - 1])
                                         for l in range(2, L + 1)}, L, transpose=True)
        self.Bt, self.Boff = self._flat({l: _shared(f"B_{l}", circuit.feedback[l - 2])
                                         for l in range(2, L + 1)}, L, transpose=True)
        self.dphi, self.phoff = self._flat({l: _shared(f"dphi_{l}", circuit.forward.dphi[l - 1])
                                            for l in range(1, L)}, L)
        self.deltaL = _np(_shared("delta_L", circuit.delta_L).reshape(-1))
        self.alpha = _per_replica(circuit.alpha, S)
        self.k_i = _per_replica(circuit.k_i, S)
        self.k_p = _per_replica(circuit.k_p, S)
        self.tau_u = _per_replica(circuit.tau_u, S)
        self.tau_d = _per_replica(circuit.tau_delta, S)
        from solvers import Layout
        y0 = circuit.initial_state()
        self.names = Layout(y0).names
        if self.names != names:
            raise ValueError(f"state order {self.names} differs from populations {names}")
        self.Y0 = _np(Layout(y0).pack_by_replica(y0))
        widths = [int(n) for n in net.widths]
        offs = [[int(o) for o in a] for a in (self.Woff, self.Boff, self.phoff, self.uoff,
                                                self.doff)]
        shared = ["Wt", "Bt", "dphi", "deltaL"]
        scratch = {"w": sum(widths[2:])}
        self._run, self.source = _compile(_di_source(L, widths, *offs, self.D, False), self.D,
                                          shared, scratch)
        self._run_cf, self.source_controller_first = _compile(
            _di_source(L, widths, *offs, self.D, True), self.D, shared, scratch)

    @staticmethod
    def _flat(mats: dict[int, torch.Tensor], L: int,
              transpose: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The matrices (or vectors) ``mats[ℓ]`` flat, one after another, and their offsets;
        matrices transposed when ``transpose``."""
        off, pos = np.zeros(L + 1, np.int64), 0
        parts = []
        for l in range(L + 1):
            if l in mats:
                off[l] = pos
                a = _np(mats[l].transpose(-1, -2) if transpose else mats[l]).reshape(-1)
                parts.append(a)
                pos += a.size
        return (np.concatenate(parts) if parts else np.zeros(1)), off

    def run(self, n_steps: int, dt: float, *, stop: bool = False, atol: float = 0.0,
            rtol: float = 0.0, check_every: int = 10, bound: float = 1e6,
            controller_first: bool = False, Y0: np.ndarray | None = None):
        """``(Y [S, D], steps [S], status [S])`` after at most ``n_steps`` steps of ``dt``."""
        run = self._run_cf if controller_first else self._run
        return run(np.ascontiguousarray(self.Y0 if Y0 is None else Y0, dtype=np.float64),
                   int(n_steps), float(dt), bool(stop), float(atol), float(rtol),
                   int(check_every), float(bound), self.Wt, self.Bt, self.dphi, self.deltaL,
                   self.alpha, self.k_i, self.k_p, self.tau_u, self.tau_d)

    def compile_seconds(self) -> float:
        """Time of the first (compiling) call, on one replica and a few steps."""
        start = time.perf_counter()
        for cf in (False, True):
            for st in (False, True):
                self.run(2, 0.1, stop=st, controller_first=cf, Y0=self.Y0[:1])
        return time.perf_counter() - start


class DFCKernel(_Kernel):
    """The numba DFC loop for a batched :class:`circuits.DeepFeedbackControl` (one example)."""

    def __init__(self, circuit):
        net, L, S = self._shape(circuit)
        codes = {"tanh": 1, "linear": 0}
        acts = [0] + [net.activation(l).name for l in range(1, L + 1)]
        for a in acts[1:]:
            if a not in codes:
                raise ValueError(f"activation {a!r}: the numba DFC loop knows {list(codes)}")
        self.acts = np.array([0] + [codes[a] for a in acts[1:]], dtype=np.int64)
        self.voff, pos = np.zeros(L + 1, np.int64), 0
        from solvers import Layout
        y0 = circuit.initial_state()
        names = Layout(y0).names
        if names != [f"v_{l}" for l in range(1, L + 1)] + ["u"]:
            raise ValueError(f"state order: received {names}, expected v_1..v_L, u")
        for l in range(1, L + 1):
            self.voff[l] = pos
            pos += net.widths[l]
        self.uo = pos
        self.D = pos + net.widths[-1]
        # W_ℓ [n_ℓ, n_{ℓ-1}] and Q_ℓ [n_ℓ, n_L], stored transposed (input-major)
        self.Wt, self.Woff = DIKernel._flat({l: _shared(f"W_{l}", net.weights[l - 1])
                                             for l in range(2, L + 1)}, L, transpose=True)
        # biases, laid out like the v_ℓ blocks (zeros without biases)
        b = np.zeros(self.uo)
        if net.biases is not None:
            for l in range(1, L + 1):
                b[self.voff[l]:self.voff[l] + net.widths[l]] = _np(
                    _shared(f"b_{l}", net.biases[l - 1]).reshape(-1))
        self.bias = b
        x = _shared("x", circuit.x).reshape(-1)
        drive1 = x @ _shared("W_1", net.weights[0]).transpose(-1, -2)
        if net.biases is not None:
            drive1 = drive1 + _shared("b_1", net.biases[0]).reshape(-1)
        self.drive1 = _np(drive1)
        self.Qt, self.Qoff = DIKernel._flat({l: _shared(f"Q_{l}", circuit.feedback[l - 1])
                                             for l in range(1, L + 1)}, L, transpose=True)
        self.rstar = _np(_shared("r_star", circuit.r_star).reshape(-1))
        self.alpha = _per_replica(circuit.alpha, S)
        self.k_i = _per_replica(circuit.k_i, S)
        self.k_p = _per_replica(circuit.k_p, S)
        self.tau_v = _per_replica(circuit.tau_v, S)
        self.tau_u = _per_replica(circuit.tau_u, S)
        self.leak_total = circuit.leak_on == "total"
        self.Y0 = _np(Layout(y0).pack_by_replica(y0))
        widths = [int(n) for n in net.widths]
        src = _dfc_source(L, widths, [int(a) for a in self.acts], [int(o) for o in self.Woff],
                          [int(o) for o in self.Qoff], [int(o) for o in self.voff], int(self.uo),
                          net.biases is not None, bool(self.leak_total))
        mw = max(widths[1:])
        self._run, self.source = _compile(
            src, self.D, ["Wt", "bias", "drive1", "Qt", "rstar"],
            {"ut": widths[L], "r": mw, "dr": mw})

    def run(self, n_steps: int, dt: float, *, stop: bool = False, atol: float = 0.0,
            rtol: float = 0.0, check_every: int = 10, bound: float = 1e6,
            Y0: np.ndarray | None = None):
        """``(Y [S, D], steps [S], status [S])`` after at most ``n_steps`` steps of ``dt``."""
        return self._run(np.ascontiguousarray(self.Y0 if Y0 is None else Y0, dtype=np.float64),
                         int(n_steps), float(dt), bool(stop), float(atol), float(rtol),
                         int(check_every), float(bound), self.Wt, self.bias, self.drive1, self.Qt,
                         self.rstar, self.alpha, self.k_i, self.k_p, self.tau_v, self.tau_u)

    def compile_seconds(self) -> float:
        start = time.perf_counter()
        for st in (False, True):
            self.run(2, 0.01, stop=st, Y0=self.Y0[:1])
        return time.perf_counter() - start
