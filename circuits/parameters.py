"""Populations, roles and per-replica parameters shared by every circuit family."""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Sequence

import torch


class Role(str, Enum):
    FORWARD = "forward"
    ERROR = "error"
    CONTROLLER = "controller"
    FEEDBACK = "feedback"
    TARGET = "target"
    WEIGHT = "weight"
    GATE = "gate"
    MOMENT = "moment"


@dataclass(frozen=True)
class Population:
    """A named population: its role in the circuit, its width per example and its layer."""

    name: str
    role: Role
    size: int
    layer: int | None = None


def replica_count(name: str, value: Any) -> int:
    """Length of a per-replica parameter (1 for a scalar)."""
    if isinstance(value, torch.Tensor):
        return 1 if value.dim() == 0 else value.reshape(-1).shape[0]
    if isinstance(value, (list, tuple)):
        return len(value)
    return 1


def as_replica_parameter(name: str, value: Any, replicas: int, dtype: torch.dtype,
                         device: torch.device | str, *, minimum: float = 0.0,
                         allow_minimum: bool = True) -> torch.Tensor:
    """A scalar circuit parameter as a ``[S, 1, 1]`` tensor.

    ``value`` is a number (shared by all replicas) or a sequence / 1-D tensor of length S (one
    value per replica). Non-finite values and values below ``minimum`` (or equal to it when
    ``allow_minimum`` is false) are rejected with a message naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, list, tuple, torch.Tensor)):
        raise TypeError(f"{name}: received {type(value).__name__}, expected a number or a "
                        f"sequence of {replicas} numbers (one per replica)")
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise TypeError(f"{name}: received a sequence holding {describe(bad[0])} "
                            f"({bad[0]!r}), expected real numbers (one per replica)")
    elif isinstance(value, torch.Tensor):
        check_real_tensor(name, value)
    t = torch.as_tensor(value, dtype=dtype, device=device).reshape(-1)
    if t.numel() not in (1, replicas):
        raise ValueError(f"{name}: received {t.numel()} values, expected 1 or S = {replicas}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: received non-finite values {t.tolist()[:5]}, expected finite "
                         "numbers")
    low = t.min().item()
    if low < minimum or (not allow_minimum and low <= minimum):
        rel = "≥" if allow_minimum else ">"
        raise ValueError(f"{name}: received {low!r}, expected values {rel} {minimum}")
    return t.expand(replicas).reshape(replicas, 1, 1).clone()


def resolve_replicas(**values: Any) -> int:
    """The replica count S implied by several per-replica parameters (each 1 or S)."""
    counts = {k: replica_count(k, v) for k, v in values.items() if v is not None}
    S = max(counts.values(), default=1)
    for k, n in counts.items():
        if n not in (1, S):
            raise ValueError(f"{k}: received {n} replica values, expected 1 or S = {S} "
                             f"(set by {max(counts, key=counts.get)})")
    return S


def check_real_tensor(name: str, value: Any, dims: Sequence[int] | None = None) -> torch.Tensor:
    """``value`` must be a real tensor (not complex: casting to the circuit's float dtype would
    drop the imaginary part silently) with ``dims`` dimensions; shapes only, no host sync."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: received {type(value).__name__}, expected a torch.Tensor")
    if value.is_complex():
        raise TypeError(f"{name}: received a complex tensor ({value.dtype}), expected real "
                        "values (casting would drop the imaginary part; pass .real explicitly "
                        "if that is what you mean)")
    if dims is not None and value.dim() not in dims:
        raise ValueError(f"{name}: received shape {tuple(value.shape)}, expected "
                         f"{' or '.join(str(d) for d in dims)} dimensions")
    return value


def check_finite_tensor(name: str, value: Any, dims: Sequence[int] | None = None) -> torch.Tensor:
    """A real tensor with ``dims`` dimensions and only finite values (one host sync)."""
    check_real_tensor(name, value, dims)
    if not torch.isfinite(value).all():
        raise ValueError(f"{name}: received non-finite values, expected finite numbers")
    return value


def positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name}: received {value!r}, expected a finite number > 0")
    return float(value)


def nonnegative_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"{name}: received {value!r}, expected a finite number ≥ 0")
    return float(value)


