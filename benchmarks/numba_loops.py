"""Hand-written numba Euler loops for DI and DFC: the "what a numerics person would write" baseline
of :mod:`benchmarks.settle_race`.

One ``@njit`` (nopython, float64) kernel per circuit family steps every replica in an outer njit
loop over replicas, one replica at a time (one thread), with explicit loops for the small
matrix-vector products. Each kernel has two modes:

* fixed: ``n_steps`` forward-Euler steps (a replica that diverges is still caught at the checks,
  rolled back and frozen, as :func:`solvers.solve` does);
* stop: :func:`solvers.solve`'s stopping rule, per replica: every ``check_every`` steps, the
  replica has diverged if an entry is non-finite or ``max |y| > divergence_bound`` (it is rolled
  back to its state at the previous check), and has converged if ``‖f(y_prev)‖₂ ≤ atol +
  rtol ‖y_prev‖₂`` with ``y_prev`` the state before the last step of the chunk (it keeps the
  state after that step).

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
"""
from __future__ import annotations

import time

import numpy as np
import torch
from numba import njit

REACHED_T1, CONVERGED, DIVERGED = 0, 1, 2


# -- dynamic inversion -----------------------------------------------------------------------------

@njit(cache=False, fastmath=False)
def _di_field(y, f, w, e, L, widths, W, Woff, B, Boff, dphi, phoff, deltaL, uoff, doff,
              alpha, k_i, k_p, tau_u, tau_d):
    """f = dy/dt for one replica; ``w``, ``e`` are scratch of length max width."""
    for l in range(2, L + 1):
        n = widths[l]
        m = widths[l - 1]
        wo = Woff[l]
        dlo = doff[l - 1]
        for i in range(n):
            s = 0.0
            for j in range(m):
                s += W[wo + i * m + j] * y[dlo + j]
            if l == L:
                c = deltaL[i]
            else:
                c = dphi[phoff[l] + i] * y[doff[l] + i]
            ei = s - c
            u = y[uoff[l] + i]
            f[uoff[l] + i] = (k_i * ei - alpha * u) / tau_u
            e[i] = ei
            w[i] = u + k_p * ei
        bo = Boff[l]
        for j in range(m):
            s = 0.0
            for i in range(n):
                s += B[bo + j * n + i] * w[i]
            f[dlo + j] = (s - y[dlo + j]) / tau_d


@njit(cache=False, fastmath=False)
def _di_controller_first(y, f, kpe, dt, L, widths, W, Woff, B, Boff, dphi, phoff, deltaL, uoff,
                         doff, alpha, k_i, k_p, tau_u, tau_d):
    """One step in the authors' order: every controller from the old state, then every error
    population from the new controllers (plus ``k_p`` × the old mismatch). ``f`` receives the
    effective rate ``(y_new − y)/dt`` (for the stopping rule); ``kpe`` is scratch of length D."""
    for l in range(2, L + 1):
        n = widths[l]
        m = widths[l - 1]
        wo = Woff[l]
        dlo = doff[l - 1]
        for i in range(n):
            s = 0.0
            for j in range(m):
                s += W[wo + i * m + j] * y[dlo + j]
            if l == L:
                c = deltaL[i]
            else:
                c = dphi[phoff[l] + i] * y[doff[l] + i]
            ei = s - c
            f[uoff[l] + i] = (k_i * ei - alpha * y[uoff[l] + i]) / tau_u
            kpe[uoff[l] + i] = k_p * ei
    for l in range(2, L + 1):
        for i in range(widths[l]):
            y[uoff[l] + i] += dt * f[uoff[l] + i]
    for l in range(2, L + 1):
        n = widths[l]
        m = widths[l - 1]
        dlo = doff[l - 1]
        for j in range(m):
            s = 0.0
            for i in range(n):
                s += B[Boff[l] + j * n + i] * (y[uoff[l] + i] + kpe[uoff[l] + i])
            f[dlo + j] = (s - y[dlo + j]) / tau_d
    for l in range(1, L):
        for j in range(widths[l]):
            y[doff[l] + j] += dt * f[doff[l] + j]


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


