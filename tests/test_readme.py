"""The README's ```python blocks run as they stand and print what their comments claim.

Each block is executed alone, in a fresh namespace (so it must hold its own imports), in
float64, on one torch thread, within a time limit. A comment ``# → CLAIM`` (optionally followed
by `` — explanation``) on a statement that prints states what each line it prints is: the CLAIM
is matched against the printed line with

* ``< X``: a number whose magnitude is below X,
* ``≈ X``: a number within 10 % of X,
* ``...``: anything,
* everything else literally (runs of spaces match any spacing).
"""
from __future__ import annotations

import ast
import io
import math
import re
import signal
import sys
import time
import tokenize
from pathlib import Path

import pytest
import torch

import circuits  # noqa: F401  imported here so that no block's time includes the imports
import solvers  # noqa: F401
from demos.config import intra_op_threads

README = Path(__file__).resolve().parents[1] / "README.md"
CPU_SECONDS = 5.0          # per block: process time (not wall time, which a busy machine stretches)
WALL_SECONDS = 60          # per block: a hang guard
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan"
PLACEHOLDER = re.compile(r"(<|≈)\s*(" + NUMBER + r")")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line in README.md, code)`` of each ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def claims(code: str) -> dict[int, str]:
    """``{line: claim}`` of each ``# → claim`` comment (lines counted from 1 in the block)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT and tok.string.lstrip("# ").startswith("→"):
            claim = tok.string.lstrip("# ")[1:].strip()
            out[tok.start[0]] = re.split(r"\s+—\s", claim, maxsplit=1)[0].strip()
    return out


def statement_lines(code: str, line: int) -> range:
    """The lines of the innermost statement of ``code`` that spans ``line``."""
    best = None
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.stmt) and node.lineno <= line <= node.end_lineno:
            if best is None or node.end_lineno - node.lineno <= best.end_lineno - best.lineno:
                best = node
    assert best is not None, f"block line {line}: a claim outside any statement"
    return range(best.lineno, best.end_lineno + 1)


def matches(claim: str, printed: str) -> str | None:
    """None if ``printed`` is what ``claim`` says, else why not."""
    pattern, checks, pos = "", [], 0
    for m in PLACEHOLDER.finditer(claim):
        pattern += _literal(claim[pos:m.start()]) + f"({NUMBER})"
        checks.append((m.group(1), float(m.group(2))))
        pos = m.end()
    pattern += _literal(claim[pos:])
    found = re.fullmatch(pattern, printed.strip())
    if found is None:
        return f"printed {printed.strip()!r}, the comment says {claim!r}"
    for (op, bound), value in zip(checks, map(float, found.groups())):
        ok = abs(value) < bound if op == "<" else math.isclose(value, bound, rel_tol=0.1)
        if not ok:
            return f"printed {printed.strip()!r}: {value:g} is not {op} {bound:g} ({claim!r})"
    return None


def _literal(text: str) -> str:
    parts = [re.escape(p) if p != "..." else ".*" for p in re.split(r"(\.\.\.)", text)]
    return re.sub(r"(\\ )+", r"\\s*", "".join(parts))


def run_block(code: str, name: str) -> list[tuple[int, str]]:
    """Execute ``code`` in a fresh namespace; returns ``(block line, text)`` of each print."""
    printed: list[tuple[int, str]] = []

    def recording_print(*args, sep=" ", end="\n", file=None, flush=False):
        if file not in (None, sys.stdout):
            return print(*args, sep=sep, end=end, file=file, flush=flush)
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename != name:
            frame = frame.f_back
        text = sep.join(map(str, args))
        printed.append((frame.f_lineno if frame is not None else 0, text))
        sys.stdout.write(text + end)

    def too_long(signum, frame):
        raise TimeoutError(f"{name}: still running after {WALL_SECONDS} s")

    namespace = {"__name__": "__main__", "print": recording_print}
    dtype = torch.get_default_dtype()
    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(WALL_SECONDS)
    try:
        torch.set_default_dtype(torch.float64)
        with intra_op_threads(1):
            start = time.process_time()
            exec(compile(code, name, "exec"), namespace)
            seconds = time.process_time() - start
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        torch.set_default_dtype(dtype)
    assert seconds <= CPU_SECONDS, f"{name}: took {seconds:.1f} s of CPU, the limit is " \
                                   f"{CPU_SECONDS} s: make the block smaller"
    return printed


def test_readme_has_python_blocks_with_claims():
    assert len(BLOCKS) >= 4
    assert all(claims(code) for _, code in BLOCKS), "every block states what it prints"


@pytest.mark.parametrize("start, code", BLOCKS, ids=[f"README.md:{s}" for s, _ in BLOCKS])
def test_readme_block_runs_alone_and_prints_what_it_claims(start, code):
    name = f"README.md:{start}"
    printed = run_block(code, name)
    for line, claim in claims(code).items():
        lines = statement_lines(code, line)
        outputs = [text for at, text in printed if at in lines]
        where = f"README.md line {start + line}"
        assert outputs, f"{where}: the comment says {claim!r}, but the statement printed nothing"
        for text in outputs:
            for row in text.splitlines() or [""]:
                problem = matches(claim, row)
                assert problem is None, f"{where}: {problem}"


@pytest.mark.parametrize("claim, printed, ok", [
    ("True", "True", True), ("True", "False", False),
    ("[< 1e-13, < 1e-13]", "[3.4e-15, 2.7e-15]", True),
    ("[< 1e-13, < 1e-13]", "[3.4e-15, 2.7e-12]", False),
    ("[≈ 1100, ≈ 35]", "[1100.0, 36.5]", True), ("[≈ 1100, ≈ 35]", "[1100.0, 45.0]", False),
    ("{'converged': 64, ...}", "{'converged': 64, 'diverged': 0}", True),
    ("< 0.85 640", "0.84  640", True), ("< 0.85 640", "0.84 641", False),
])
def test_claims_are_matched_as_documented(claim, printed, ok):
    assert (matches(claim, printed) is None) == ok
