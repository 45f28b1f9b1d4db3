"""Dynamic inversion with leaky PI control (Podlaski & Machens 2020; SPEC §1).

Layer-wise DI: for ℓ = 2..L a controller ``u_ℓ`` integrates the mismatch between what the error
population below would produce through the forward weights and the credit it must explain,

    e_ℓ               = W_ℓ δ_{ℓ-1} − c_ℓ                   (mismatch; c_L = δ_L, c_ℓ = φ'(a_ℓ) ⊙ δ_ℓ)
    τ_u du_ℓ/dt       = k_i e_ℓ − α u_ℓ                     (integral part, leak α)
    τ_δ dδ_{ℓ-1}/dt   = −δ_{ℓ-1} + B_ℓ (u_ℓ + k_p e_ℓ)     (error population, feedback B_ℓ)

All layers settle together (a cascade: each controller sees a credit above that is itself still
settling); δ_L is clamped. The error population δ_ℓ holds the inverted signal; the layer's credit
(what its weights learn from, and what the controller below must explain) is ``φ'(a_ℓ) ⊙ δ_ℓ``.

At steady state ``(W B − α̃ I) u = c`` with ``α̃ = α / (k_i + α k_p)`` and ``u`` the total control
``u_ℓ + k_p e_ℓ``; :meth:`steady_state` computes it in closed form (NDI), batched over S and B.

Single-loop DI (:class:`SingleLoopDynamicInversion`): one controller ``z`` at the output,
feedback ``B`` into the first hidden layer, the error carried forward through the forward weights.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .circuit import CreditCircuit, State
from .network import ForwardNetwork, affine, compact
from .feedback import random_feedback
from .parameters import Population, Role, check_finite_tensor, nonnegative_float

FEEDBACK = ("transpose", "random")


def effective_leak(alpha: torch.Tensor, k_i: torch.Tensor, k_p: torch.Tensor) -> torch.Tensor:
    """α̃ = α / (k_i + α k_p): the leak the steady state sees when the leak acts on u_int."""
    return alpha / (k_i + alpha * k_p)


def _transposed(W: torch.Tensor, contiguous: bool) -> torch.Tensor:
    """``Wᵀ`` for the step's matmuls: a contiguous copy when a circuit is built (the layout the
    batched GEMMs were measured with), a view when a learning circuit rebinds every step."""
    return W.transpose(-1, -2).contiguous() if contiguous else W.transpose(-1, -2)


def _solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A⁻¹ B`` batched; a singular replica gets non-finite values instead of an exception
    (it is then flagged as diverged, and the other replicas keep their results)."""
    return torch.linalg.solve_ex(A, B)[0]


