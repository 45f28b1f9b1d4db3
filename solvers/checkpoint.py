"""Checkpoints of a long integration: written atomically, read without running code, verified.

A checkpoint is a mapping of plain data (None, bools, numbers, strings, lists, tuples, dicts)
and tensors: the state at a chunk boundary, the presentations done, divergence flags, a history.

Format: the file is ``torch.save`` of a ``dict`` (torch's zip container) holding the payload's
keys plus :data:`CHECKSUM_KEY` (``"__checksum__"``), whose value is ``"sha256:<hex>"``: the
SHA-256 of the payload's canonical encoding (:func:`digest`: every value tagged with its type,
every tensor with its dtype, shape and raw bytes, mappings in order). Such a file can still be
read with ``torch.load(path, weights_only=True)``.

:func:`save` writes it to a temporary file beside ``path`` (flushed to disk) and renames it, so an
interruption never leaves half a file. :func:`load` reads it with
``torch.load(weights_only=True)``, which refuses anything that would execute code on load (a
pickled object with a ``__reduce__``), recomputes the checksum (a flipped byte in the tensor data
is a mismatch, not a silently different resume), and turns every way a file can be unusable
(missing, empty, truncated, garbage, code-bearing, edited, missing keys) into a
:class:`CheckpointError` (a ``ValueError``) that names the file, says what is wrong and what to
do. :func:`check_state` checks a loaded state against the one a run expects (keys, shapes,
dtypes).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

CHECKSUM_KEY = "__checksum__"
ALGORITHM = "sha256"
_AFRESH = "run without --resume to start afresh (or delete the file)"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, refused, corrupted or not the
    one the run expects. The message names the file."""


# -- the checksum -----------------------------------------------------------------------------

def _feed(h: Any, tag: str, data: bytes) -> None:
    h.update(f"{tag}:{len(data)}:".encode())
    h.update(data)