#: torch.manual_seed accepts integers in this range.
SEED_RANGE = (-0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFFF)


def check_seed(name: str, value: Any) -> int:
    """An integer seed torch's generators accept (not a bool, a float or a tensor)."""
    if isinstance(value, bool) or not isinstance(value, int) \
            or not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise ValueError(f"{name}: received {value!r}, expected an integer seed in "
                         f"[{SEED_RANGE[0]}, {SEED_RANGE[1]}]")
    return value


#: The dtypes a circuit computes in.
FLOAT_DTYPES = (torch.float32, torch.float64)


def check_dtype(name: str, value: Any) -> torch.dtype:
    """``torch.float32`` or ``torch.float64``: integer dtypes would truncate every weight to
    zero, float16/bfloat16 lose the settles' precision, complex ones are not supported."""
    if not isinstance(value, torch.dtype):
        hint = (f" (write torch.{value}, not the string)"
                if isinstance(value, str) and value in ("float32", "float64") else "")
        raise TypeError(f"{name}: received {describe(value)} {value!r}, expected torch.float32 "
                        f"or torch.float64{hint}")
    if value not in FLOAT_DTYPES:
        raise ValueError(f"{name}: received {value}, expected torch.float32 or torch.float64 "
                         "(integer dtypes truncate the weights, half precision and complex "
                         "dtypes are not supported)")
    return value


def check_device(name: str, value: Any) -> torch.device:
    """A device that exists on this machine, as a ``torch.device``: ``cpu``, or ``cuda``/
    ``cuda:k``/``mps`` where this build of torch has them and they are present."""
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name}: received {describe(value)} {value!r}, expected a device name "
                        "such as 'cpu' or 'cuda' (or a torch.device)")
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{name}: received {value!r}, expected a device name such as 'cpu', "
                         f"'cuda' or 'cuda:0' ({error})") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: received {value!r}, but no CUDA device is available on "
                             "this machine (torch " + torch.__version__ + "), expected 'cpu'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name}: received {value!r}, expected cuda:0 … cuda:{count - 1} "
                             f"({count} CUDA device(s) present)")
        # 'cuda' means the current device: name it, as the tensors made on it report theirs
        # (solve compares y0's device with the circuit's)
        return device if device.index is not None else \
            torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name}: received {value!r}, but MPS is not available on this "
                             "machine, expected 'cpu'")
        return device
    raise ValueError(f"{name}: received {value!r}, expected 'cpu', 'cuda' (or 'cuda:k') or "
                     "'mps'")


def describe(value: Any) -> str:
    """A short description of a received value for error messages (``list of 2``, ``None``)."""
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def given_matrices(name: str, value: Any, shapes: Sequence[tuple[int, int]], replicas: int,
                   dtype: torch.dtype, device: torch.device, alternatives: str,
                   finite: bool = True) -> list[torch.Tensor]:
    """User-given per-layer matrices (feedback B or Q): a list of ``[n, m]`` or ``[S, n, m]``
    tensors, one per shape, returned as ``[S, n, m]`` on ``dtype``/``device``. Anything else is
    an error naming ``name``, what was received and ``alternatives`` or the expected shapes.
    ``finite=False`` checks only that they are real (a diverged replica's own feedback may be
    non-finite; the solver flags that replica)."""
    if not isinstance(value, (list, tuple)) or len(value) != len(shapes) or any(
            not isinstance(q, torch.Tensor) or tuple(q.shape[-2:]) != tuple(s)
            or q.dim() not in (2, 3) or q.dim() == 3 and q.shape[0] not in (1, replicas)
            for q, s in zip(value, shapes)):
        raise ValueError(f"{name}: received {describe(value)}, expected {alternatives} or "
                         f"{len(shapes)} tensors shaped "
                         f"{['[S, %d, %d]' % tuple(s) for s in shapes]} (S = 1"
                         f"{' or %d' % replicas if replicas > 1 else ''})")
    for i, q in enumerate(value):
        (check_finite_tensor if finite else check_real_tensor)(f"{name}[{i}]", q)
    return [(q if q.dim() == 3 else q[None]).to(device=device, dtype=dtype)
            .expand(replicas, *s).clone() for q, s in zip(value, shapes)]
