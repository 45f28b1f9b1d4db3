"""What every demo test asks of a written figure."""
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes: int = 10_000) -> None:
    """``path`` is a PNG file of at least ``min_bytes`` (an empty plot is ~5 kB)."""
    assert path.is_file() and path.stat().st_size > min_bytes, path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