@njit(cache=False, fastmath=False)
def di_run(Y0, n_steps, dt, stop, atol, rtol, check_every, bound, controller_first,
           L, widths, W, Woff, B, Boff, dphi, phoff, deltaL, uoff, doff,
           alpha, k_i, k_p, tau_u, tau_d):
    """Integrate every replica (rows of ``Y0``); returns ``(Y, steps, status)``."""
    S, D = Y0.shape
    Y = Y0.copy()
    steps = np.zeros(S, dtype=np.int64)
    status = np.zeros(S, dtype=np.int64)
    mw = 0
    for l in range(L + 1):
        mw = max(mw, widths[l])
    f = np.empty(D)
    good = np.empty(D)
    w = np.empty(max(mw, D))
    e = np.empty(mw)
    for s in range(S):
        y = Y[s]
        for k in range(D):
            good[k] = y[k]
        a, ki, kp, tu, td = alpha[s], k_i[s], k_p[s], tau_u[s], tau_d[s]
        i = 0
        rate = 0.0
        ynorm = 0.0
        st = REACHED_T1
        while i < n_steps:
            end = min(i + check_every, n_steps)
            while i < end:
                if controller_first:
                    if i == end - 1:
                        ynorm = _norm(y)
                    _di_controller_first(y, f, w, dt, L, widths, W, Woff, B, Boff, dphi,
                                         phoff, deltaL, uoff, doff, a, ki, kp, tu, td)
                    if i == end - 1:
                        rate = _norm(f)
                else:
                    _di_field(y, f, w, e, L, widths, W, Woff, B, Boff, dphi, phoff, deltaL,
                              uoff, doff, a, ki, kp, tu, td)
                    if i == end - 1:
                        rate = _norm(f)
                        ynorm = _norm(y)
                    for k in range(D):
                        y[k] += dt * f[k]
                i += 1
            if not _absmax_ok(y, bound):
                for k in range(D):
                    y[k] = good[k]
                st = DIVERGED
                break
            if stop and rate <= atol + rtol * ynorm:
                st = CONVERGED
                break
            for k in range(D):
                good[k] = y[k]
        steps[s] = i
        status[s] = st
    return Y, steps, status


# -- deep feedback control -------------------------------------------------------------------------

@njit(cache=False, fastmath=False)
def _phi(code, z):
    if code == 1:
        return np.tanh(z)
    return z


@njit(cache=False, fastmath=False)
def _dfc_field(y, f, r, ut, drive, L, widths, acts, W, Woff, bias, drive1, Q, Qoff,
               rstar, voff, uo, alpha, k_i, k_p, tau_v, tau_u, leak_total):
    """f = dy/dt for one replica; ``r``, ``ut``, ``drive`` are scratch (max width)."""
    nL = widths[L]
    # output error e = r* − φ_L(v_L), total control u = u_int + k_p e
    for k in range(nL):
        ek = rstar[k] - _phi(acts[L], y[voff[L] + k])
        ut[k] = y[uo + k] + k_p * ek
        leaked = ut[k] if leak_total else y[uo + k]
        f[uo + k] = (k_i * ek - alpha * leaked) / tau_u
    for l in range(1, L + 1):
        n = widths[l]
        if l == 1:
            for i in range(n):
                drive[i] = drive1[i]
        else:
            m = widths[l - 1]
            for j in range(m):
                r[j] = _phi(acts[l - 1], y[voff[l - 1] + j])
            wo = Woff[l]
            for i in range(n):
                s = 0.0
                for j in range(m):
                    s += W[wo + i * m + j] * r[j]
                drive[i] = s + bias[voff[l] + i]
        qo = Qoff[l]
        for i in range(n):
            s = 0.0
            for k in range(nL):
                s += Q[qo + i * nL + k] * ut[k]
            f[voff[l] + i] = (s + (drive[i] - y[voff[l] + i])) / tau_v


@njit(cache=False, fastmath=False)
def dfc_run(Y0, n_steps, dt, stop, atol, rtol, check_every, bound,
            L, widths, acts, W, Woff, bias, drive1, Q, Qoff, rstar, voff, uo,
            alpha, k_i, k_p, tau_v, tau_u, leak_total):
    """Integrate every replica (rows of ``Y0``); returns ``(Y, steps, status)``."""
    S, D = Y0.shape
    Y = Y0.copy()
    steps = np.zeros(S, dtype=np.int64)
    status = np.zeros(S, dtype=np.int64)
    mw = 0
    for l in range(L + 1):
        mw = max(mw, widths[l])
    f = np.empty(D)
    good = np.empty(D)
    r = np.empty(mw)
    ut = np.empty(mw)
    drive = np.empty(mw)
    for s in range(S):
        y = Y[s]
        for k in range(D):
            good[k] = y[k]
        a, ki, kp, tv, tu = alpha[s], k_i[s], k_p[s], tau_v[s], tau_u[s]
        i = 0
        rate = 0.0
        ynorm = 0.0
        st = REACHED_T1
        while i < n_steps:
            end = min(i + check_every, n_steps)
            while i < end:
                _dfc_field(y, f, r, ut, drive, L, widths, acts, W, Woff, bias, drive1, Q,
                           Qoff, rstar, voff, uo, a, ki, kp, tv, tu, leak_total)
                if i == end - 1:
                    rate = _norm(f)
                    ynorm = _norm(y)
                for k in range(D):
                    y[k] += dt * f[k]
                i += 1
            if not _absmax_ok(y, bound):
                for k in range(D):
                    y[k] = good[k]
                st = DIVERGED
                break
            if stop and rate <= atol + rtol * ynorm:
                st = CONVERGED
                break
            for k in range(D):
                good[k] = y[k]
        steps[s] = i
        status[s] = st
    return Y, steps, status


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


