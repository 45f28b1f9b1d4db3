"""The stability measurements of dynamic inversion used by the Podlaski & Machens (2020)
reproduction: the loops' spectral abscissa (:meth:`max_loop_eigenvalue`) and the explicit step
bound (:func:`exp_euler_dt_bound`), against hand-built 2×2 / 3×3 oracles in float64.

The network: ``W_1 = [[1, .5], [.2, 1]]``, ``W_2 = diag(3, 0.1)`` (SDI: ``W_3 = I``), so
the loops' singular values are 3 and 0.1; α = 0.01 and 0.001 as two replicas."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from circuits import DynamicInversion, ForwardNetwork, SingleLoopDynamicInversion
from circuits.dynamic_inversion import exp_euler_dt_bound
from circuits.stability import jacobian

F64 = torch.float64
ALPHAS = (0.01, 0.001)
W1 = torch.tensor([[1.0, 0.5], [0.2, 1.0]], dtype=F64)
X = torch.tensor([[1.0, -1.0]], dtype=F64)
ERROR = torch.tensor([[0.3, -0.2]], dtype=F64)


def _net(*diagonals):
    weights = [W1] + [torch.diag(torch.tensor(d, dtype=F64)) for d in diagonals]
    return ForwardNetwork([2] * (len(weights) + 1), "linear", bias=False,
                          weights=[w[None] for w in weights])


def _di(**kw):
    return DynamicInversion(_net((3.0, 0.1)), X, output_error=ERROR, alpha=list(ALPHAS), **kw)


def _sdi(path=(3.0, 0.1)):
    return SingleLoopDynamicInversion(_net(path, (1.0, 1.0)), X, output_error=ERROR,
                                      alpha=list(ALPHAS))


def test_di_max_loop_eigenvalue_is_the_slow_mode_of_the_weakest_singular_value():
    """Measured ``[-0.020206229412959575, -0.011112372448996155]``: with ``B = −Wᵀ`` each
    singular value σ gives a block ``[[−1, −σ], [σ, −α]]`` whose eigenvalues are
    ``−(1 + α)/2 ± √((1 − α)²/4 − σ²)``; σ = 0.1 gives the real, slowest one. It equals the
    spectral abscissa of the whole cascade's Jacobian (block triangular)."""
    di = _di()
    lam = di.max_loop_eigenvalue()
    assert lam.dtype == F64 and lam.shape == (2,)
    oracle = [-(1 + a) / 2 + np.sqrt((1 - a) ** 2 / 4 - 0.1 ** 2) for a in ALPHAS]
    assert lam.tolist() == pytest.approx(oracle, rel=1e-12)
    assert lam.tolist() == pytest.approx([-0.020206229412959575, -0.011112372448996155],
                                         rel=1e-12)
    whole = torch.linalg.eigvals(jacobian(di, di.initial_state())).real.amax(-1)
    assert lam.tolist() == pytest.approx(whole.tolist(), rel=1e-10)


def test_exp_euler_dt_bound_from_the_largest_singular_value():
    """Measured ``[0.1120976692563818, 0.11120986557049216]`` = ``(1 + α)/(α + 3²)``, for DI
    (largest σ of W_2) and SDI (largest σ of the path W_3 W_2) alike."""
    expected = [(1 + a) / (a + 9.0) for a in ALPHAS]
    assert expected == pytest.approx([0.1120976692563818, 0.11120986557049216], rel=1e-15)
    assert _di().exp_euler_dt_bound().tolist() == pytest.approx(expected, rel=1e-12)
    assert _sdi().exp_euler_dt_bound().tolist() == pytest.approx(expected, rel=1e-12)
    bound = exp_euler_dt_bound(torch.tensor(ALPHAS, dtype=F64), torch.tensor(9.0, dtype=F64))
    assert bound.tolist() == pytest.approx(expected, rel=1e-15)


def test_exp_euler_dt_bound_is_where_forward_euler_loses_the_fast_mode():
    """At σ = 3, α = 0.01 the fast pair is ``−0.505 ± 2.9989i``; ``|1 + hλ| = 1`` exactly at
    h = 0.1120976692563818 (the bound): 1 − 1e-9 just below it, above 1 just above."""
    a, s = 0.01, 3.0
    lam = np.linalg.eigvals(np.array([[-1.0, -s], [s, -a]]))
    h = float(exp_euler_dt_bound(torch.tensor(a, dtype=F64), torch.tensor(s * s, dtype=F64)))
    assert np.abs(1 + h * lam).max() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(1 + 0.99 * h * lam).max() < 1.0 < np.abs(1 + 1.01 * h * lam).max()


def test_sdi_max_loop_eigenvalue_against_the_3x3_modes():
    """Measured ``[0.39350734260230913, 0.3969117882911046]``: the single loop with path gain
    3 is *unstable* (the carried layer adds a lag; layer-wise DI on the same weights is stable,
    −0.0202), while path gains (0.5, 0.1) give ``[-0.020421286155588678,
    -0.011228407903845864]``. Oracle: per singular value σ of the path, the modes of
    ``[[−1, 0, −σ], [σ, −1, 0], [0, 1, −α]]`` in (δ_1, δ_2, z). The linear carry's Jacobian is
    the same at any state."""
    def oracle(path):
        return [max(np.linalg.eigvals(np.array([[-1, 0, -s], [s, -1, 0], [0, 1, -a]]))
                    .real.max() for s in path) for a in ALPHAS]

    sdi = _sdi()
    lam = sdi.max_loop_eigenvalue()
    assert lam.dtype == F64
    assert lam.tolist() == pytest.approx(oracle((3.0, 0.1)), rel=1e-10)
    assert lam.tolist() == pytest.approx([0.39350734260230913, 0.3969117882911046], rel=1e-10)
    g = torch.Generator().manual_seed(0)
    y = {k: torch.randn(v.shape, generator=g, dtype=F64)
         for k, v in sdi.initial_state().items()}
    assert sdi.max_loop_eigenvalue(y).tolist() == lam.tolist()
    stable = _sdi((0.5, 0.1)).max_loop_eigenvalue()
    assert stable.tolist() == pytest.approx(oracle((0.5, 0.1)), rel=1e-10)
    assert stable.tolist() == pytest.approx([-0.020421286155588678, -0.011228407903845864],
                                            rel=1e-10)


@pytest.mark.parametrize("kw, match", [({"k_p": 0.5}, "k_p: received \\[0.5, 0.5\\], expected 0"),
                                       ({"k_i": 2.0}, "k_i: received \\[2.0, 2.0\\], expected 1"),
                                       ({"tau_u": 3.0}, "tau_u"),
                                       ({"feedback": "random"}, "feedback: received")])
def test_exp_euler_dt_bound_refuses_circuits_it_was_not_derived_for(kw, match):
    with pytest.raises(ValueError, match=match):
        _di(**kw).exp_euler_dt_bound()
