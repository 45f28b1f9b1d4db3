"""Checkpoints of a long integration: written atomically, read without running code.

A checkpoint is a mapping of plain data (numbers, strings, lists, dicts) and tensors: the state
at a chunk boundary, the presentations done, divergence flags, a history. :func:`save` writes it
to a temporary file beside ``path`` and renames it, so an interruption never leaves half a file;
:func:`load` reads it with ``torch.load(weights_only=True)``, which refuses anything that would
execute code on load (a pickled object with a ``__reduce__``), and turns every way a file can be
unreadable (missing, empty, truncated, garbage, wrong content) into one ``ValueError`` that names
the file and says what to do.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch


def save(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(payload), tmp)
    os.replace(tmp, path)


def load(path: str | Path, required: Sequence[str] = ()) -> dict[str, Any]:
    """The checkpoint at ``path`` (a mapping holding at least the keys ``required``).

    Raises ``ValueError`` naming the file when it is missing, unreadable, not a checkpoint, or
    holds anything but tensors and plain data (such a file could run code when loaded)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r}: no such file; expected a checkpoint written "
                         "by an earlier run (run without --resume to start afresh)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile,
            KeyError, ValueError, AttributeError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint {str(path)!r}: cannot be read as a checkpoint ({first[:200]}"
                         "); expected a file written by save() holding only tensors and plain "
                         "data. Delete it, or run without --resume to start afresh") from None
    if not isinstance(payload, dict):
        raise ValueError(f"checkpoint {str(path)!r}: holds a {type(payload).__name__}, expected a "
                         "mapping written by save()")
    missing = [k for k in required if k not in payload]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r}: missing keys {missing}; expected a "
                         f"checkpoint holding {list(required)}")
    return payload


__all__ = ["save", "load"]