class DIKernel:
    """The numba DI loop for a batched :class:`circuits.DynamicInversion` (one example)."""

    def __init__(self, circuit):
        net = circuit.network
        if circuit.batch != 1:
            raise ValueError(f"circuit: received B = {circuit.batch} examples, expected 1")
        L, S = net.L, circuit.S
        self.S, self.L = S, L
        self.widths = np.array(net.widths, dtype=np.int64)
        names = [p.name for p in circuit.populations]
        sizes = {p.name: p.size for p in circuit.populations}
        pos, self.uoff, self.doff = 0, np.zeros(L + 1, np.int64), np.zeros(L + 1, np.int64)
        for n in names:                               # Layout order: u_2..u_L, delta_1..
            kind, l = n.rsplit("_", 1)
            (self.uoff if kind == "u" else self.doff)[int(l)] = pos
            pos += sizes[n]
        self.D = pos
        self.W, self.Woff = self._flat({l: _shared(f"W_{l}", net.weights[l - 1])
                                        for l in range(2, L + 1)}, L)
        self.B, self.Boff = self._flat({l: _shared(f"B_{l}", circuit.feedback[l - 2])
                                        for l in range(2, L + 1)}, L)
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

    @staticmethod
    def _flat(mats: dict[int, torch.Tensor], L: int) -> tuple[np.ndarray, np.ndarray]:
        off, pos = np.zeros(L + 1, np.int64), 0
        parts = []
        for l in range(L + 1):
            if l in mats:
                off[l] = pos
                a = _np(mats[l].reshape(-1))
                parts.append(a)
                pos += a.size
        return (np.concatenate(parts) if parts else np.zeros(1)), off

    def run(self, n_steps: int, dt: float, *, stop: bool = False, atol: float = 0.0,
            rtol: float = 0.0, check_every: int = 10, bound: float = 1e6,
            controller_first: bool = False, Y0: np.ndarray | None = None):
        """``(Y [S, D], steps [S], status [S])`` after at most ``n_steps`` steps of ``dt``."""
        return di_run(self.Y0 if Y0 is None else Y0, int(n_steps), float(dt), bool(stop),
                      float(atol), float(rtol), int(check_every), float(bound),
                      bool(controller_first), self.L, self.widths, self.W, self.Woff, self.B,
                      self.Boff, self.dphi, self.phoff, self.deltaL, self.uoff, self.doff,
                      self.alpha, self.k_i, self.k_p, self.tau_u, self.tau_d)

    def compile_seconds(self) -> float:
        """Time of the first (compiling) call, on one replica and a few steps."""
        start = time.perf_counter()
        for cf in (False, True):
            for st in (False, True):
                self.run(2, 0.1, stop=st, controller_first=cf, Y0=self.Y0[:1])
        return time.perf_counter() - start


class DFCKernel:
    """The numba DFC loop for a batched :class:`circuits.DeepFeedbackControl` (one example)."""

    def __init__(self, circuit):
        net = circuit.network
        if circuit.batch != 1:
            raise ValueError(f"circuit: received B = {circuit.batch} examples, expected 1")
        L, S = net.L, circuit.S
        self.S, self.L = S, L
        self.widths = np.array(net.widths, dtype=np.int64)
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
        self.W, self.Woff = DIKernel._flat({l: _shared(f"W_{l}", net.weights[l - 1])
                                            for l in range(2, L + 1)}, L)
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
        self.Q, self.Qoff = DIKernel._flat({l: _shared(f"Q_{l}", circuit.feedback[l - 1])
                                            for l in range(1, L + 1)}, L)
        self.rstar = _np(_shared("r_star", circuit.r_star).reshape(-1))
        self.alpha = _per_replica(circuit.alpha, S)
        self.k_i = _per_replica(circuit.k_i, S)
        self.k_p = _per_replica(circuit.k_p, S)
        self.tau_v = _per_replica(circuit.tau_v, S)
        self.tau_u = _per_replica(circuit.tau_u, S)
        self.leak_total = circuit.leak_on == "total"
        self.Y0 = _np(Layout(y0).pack_by_replica(y0))

    def run(self, n_steps: int, dt: float, *, stop: bool = False, atol: float = 0.0,
            rtol: float = 0.0, check_every: int = 10, bound: float = 1e6,
            Y0: np.ndarray | None = None):
        """``(Y [S, D], steps [S], status [S])`` after at most ``n_steps`` steps of ``dt``."""
        return dfc_run(self.Y0 if Y0 is None else Y0, int(n_steps), float(dt), bool(stop),
                       float(atol), float(rtol), int(check_every), float(bound), self.L,
                       self.widths, self.acts, self.W, self.Woff, self.bias, self.drive1, self.Q,
                       self.Qoff, self.rstar, self.voff, self.uo, self.alpha, self.k_i, self.k_p,
                       self.tau_v, self.tau_u, bool(self.leak_total))

    def compile_seconds(self) -> float:
        start = time.perf_counter()
        for st in (False, True):
            self.run(2, 0.01, stop=st, Y0=self.Y0[:1])
        return time.perf_counter() - start
