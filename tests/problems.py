"""Random test problems shared by the tests: a seeded network and a seeded batch."""
import torch

from circuits import ForwardNetwork

F64 = torch.float64


def random_problem(widths, activation="tanh", seed=0, B=1, *, data_offset=10):
    """``(network, x [B, n_0], target [B, n_L])``: ``ForwardNetwork(widths, activation,
    seed=seed)`` and float64 normal data drawn from seed ``data_offset + seed``."""
    net = ForwardNetwork(list(widths), activation, seed=seed)
    g = torch.Generator().manual_seed(data_offset + seed)
    return net, torch.randn(B, widths[0], generator=g, dtype=F64), \
        torch.randn(B, widths[-1], generator=g, dtype=F64)