def _walk(h: Any, value: Any, where: str) -> None:
    if value is None:
        _feed(h, "none", b"")
    elif isinstance(value, bool):
        _feed(h, "bool", b"1" if value else b"0")
    elif isinstance(value, int):
        _feed(h, "int", str(int(value)).encode())
    elif isinstance(value, float):
        _feed(h, "float", float.__repr__(float(value)).encode())
    elif isinstance(value, complex):
        _feed(h, "complex", repr(complex(value)).encode())
    elif isinstance(value, str):
        _feed(h, "str", value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, bytes):
        _feed(h, "bytes", value)
    elif isinstance(value, torch.dtype):
        _feed(h, "dtype", str(value).encode())
    elif isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.is_quantized:
            raise TypeError(f"{where}: received a {value.layout} tensor, expected a dense one")
        t = value.detach().cpu().resolve_conj().resolve_neg().contiguous()
        _feed(h, "tensor", f"{t.dtype}|{tuple(t.shape)}".encode())
        _feed(h, "data", t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        _feed(h, "map", str(len(value)).encode())
        for k, v in value.items():
            _walk(h, k, f"{where} key")
            _walk(h, v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        _feed(h, "list" if isinstance(value, list) else "tuple", str(len(value)).encode())
        for i, v in enumerate(value):
            _walk(h, v, f"{where}[{i}]")
    else:
        raise TypeError(f"{where}: received {type(value).__name__}, expected tensors and plain "
                        "data (None, bool, int, float, str, list, tuple, dict)")


def digest(payload: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of ``payload``'s canonical encoding (what :func:`save` stores)."""
    h = hashlib.new(ALGORITHM)
    _walk(h, payload, "payload")
    return f"{ALGORITHM}:{h.hexdigest()}"


# -- save / load --------------------------------------------------------------------------------

def save(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (tensors and plain data) with its checksum to ``path`` atomically
    (temporary file beside it, flushed, then renamed over it)."""
    path = Path(path)
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload: received {type(payload).__name__}, expected a mapping")
    if CHECKSUM_KEY in payload:
        raise ValueError(f"payload: holds the reserved key {CHECKSUM_KEY!r}")
    body = dict(payload)
    body[CHECKSUM_KEY] = digest(body)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(body, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(path: str | Path, required: Sequence[str] = ()) -> dict[str, Any]:
    """The payload saved at ``path`` (holding at least the keys ``required``), its checksum
    verified. Raises :class:`CheckpointError` naming the file when it is missing, empty,
    unreadable (truncated, garbage), refused (it holds objects other than tensors and plain
    data, which could run code when loaded), without a checksum, corrupted (checksum mismatch)
    or missing keys."""
    path = Path(path)
    name = f"checkpoint {str(path)!r}"
    if not path.exists():
        raise CheckpointError(f"{name}: no such file; expected a checkpoint written by an "
                              f"earlier run: {_AFRESH}")
    if not path.is_file():
        raise CheckpointError(f"{name}: not a regular file; expected a checkpoint file")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise CheckpointError(f"{name}: cannot be read ({err.strerror or err})") from None
    if size == 0:
        raise CheckpointError(f"{name}: empty file (0 bytes; an interrupted copy?); expected a "
                              f"checkpoint written by save(): {_AFRESH}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # torch's notes on old pickle protocols
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip()
        detail = _first_line(detail.split("\n\n")[0] if detail else err)
        detail = detail.split(" was not an allowed global")[0]
        if "weights only" in text.lower():
            what = ("it holds objects other than tensors and plain data, which could run code "
                    "when loaded" if "global" in detail.lower() else
                    "not a checkpoint, or it holds objects other than tensors and plain data")
            raise CheckpointError(
                f"{name}: refused by the weights-only reader ({detail}): {what} (not loaded: "
                f"nothing in it ran); expected a checkpoint written by save(): {_AFRESH}"
            ) from None
        raise CheckpointError(f"{name}: cannot be read as a checkpoint ({detail}); expected a "
                              f"file written by save(): {_AFRESH}") from None
    except Exception as err:        # torch raises RuntimeError, EOFError, ... for bad files
        raise CheckpointError(
            f"{name}: cannot be read as a checkpoint ({type(err).__name__}: "
            f"{_first_line(err)[:120]}; truncated or not a checkpoint, {size} bytes); expected "
            f"a file written by save(): {_AFRESH}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{name}: holds a {type(payload).__name__}, expected a mapping "
                              "written by save()")
    stored = payload.pop(CHECKSUM_KEY, None)
    if stored is None:
        raise CheckpointError(f"{name}: no checksum ({CHECKSUM_KEY!r}), so its contents cannot "
                              "be verified; expected a checkpoint written by this version's "
                              f"save(): {_AFRESH}")
    try:
        actual = digest(payload)
    except TypeError as err:
        raise CheckpointError(f"{name}: {err}") from None
    if not isinstance(stored, str) or stored != actual:
        raise CheckpointError(f"{name}: checksum mismatch (stored {str(stored)[:80]!r}, contents "
                              f"give {actual!r}): the file changed after it was written "
                              f"(corrupted or edited); {_AFRESH}")
    missing = [k for k in required if k not in payload]
    if missing:
        raise CheckpointError(f"{name}: missing keys {missing}; expected a checkpoint holding "
                              f"{list(required)}")
    return payload


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def check_state(path: str | Path, key: str, value: Any, expected: Any) -> None:
    """``value`` (what the checkpoint at ``path`` holds under ``key``) must have the structure
    of ``expected`` (what the run builds): the same mapping keys, list lengths and tensor
    shapes and dtypes; else a :class:`CheckpointError` naming the file and the entry."""
    name = f"checkpoint {str(path)!r}"

    def describe(v: Any) -> str:
        if isinstance(v, torch.Tensor):
            return f"a {str(v.dtype).removeprefix('torch.')} tensor of shape {tuple(v.shape)}"
        return type(v).__name__

    def walk(v: Any, e: Any, where: str) -> None:
        if isinstance(e, torch.Tensor):
            ok = isinstance(v, torch.Tensor) and v.shape == e.shape and v.dtype == e.dtype
        elif isinstance(e, Mapping):
            ok = isinstance(v, Mapping) and set(v) == set(e)
            if not ok and isinstance(v, Mapping):
                raise CheckpointError(
                    f"{name}: {where} holds keys {sorted(map(str, v))}, expected "
                    f"{sorted(map(str, e))} (written for another circuit?); {_AFRESH}")
        elif isinstance(e, (list, tuple)):
            ok = isinstance(v, (list, tuple)) and len(v) == len(e)
        else:
            return
        if not ok:
            raise CheckpointError(f"{name}: {where} is {describe(v)}, expected {describe(e)} "
                                  f"(written for another network or replica count?); {_AFRESH}")
        if isinstance(e, Mapping):
            for k in e:
                walk(v[k], e[k], f"{where}[{k!r}]")
        elif isinstance(e, (list, tuple)):
            for i, (a, b) in enumerate(zip(v, e)):
                walk(a, b, f"{where}[{i}]")

    walk(value, expected, key)


def check_count(path: str | Path, key: str, value: Any, high: int) -> int:
    """``value`` (the checkpoint's ``key``) must be an integer in ``[0, high]``, else a
    :class:`CheckpointError` naming the file."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise CheckpointError(f"checkpoint {str(path)!r}: {key} is {value!r}, expected an "
                              f"integer in [0, {high}]; {_AFRESH}")
    return value


__all__ = ["CHECKSUM_KEY", "CheckpointError", "digest", "save", "load", "check_state",
           "check_count"]