def invert(W: torch.Tensor, B: torch.Tensor, c: torch.Tensor, alpha_tilde: torch.Tensor
           ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Steady state of one inversion loop: ``u = (W B − α̃I)⁻¹ c`` and ``δ = B u``.

    For expanding layers (``W`` tall, ``W B`` singular at α̃ = 0) the equal form
    ``δ = (B W − α̃I)⁻¹ B c`` is used, and ``u`` is returned only where it is defined (α̃ > 0).
    Shapes: ``W [S, m, n]``, ``B [S, n, m]``, ``c [S, B, m]``; returns ``[S, B, m]``, ``[S, B, n]``.
    """
    m, n = W.shape[-2:]
    Im = torch.eye(m, dtype=W.dtype, device=W.device)
    if m <= n:
        u = _solve(W @ B - alpha_tilde * Im, c.transpose(-1, -2)).transpose(-1, -2)
        return u, u @ B.transpose(-1, -2)
    In = torch.eye(n, dtype=W.dtype, device=W.device)
    Bc = c @ B.transpose(-1, -2)
    delta = _solve(B @ W - alpha_tilde * In, Bc.transpose(-1, -2)).transpose(-1, -2)
    if bool((alpha_tilde > 0).all()):
        u = _solve(W @ B - alpha_tilde * Im, c.transpose(-1, -2)).transpose(-1, -2)
        return u, delta
    return None, delta


def exp_euler_dt_bound(alpha: torch.Tensor, sigma_sq: torch.Tensor) -> torch.Tensor:
    """``(1 + α)/(α + σ²)``: the largest step at which an explicit (exponential) Euler step of an
    inversion loop with ``B = −Wᵀ``, ``k_i = τ_u = τ_δ = 1``, ``k_p = 0`` stays stable, to leading
    order. In the singular basis of W the loop splits into 2×2 blocks ``[[−1, −σ], [σ, −α]]``
    with ``Re λ = −(1 + α)/2`` and ``|λ|² = α + σ²`` once σ is large, and ``|1 + hλ| < 1`` iff
    ``h < −2 Re λ/|λ|²``. The settle time is set by the slowest mode, ``1/(α + σ_min²)``: the
    two together are how stiff a settle is. Shapes broadcast (``[S]`` and ``[S]``)."""
    return (1 + alpha) / (alpha + sigma_sq)


def _check_bound_applies(circuit: "_InversionCircuit") -> None:
    """:func:`exp_euler_dt_bound` is derived for ``B = −Wᵀ``, unit gains and time constants."""
    if not circuit.transposed:
        raise ValueError("feedback: received a feedback other than 'transpose', expected "
                         "'transpose' (the explicit step bound is derived for B = −Wᵀ)")
    for name, want in (("k_i", 1.0), ("k_p", 0.0), ("tau_u", 1.0), ("tau_delta", 1.0)):
        value = getattr(circuit, name)
        if not bool((value == want).all()):
            raise ValueError(f"{name}: received {value.reshape(-1).tolist()}, expected {want:g} "
                             "(the explicit step bound is derived for k_i = τ_u = τ_δ = 1, "
                             "k_p = 0)")


class _InversionCircuit(CreditCircuit):
    """Shared set-up: the network's forward pass, the clamped output credit, the gains."""

    def __init__(self, network: ForwardNetwork, x: torch.Tensor, target: torch.Tensor | None,
                 output_error: torch.Tensor | None, alpha, k_i, k_p, tau_u, tau_delta):
        if isinstance(network, ForwardNetwork) and network.L < 2:
            raise ValueError(f"network: received {network.L} layer(s), expected at least 2 "
                             "(inversion needs a hidden layer)")
        self._bind(network, ("k_i", "tau_u", "tau_delta"), alpha=alpha, k_i=k_i, k_p=k_p,
                   tau_u=tau_u, tau_delta=tau_delta)
        self.alpha_tilde = effective_leak(self.alpha, self.k_i, self.k_p)
        if (target is None) == (output_error is None):
            raise ValueError("target, output_error: received "
                             f"{'both' if target is not None else 'neither'}, expected exactly "
                             "one (a target gives δ_L = φ_L'(a_L) ⊙ (target − r_L))")
        self.from_target = target is not None
        self._prepare_drive(x, target if self.from_target else output_error,
                            "target" if self.from_target else "output_error")

    def _forward_pass(self) -> None:
        self.forward = fwd = self.network.forward(self.x, prepared=True)
        self.delta_L = (fwd.dphi[-1] * (self.given - fwd.r[-1]) if self.from_target
                        else self.given)

    def _feedback(self, feedback, shapes: list[tuple[int, int]], default: list[torch.Tensor],
                  seed) -> list[torch.Tensor]:
        net = self.network
        if isinstance(feedback, str):
            if feedback not in FEEDBACK:
                raise ValueError(f"feedback: received {feedback!r}, expected one of "
                                 f"{list(FEEDBACK)} or a list of tensors")
            if feedback == "transpose":
                return default
            return random_feedback(shapes, self.S, seed, net.dtype, net.device)
        if not isinstance(feedback, (list, tuple)) or len(feedback) != len(shapes):
            raise ValueError(f"feedback: received {type(feedback).__name__}, expected "
                             f"{list(FEEDBACK)} or a list of {len(shapes)} tensors")
        out = []
        for i, (B, (n, m)) in enumerate(zip(feedback, shapes)):
            if not isinstance(B, torch.Tensor) or B.dim() not in (2, 3) \
                    or tuple(B.shape[-2:]) != (n, m):
                raise ValueError(f"feedback[{i}]: received "
                                 f"{tuple(B.shape) if isinstance(B, torch.Tensor) else B!r}, "
                                 f"expected a tensor [S, {n}, {m}] or [{n}, {m}]")
            if B.dim() == 3 and B.shape[0] not in (1, self.S):
                raise ValueError(f"feedback[{i}]: received {B.shape[0]} replicas, expected 1 or "
                                 f"S = {self.S}")
            check_finite_tensor(f"feedback[{i}]", B)
            B = B.to(device=net.device, dtype=net.dtype)
            out.append((B if B.dim() == 3 else B[None]).expand(self.S, n, m).clone())
        return out

    def _observe_credits(self, obs: State, y: State) -> State:
        """Add ``credit_ℓ`` (ℓ = 1..L) and the (fixed) forward rates ``r_ℓ`` to ``obs``."""
        net, fwd = self.network, self.forward
        lead = y["delta_1"].shape[:-3]
        for l in range(1, net.L):
            obs[f"credit_{l}"] = fwd.dphi[l - 1] * y[f"delta_{l}"]
        obs[f"credit_{net.L}"] = self.delta_L.expand(*lead, *self.delta_L.shape)
        for l in range(1, net.L + 1):
            obs[f"r_{l}"] = fwd.r[l].expand(*lead, *fwd.r[l].shape)
        return obs

    def credits(self, y: State) -> list[torch.Tensor]:
        """``[credit_1, ..., credit_L]`` from a state (or a recorded trajectory)."""
        fwd, L = self.forward, self.network.L
        lead = y["delta_1"].shape[:-3]
        return ([fwd.dphi[l - 1] * y[f"delta_{l}"] for l in range(1, L)]
                + [self.delta_L.expand(*lead, *self.delta_L.shape)])

    def initial_state(self) -> State:
        net = self.network
        return {p.name: torch.zeros(self.S, self.batch, p.size, dtype=net.dtype,
                                    device=net.device) for p in self.populations}

    def observed_steady_state(self) -> State:
        """:meth:`steady_state` (NDI) plus what :meth:`observe` shows there, each
        ``[S, B, n_ℓ]``: the feedback into each error population equals that population at
        the fixed point (``τ_δ dδ_ℓ/dt = −δ_ℓ + fb_ℓ = 0``), so ``fb_ℓ* = δ_ℓ*``; and the credits
        ``credit_ℓ* = φ'(a_ℓ) ⊙ δ_ℓ*`` (ℓ < L), ``credit_L = δ_L``. Defined wherever
        :meth:`steady_state` is, including where it omits the controller (expanding, α = 0)."""
        star = self.steady_state()
        fwd, L = self.forward, self.network.L
        for l in self._fed_back:
            star[f"fb_{l}"] = star[f"delta_{l}"].clone()
        for l in range(1, L):
            star[f"credit_{l}"] = fwd.dphi[l - 1] * star[f"delta_{l}"]
        star[f"credit_{L}"] = self.delta_L.clone()
        return star

    @property
    def _fed_back(self) -> list[int]:
        """The layers whose error population receives feedback (``fb_ℓ`` in :meth:`observe`)."""
        return list(range(1, self.network.L))

    def _credit_above(self, layer: int, y: State) -> torch.Tensor:
        """c_ℓ: the clamped δ_L at the top, φ'(a_ℓ) ⊙ δ_ℓ below."""
        if layer == self.network.L:
            return self.delta_L
        return self.forward.dphi[layer - 1] * y[f"delta_{layer}"]


class DynamicInversion(_InversionCircuit):
    """Layer-wise dynamic inversion of a :class:`ForwardNetwork` for one (batch of) example(s).

    Args:
        network: the forward network (S = 1 networks are copied to S replicas).
        x: input ``[B, n_0]`` or ``[S, B, n_0]``.
        target: ``[B, n_L]``; gives ``δ_L = φ_L'(a_L) ⊙ (target − r_L)``. Or ``output_error``.
        alpha, k_i, k_p, tau_u, tau_delta: leak, integral and proportional gains, time
            constants; each a number or S numbers (one per replica).
        feedback: ``"transpose"`` (B_ℓ = −W_ℓᵀ, stable for every α ≥ 0), ``"random"`` (Gaussian,
            seeded by ``feedback_seed``), or a list of ``B_ℓ`` tensors ``[S, n_{ℓ-1}, n_ℓ]``.
        feedback_seed: for ``"random"``: an int (every replica the same ``B``), S ints (replica s
            drawn from ``feedback_seed[s]``, as an S = 1 circuit with that int draws it) or None
            (default: replica s from seed s). See :mod:`circuits.feedback`.
        stabilise: descend the smoothed spectral abscissa of each loop's linearisation until its
            spectral abscissa is below ``−stability_margin`` (see
            :func:`circuits.stability.stabilise_feedback`); replicas already stable are kept.

    State: ``u_ℓ`` (controller, ℓ = 2..L) and ``delta_ℓ`` (error population, ℓ = 1..L-1), all
    ``[S, B, n]``. Observed as well: ``fb_ℓ`` (the feedback ``B_{ℓ+1} u_{ℓ+1}`` delivered to
    δ_ℓ), ``credit_ℓ`` (ℓ = 1..L) and the forward rates ``r_ℓ``.
    """

    #: The settle is affine in the state at a fixed input (the forward pass and φ' are fixed):
    #: :func:`solvers.solve` may step it with its exact flow (``method="affine"`` / ``"auto"``).
    affine = True

    def __init__(self, network: ForwardNetwork, x: torch.Tensor,
                 target: torch.Tensor | None = None, *, output_error: torch.Tensor | None = None,
                 alpha=1e-3, k_i=1.0, k_p=0.0, tau_u=1.0, tau_delta=1.0,
                 feedback: str | Sequence[torch.Tensor] = "transpose", feedback_seed=None,
                 stabilise: bool = False, stability_margin: float = 1e-2):
        super().__init__(network, x, target, output_error, alpha, k_i, k_p, tau_u, tau_delta)
        if not isinstance(stabilise, bool):
            raise ValueError(f"stabilise: received {stabilise!r}, expected True or False")
        if stabilise:
            stability_margin = nonnegative_float("stability_margin", stability_margin)
        net = self.network
        shapes = [(net.widths[l - 1], net.widths[l]) for l in range(2, net.L + 1)]
        self.transposed = isinstance(feedback, str) and feedback == "transpose" and not stabilise
        self.feedback = self._feedback(
            feedback, shapes, [-net.weights[l - 1].transpose(-1, -2) for l in range(2, net.L + 1)],
            feedback_seed)
        if stabilise:
            from .stability import stabilise_feedback
            self.feedback = [stabilise_feedback(self.loop_matrix, l, B, margin=stability_margin)
                             for l, B in zip(range(2, net.L + 1), self.feedback)]
        self._derive(True)
        self.populations = (
            [Population(f"u_{l}", Role.CONTROLLER, net.widths[l], l) for l in range(2, net.L + 1)]
            + [Population(f"delta_{l}", Role.ERROR, net.widths[l], l) for l in range(1, net.L)])

    def _derive(self, compact_weights: bool) -> None:
        net = self.network
        self._forward_pass()
        share = compact if compact_weights else (lambda w: w)
        if self.transposed:                   # B_ℓ = −W_ℓᵀ follows the weights
            self.feedback = [-net.weights[l - 1].transpose(-1, -2) for l in range(2, net.L + 1)]
            self._Bt = {l: -share(net.weights[l - 1]) for l in range(2, net.L + 1)}
        elif compact_weights:
            self._Bt = {l: compact(B).transpose(-1, -2).contiguous()
                        for l, B in zip(range(2, net.L + 1), self.feedback)}
        self._Wt = {l: _transposed(share(net.weights[l - 1]), compact_weights)
                    for l in range(2, net.L + 1)}

    def vector_field(self, t: float, y: State) -> State:
        out = {}
        for l in range(2, self.network.L + 1):
            e = affine(y[f"delta_{l - 1}"], self._Wt[l], -self._credit_above(l, y))
            u = y[f"u_{l}"]
            out[f"u_{l}"] = (self.k_i * e - self.alpha * u) / self.tau_u
            drive = affine(u + self.k_p * e, self._Bt[l], -y[f"delta_{l - 1}"])
            out[f"delta_{l - 1}"] = drive / self.tau_delta
        return out

    def leak(self, y: State) -> dict[str, torch.Tensor]:
        rates = {f"u_{l}": self.alpha / self.tau_u for l in range(2, self.network.L + 1)}
        rates.update({f"delta_{l}": 1.0 / self.tau_delta for l in range(1, self.network.L)})
        return rates

    def observe(self, y: State) -> State:
        obs = dict(y)
        for l in range(2, self.network.L + 1):
            e = y[f"delta_{l - 1}"] @ self._Wt[l] - self._credit_above(l, y)
            obs[f"fb_{l - 1}"] = (y[f"u_{l}"] + self.k_p * e) @ self._Bt[l]
        return self._observe_credits(obs, y)

    def loop_matrix(self, layer: int, feedback: torch.Tensor | None = None) -> torch.Tensor:
        """Linearisation ``M`` of loop ℓ in ``(δ_{ℓ-1}, u_ℓ)``, ``[S, n_{ℓ-1}+n_ℓ, same]``:
        ``[[(−I + k_p B W)/τ_δ, B/τ_δ], [k_i W/τ_u, −α I/τ_u]]``. The cascade's Jacobian is
        block triangular, so its spectrum is the union of these."""
        W = self.network.weights[layer - 1]
        B = self.feedback[layer - 2] if feedback is None else feedback
        m, n = W.shape[-2:]
        In = torch.eye(n, dtype=W.dtype, device=W.device)
        Im = torch.eye(m, dtype=W.dtype, device=W.device)
        top = torch.cat([(-In + self.k_p * (B @ W)) / self.tau_delta, B / self.tau_delta], dim=-1)
        bottom = torch.cat([self.k_i * W / self.tau_u, -self.alpha * Im / self.tau_u], dim=-1)
        return torch.cat([top, bottom], dim=-2)


    def max_loop_eigenvalue(self) -> torch.Tensor:
        """``λ_max = max Re λ`` over the loops' linearisations (:meth:`loop_matrix`), ``[S]``:
        the cascade's Jacobian is block triangular, so this is its spectral abscissa. Negative:
        stable, and ``−λ_max`` is the slowest settling rate (with ``B = −Wᵀ`` it is negative
        for every α > 0)."""
        return torch.stack([torch.linalg.eigvals(self.loop_matrix(l)).real.amax(-1)
                            for l in range(2, self.network.L + 1)]).amax(0)

    def exp_euler_dt_bound(self) -> torch.Tensor:
        """:func:`exp_euler_dt_bound` of the stiffest loop, ``[S]``: σ is the largest singular
        value of ``W_2, ..., W_L``. Requires ``feedback="transpose"``, ``k_i = τ_u = τ_δ = 1``
        and ``k_p = 0`` (else a ``ValueError`` naming the parameter)."""
        _check_bound_applies(self)
        s2 = torch.stack([torch.linalg.matrix_norm(W, ord=2) ** 2
                          for W in self.network.weights[1:]]).amax(0)
        return exp_euler_dt_bound(self.alpha.reshape(-1), s2)

    def steady_state(self) -> State:
        """The closed-form fixed point (NDI), keyed like the state. ``u_ℓ`` is the integral
        state ``k_i/(k_i + α k_p) · u*``; it is omitted where undefined (expanding, α = 0)."""
        net = self.network
        star: State = {}
        c = self.delta_L
        for l in range(net.L, 1, -1):
            u, delta = invert(net.weights[l - 1], self.feedback[l - 2], c, self.alpha_tilde)
            if u is not None:
                star[f"u_{l}"] = u * self.k_i / (self.k_i + self.alpha * self.k_p)
            star[f"delta_{l - 1}"] = delta
            c = self.forward.dphi[l - 2] * delta
        return star


class SingleLoopDynamicInversion(_InversionCircuit):
    """Single-loop DI (SDI): one controller ``z`` at the output, feedback into layer 1.

        τ_δ dδ_1/dt = −δ_1 + B (z + k_p m)
        τ_δ dδ_ℓ/dt = −δ_ℓ + W_ℓ ψ(δ_{ℓ-1})            ℓ = 2..L-1
        τ_u dz/dt   = k_i m − α z,   m = W_L ψ(δ_{L-1}) − δ_L

    ``carry="linear"`` (ψ = identity, default) carries the error forward through the linear part
    of each layer, which is what makes the α = 0 steady state equal the layer-wise one (square
    layers); ``carry="activation"`` uses ψ = φ as the authors' nonlinear variant writes it.
    ``feedback="transpose"`` gives ``B = −(W_L ⋯ W_2)ᵀ``; ``"random"`` (seeded by
    ``feedback_seed`` as in :class:`DynamicInversion`) or one tensor ``[S, n_1, n_L]`` (e.g. the
    product of stabilised per-layer feedbacks) also work.
    Credits: ``φ'(a_ℓ) ⊙ δ_ℓ`` as in layer-wise DI.
    """

    @property
    def affine(self) -> bool:
        """Affine in the state with the linear carry (ψ = identity), not with ψ = φ."""
        return self.carry_name == "linear"

    def __init__(self, network: ForwardNetwork, x: torch.Tensor,
                 target: torch.Tensor | None = None, *, output_error: torch.Tensor | None = None,
                 alpha=1e-3, k_i=1.0, k_p=0.0, tau_u=1.0, tau_delta=1.0,
                 feedback: str | torch.Tensor = "transpose", feedback_seed=None,
                 carry: str = "linear"):
        super().__init__(network, x, target, output_error, alpha, k_i, k_p, tau_u, tau_delta)
        net = self.network
        if carry not in ("linear", "activation"):
            raise ValueError(f"carry: received {carry!r}, expected 'linear' or 'activation'")
        self.carry_name = carry
        self.carry = (lambda d: d) if carry == "linear" else net.hidden_activation.phi
        self.transposed = isinstance(feedback, str) and feedback == "transpose"
        shapes = [(net.widths[1], net.widths[-1])]
        given = [feedback] if isinstance(feedback, torch.Tensor) else feedback
        if not self.transposed:
            self.feedback = self._feedback(given, shapes, [], feedback_seed)[0]
        self._derive(True)
        self.populations = ([Population("z", Role.CONTROLLER, net.widths[-1], net.L)]
                            + [Population(f"delta_{l}", Role.ERROR, net.widths[l], l)
                               for l in range(1, net.L)])

    def _derive(self, compact_weights: bool) -> None:
        net = self.network
        self._forward_pass()
        P = net.weights[1]
        for W in net.weights[2:]:
            P = W @ P
        self.path = P                                    # W_L ⋯ W_2, [S, n_L, n_1]
        share = compact if compact_weights else (lambda w: w)
        if self.transposed:
            self.feedback = -P.transpose(-1, -2)
            self._Bt = -share(P)
        elif compact_weights:
            self._Bt = compact(self.feedback).transpose(-1, -2).contiguous()
        self._Wt = [_transposed(share(W), compact_weights) for W in net.weights]

    @property
    def _fed_back(self) -> list[int]:
        return [1]                        # the other layers are carried forward, not fed back

    def _mismatch(self, y: State) -> torch.Tensor:
        L = self.network.L
        return affine(self.carry(y[f"delta_{L - 1}"]), self._Wt[L - 1], -self.delta_L)

    def vector_field(self, t: float, y: State) -> State:
        L = self.network.L
        m = self._mismatch(y)
        z = y["z"]
        out = {"z": (self.k_i * m - self.alpha * z) / self.tau_u,
               "delta_1": affine(z + self.k_p * m, self._Bt, -y["delta_1"]) / self.tau_delta}
        for l in range(2, L):
            out[f"delta_{l}"] = affine(self.carry(y[f"delta_{l - 1}"]), self._Wt[l - 1],
                                       -y[f"delta_{l}"]) / self.tau_delta
        return out

    def leak(self, y: State) -> dict[str, torch.Tensor]:
        rates = {f"delta_{l}": 1.0 / self.tau_delta for l in range(1, self.network.L)}
        rates["z"] = self.alpha / self.tau_u
        return rates

    def observe(self, y: State) -> State:
        L = self.network.L
        obs = dict(y)
        m = self.carry(y[f"delta_{L - 1}"]) @ self._Wt[L - 1] - self.delta_L
        obs["fb_1"] = (y["z"] + self.k_p * m) @ self._Bt
        return self._observe_credits(obs, y)


    def max_loop_eigenvalue(self, y: State | None = None) -> torch.Tensor:
        """``λ_max = max Re λ`` of the whole circuit's Jacobian at ``y`` (default: the initial
        state; with ``carry="linear"`` the Jacobian is the same everywhere), ``[S]``. Negative:
        stable, and ``−λ_max`` is the slowest settling rate."""
        from .stability import jacobian
        J = jacobian(self, self.initial_state() if y is None else y)
        return torch.linalg.eigvals(J).real.amax(-1)

    def exp_euler_dt_bound(self) -> torch.Tensor:
        """:func:`exp_euler_dt_bound` with σ the largest singular value of the path
        ``W_L ⋯ W_2``, ``[S]``. The carried layers add a lag the bound ignores: take a larger
        margin than for layer-wise DI. Requires ``feedback="transpose"``, ``k_i = τ_u = τ_δ =
        1`` and ``k_p = 0`` (else a ``ValueError`` naming the parameter)."""
        _check_bound_applies(self)
        s2 = torch.linalg.matrix_norm(self.path, ord=2) ** 2
        return exp_euler_dt_bound(self.alpha.reshape(-1), s2)

    def steady_state(self) -> State:
        """Closed form for ``carry="linear"``: the inversion of the whole path ``W_L ⋯ W_2``."""
        if self.carry_name != "linear":
            raise ValueError("carry: received 'activation', expected 'linear' (the closed form "
                             "exists only for the linear carry)")
        u, delta1 = invert(self.path, self.feedback, self.delta_L, self.alpha_tilde)
        star: State = {"delta_1": delta1}
        if u is not None:
            star["z"] = u * self.k_i / (self.k_i + self.alpha * self.k_p)
        d = delta1
        for l in range(2, self.network.L):
            d = d @ self._Wt[l - 1]
            star[f"delta_{l}"] = d
        return star
