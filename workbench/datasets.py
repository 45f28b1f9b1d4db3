"""Data sets that need no network access, as :class:`workbench.tasks.Task` objects.

* :func:`signed_xor` — ``x ~ U(−1, 1)²``, label 1 iff ``x_0 x_1 ≥ 0`` (Mertens' notebook, seed 004).
* :func:`digits` — scikit-learn's bundled 8 × 8 handwritten digits (1797 × 64, 10 classes; the
  data ship inside the scikit-learn wheel, so nothing is downloaded). Needs ``scikit-learn``.
* :func:`mnist1d` — MNIST-1D (Greydanus 2020) as published: the ``mnist1d`` package's own
  generator with its default arguments (4000 training / 1000 test signals of length 40, seed
  42), generated offline in memory (nothing downloaded or unpickled). Needs ``mnist1d``.
* :func:`load_idx` / :func:`idx_dataset` — MNIST or Fashion-MNIST from the IDX files a user
  already has on disk (plain or gzipped).
* :func:`teacher_linear` / :func:`teacher_nonlinear` — Podlaski & Machens' teacher regression
  settings, thin wrappers of :func:`workbench.tasks.teacher_regression`.

``make_dataset(name, **arguments)`` picks one by name (:data:`DATASETS`). Every argument is
checked: a bad one raises ``ValueError`` naming the parameter, what was received and what was
expected.
"""
from __future__ import annotations

import functools
import gzip
import math
import os
import random
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .tasks import Task, _dtype, _integer, one_hot, teacher_regression
from .tasks import standardise as standardise_features


class DataFileError(FileNotFoundError, ValueError):
    """A data file the user was asked to provide is missing (also a ``ValueError``)."""


# -- helpers ----------------------------------------------------------------------------------

def _safe_standardise(x_train: torch.Tensor, x_test: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-set per-feature standardisation that leaves (near-)constant features merely
    centred: a pixel that is always 0 in the training set but not in the test set would
    otherwise be divided by ~0 (``workbench.tasks.standardise`` clamps at ``finfo.tiny``)."""
    mean, std = x_train.mean(0), x_train.std(0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return (x_train - mean) / std, (x_test - mean) / std


def _task(name: str, x_train: torch.Tensor, l_train: torch.Tensor, x_test: torch.Tensor,
          l_test: torch.Tensor, classes: int, dtype: torch.dtype) -> Task:
    return Task(name, x_train.to(dtype), one_hot(l_train, classes, dtype), x_test.to(dtype),
                one_hot(l_test, classes, dtype), l_train, l_test)


# -- signed XOR -------------------------------------------------------------------------------

def signed_xor(n_train: int = 1000, n_test: int = 1000, seed: int = 0,
               dtype: torch.dtype = torch.float64) -> Task:
    """Signed XOR (Mertens' notebook, seed 004): ``x ~ U(−1, 1)²`` ``[N, 2]``, label 1 if
    ``x_0 x_1 ≥ 0`` else 0; two classes, one-hot ``[N, 2]``.

    Inputs are *not* standardised, so the label rule holds on ``x`` exactly as returned. The
    ``n_train + n_test`` points are one seeded draw (training set first), the same draw as
    ``demos.reproduce_mertens.signed_xor(n_train + n_test, seed)``. The Mertens demo uses a
    single sigmoid output: its target is column 1 of ``y_*`` (``labels_*`` as floats).
    """
    _integer("n_train", n_train, 1)
    _integer("n_test", n_test, 1)
    _integer("seed", seed, 0)
    dtype = _dtype(dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, 2, generator=g, dtype=torch.float64) * 2 - 1
    labels = (x[:, 0] * x[:, 1] >= 0).to(torch.int64)
    return _task("signed_xor", x[:n_train], labels[:n_train], x[n_train:], labels[n_train:],
                 2, dtype)


# -- scikit-learn's 8 × 8 digits --------------------------------------------------------------

def _stratified_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A permutation of ``range(N)`` whose every prefix holds each class in proportion to its
    frequency (to within one example): rank ``r`` of ``n_c`` in a shuffled class ``c`` goes to
    position ``(r + ½) / n_c`` on a common [0, 1] axis; ties are broken at random."""
    n = len(labels)
    perm = torch.randperm(n, generator=generator)
    shuffled = labels[perm]
    order = torch.argsort(shuffled, stable=True)                # by class, random within class
    counts = torch.bincount(shuffled)
    starts = torch.cumsum(counts, 0) - counts
    sorted_labels = shuffled[order]
    rank = torch.arange(n) - starts[sorted_labels]
    key = (rank.to(torch.float64) + 0.5) / counts[sorted_labels].to(torch.float64)
    tie = torch.rand(n, generator=generator, dtype=torch.float64) * 1e-9
    return perm[order[torch.argsort(key + tie)]]


def digits(n_test: int = 360, seed: int = 0, stratify: bool = True,
           dtype: torch.dtype = torch.float64) -> Task:
    """scikit-learn's bundled 8 × 8 handwritten digits (``sklearn.datasets.load_digits``:
    1797 images, 64 pixels valued 0–16, 10 classes; shipped with scikit-learn, no download).

    ``n_test`` images (seeded; stratified by class when ``stratify``, so every class is in
    the test set in proportion to its frequency, to within one image) form the test set, the
    other ``1797 − n_test`` the training set, each in random order. Pixels are divided by 16
    and standardised per pixel with the training set's mean and standard deviation (pixels
    constant in the training set are only centred). Inputs ``[N, 64]``, targets ``[N, 10]``.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:                                   # pragma: no cover
        raise ImportError("digits() needs scikit-learn, which is not installed: "
                          "pip install 'scikit-learn>=1.0'") from error
    x_np, y_np = load_digits(return_X_y=True)
    total = len(y_np)
    _integer("n_test", n_test, 1)
    if n_test >= total:
        raise ValueError(f"n_test: received {n_test!r}, expected an integer in 1..{total - 1} "
                         f"(the digits data set has {total} images)")
    _integer("seed", seed, 0)
    if not isinstance(stratify, bool):
        raise ValueError(f"stratify: received {stratify!r}, expected True or False")
    dtype = _dtype(dtype)
    x = torch.as_tensor(x_np, dtype=torch.float64) / 16.0
    labels = torch.as_tensor(y_np, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    if stratify:
        order = _stratified_order(labels, g)
        test, train = order[:n_test], order[n_test:]
        test = test[torch.randperm(len(test), generator=g)]
        train = train[torch.randperm(len(train), generator=g)]
    else:
        order = torch.randperm(total, generator=g)
        test, train = order[:n_test], order[n_test:]
    x_train, x_test = _safe_standardise(x[train], x[test])
    return _task("digits", x_train, labels[train], x_test, labels[test], 10, dtype)


# -- MNIST-1D ---------------------------------------------------------------------------------

# The published split: ``mnist1d.data.get_dataset_args()`` draws ``num_samples = 5000`` signals
# and keeps the first ``train_split = 0.8`` of them for training.
MNIST1D_TRAIN, MNIST1D_TEST = 4000, 1000
MNIST1D_SEED = 42                                # ``get_dataset_args().seed``


def mnist1d_arrays(seed: int = MNIST1D_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]:
    """``(x, y, x_test, y_test)`` of ``mnist1d.data.make_dataset(args)``, ``args`` the package's
    defaults (``get_dataset_args()``) with ``args.seed = seed``: float64 ``[4000, 40]``, int64
    ``[4000]``, ``[1000, 40]``, ``[1000]``, exactly as the package returns them (read-only).

    Generated in memory by the package's own generator (about a second, so cached here per
    seed: the same arrays on every call; ``mnist1d_arrays.cache_clear()`` forgets them);
    nothing is downloaded and nothing unpickled (the package's ``get_dataset`` would do both).
    The generator seeds numpy's and Python's global random states: both are put back as they
    were.
    """
    return _mnist1d_arrays(_integer("seed", seed, 0))


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset as generate
    except ImportError as error:                                   # pragma: no cover
        raise ImportError("mnist1d() needs the mnist1d package (its published generator), "
                          "which is not installed: pip install mnist1d") from error
    args = get_dataset_args()
    args.seed = seed
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = generate(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    arrays = tuple(np.array(data[key]) for key in ("x", "y", "x_test", "y_test"))
    for array in arrays:
        array.setflags(write=False)
    return arrays  # type: ignore[return-value]


mnist1d_arrays.cache_clear = _mnist1d_arrays.cache_clear  # type: ignore[attr-defined]


def mnist1d(n_train: int | None = None, n_test: int | None = None, seed: int = MNIST1D_SEED,
            standardise: bool = True, dtype: torch.dtype = torch.float64) -> Task:
    """MNIST-1D (Greydanus 2020, "Scaling down deep learning", arXiv:2011.14439) as published:
    the ``mnist1d`` package's own generator, ``mnist1d.data.make_dataset`` with its default
    arguments (``get_dataset_args()``: 5000 signals of length 40, 10 classes, seed 42), and its
    own split, the first 4000 signals for training and the last 1000 for testing
    (:func:`mnist1d_arrays`; generated offline, cached in memory).

    ``seed`` is the arguments' ``seed`` (42: the published set). ``n_train`` / ``n_test``
    (None: all 4000 / 1000) keep the first examples of each set, in the package's order; the
    class counts are the package's (roughly, not exactly, 400 / 100 per class). The package
    already centres and scales the whole set (one mean, one std); with ``standardise`` (as
    :func:`digits` and the tasks of :mod:`workbench.tasks`, and as this function did before it
    used the package) the inputs are further standardised per feature with the kept training
    set's statistics; ``standardise=False`` returns the package's arrays unchanged. Inputs
    ``[N, 40]``, targets one-hot ``[N, 10]``.
    """
    if not isinstance(standardise, bool):
        raise ValueError(f"standardise: received {standardise!r}, expected True or False")
    n_train = _optional_count("n_train", n_train, MNIST1D_TRAIN, "MNIST-1D training")
    n_test = _optional_count("n_test", n_test, MNIST1D_TEST, "MNIST-1D test")
    _integer("seed", seed, 0)
    dtype = _dtype(dtype)
    x, y, x_test, y_test = mnist1d_arrays(seed)
    x_train = torch.tensor(x[:n_train], dtype=torch.float64)
    x_test_t = torch.tensor(x_test[:n_test], dtype=torch.float64)
    if standardise:
        x_train, x_test_t = standardise_features(x_train, x_test_t)
    return _task("mnist1d", x_train, torch.tensor(y[:n_train], dtype=torch.int64), x_test_t,
                 torch.tensor(y_test[:n_test], dtype=torch.int64), 10, dtype)


# -- IDX files (MNIST, Fashion-MNIST) ---------------------------------------------------------

# IDX type code → big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE
# FORMAT").
IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _path(name: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name}: received {value!r}, expected a path (str or os.PathLike)")
    return Path(value)


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzipped or not: detected from its first
    bytes), in native byte order.

    Format: magic number ``0x00 0x00 TT NN`` (``TT`` the type code: 0x08 unsigned byte, 0x09
    signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64; ``NN`` the number of
    dimensions), then ``NN`` big-endian uint32 sizes, then the data, big-endian, row-major.
    A file whose magic number or size disagrees with this raises ``ValueError``.
    """
    path = _path("path", path)
    if not path.is_file():
        raise DataFileError(f"path: received {str(path)!r}, expected an existing IDX file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"path: {str(path)!r} starts like a gzip file but could not be "
                             f"decompressed ({error})") from error
    if len(raw) < 4:
        raise ValueError(f"path: {str(path)!r} has {len(raw)} bytes, expected at least the "
                         "4-byte IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in IDX_TYPES or ndim == 0:
        raise ValueError(f"path: {str(path)!r} has magic number 0x{magic:08X}, expected an IDX "
                         "magic number 0x0000TTNN with type code TT in "
                         f"{{{', '.join(f'0x{c:02X}' for c in IDX_TYPES)}}} and NN ≥ 1 "
                         "dimensions (e.g. 0x00000803 for MNIST images, 0x00000801 for labels)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"path: {str(path)!r} has {len(raw)} bytes, expected a header of "
                         f"{header} bytes for {ndim} dimensions")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"path: {str(path)!r} holds {len(raw) - header} bytes of data, expected "
                         f"{expected} for shape {shape} of {dtype.name} (size mismatch)")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
IDX_KINDS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}   # torchvision's folder names


def _candidates(stem: str) -> list[str]:
    """Accepted spellings: ``train-images-idx3-ubyte`` and ``train-images.idx3-ubyte``, each
    plain or ``.gz``."""
    dotted = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", dotted, dotted + ".gz"]


def find_idx_files(folder: str | os.PathLike, kind: str = "mnist") -> dict[str, Path]:
    """The four standard IDX files of ``kind`` in ``folder`` (or in its ``raw/`` or torchvision's
    ``MNIST/raw/`` / ``FashionMNIST/raw/``), keyed as :data:`IDX_FILES`."""
    folder = _path("folder", folder)
    if kind not in IDX_KINDS:
        raise ValueError(f"kind: received {kind!r}, expected one of {sorted(IDX_KINDS)}")
    if not folder.is_dir():
        raise DataFileError(f"folder: received {str(folder)!r}, expected an existing directory "
                            f"holding the {kind} IDX files")
    places = [folder, folder / "raw", folder / IDX_KINDS[kind] / "raw"]
    found: dict[str, Path] = {}
    missing = []
    for key, stem in IDX_FILES.items():
        hit = next((p / c for p in places for c in _candidates(stem) if (p / c).is_file()), None)
        if hit is None:
            missing.append(f"{stem}[.gz]")
        else:
            found[key] = hit
    if missing:
        raise DataFileError(
            f"folder: {str(folder)!r} lacks {kind} file(s) {', '.join(missing)}; expected the "
            f"four files {', '.join(s + '[.gz]' for s in IDX_FILES.values())} (or '.idx' "
            f"spellings such as train-images.idx3-ubyte) in the folder, its raw/ or "
            f"{IDX_KINDS[kind]}/raw/")
    return found


def _optional_count(name: str, value: Any, available: int, what: str) -> int:
    if value is None:
        return available
    _integer(name, value, 1)
    if value > available:
        raise ValueError(f"{name}: received {value!r}, expected at most {available} (the "
                         f"{what} files hold {available} examples) or None for all")
    return value


def idx_dataset(folder: str | os.PathLike, kind: str = "mnist", n_train: int | None = None,
                n_test: int | None = None, standardise: bool = False,
                dtype: torch.dtype = torch.float64) -> Task:
    """MNIST or Fashion-MNIST (``kind`` = ``"mnist"`` | ``"fashion_mnist"``) from the user's
    IDX files in ``folder`` (see :func:`find_idx_files` for the names; nothing is downloaded).

    The first ``n_train`` training and ``n_test`` test examples (None: all) are kept, images
    flattened to ``H · W`` (784) inputs scaled to [0, 1] (``standardise``: then standardised per
    pixel with the training set's statistics, pixels constant in it only centred); targets
    one-hot ``[N, 10]``. Files whose shapes disagree raise ``ValueError``.
    """
    files = find_idx_files(folder, kind)
    if not isinstance(standardise, bool):
        raise ValueError(f"standardise: received {standardise!r}, expected True or False")
    dtype = _dtype(dtype)
    sets = {}
    for part, n in (("train", n_train), ("test", n_test)):
        images, labels = load_idx(files[f"{part}_images"]), load_idx(files[f"{part}_labels"])
        img_path, lab_path = files[f"{part}_images"], files[f"{part}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(f"{img_path}: holds {images.dtype} data of shape {images.shape}, "
                             "expected unsigned bytes of shape [N, H, W]")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise ValueError(f"{lab_path}: holds {labels.dtype} data of shape {labels.shape}, "
                             "expected unsigned bytes of shape [N]")
        if len(images) != len(labels):
            raise ValueError(f"{img_path} holds {len(images)} images but {lab_path} holds "
                             f"{len(labels)} labels, expected as many labels as images "
                             "(size mismatch)")
        if labels.size and labels.max() > 9:
            raise ValueError(f"{lab_path}: holds label {int(labels.max())}, expected labels "
                             "in 0..9")
        n = _optional_count(f"n_{part}", n, len(labels), f"{kind} {part}")
        x = torch.from_numpy(images[:n].reshape(n, -1).astype(np.float64)) / 255.0
        sets[part] = (x, torch.from_numpy(labels[:n].astype(np.int64)))
    (x_train, l_train), (x_test, l_test) = sets["train"], sets["test"]
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"{files['test_images']}: images have {x_test.shape[1]} pixels, "
                         f"expected {x_train.shape[1]} as in {files['train_images']}")
    if standardise:
        x_train, x_test = _safe_standardise(x_train, x_test)
    return _task(kind, x_train, l_train, x_test, l_test, 10, dtype)


def mnist(folder: str | os.PathLike, n_train: int | None = None, n_test: int | None = None,
          standardise: bool = False, dtype: torch.dtype = torch.float64) -> Task:
    """:func:`idx_dataset` with ``kind="mnist"``."""
    return idx_dataset(folder, "mnist", n_train, n_test, standardise, dtype)


def fashion_mnist(folder: str | os.PathLike, n_train: int | None = None,
                  n_test: int | None = None, standardise: bool = False,
                  dtype: torch.dtype = torch.float64) -> Task:
    """:func:`idx_dataset` with ``kind="fashion_mnist"``."""
    return idx_dataset(folder, "fashion_mnist", n_train, n_test, standardise, dtype)


# -- teacher regression (Podlaski & Machens 2020) ---------------------------------------------

def teacher_linear(n_train: int = 1000, n_test: int = 1000, noise: float = 0.0, seed: int = 0,
                   dtype: torch.dtype = torch.float64) -> Task:
    """Podlaski & Machens' linear teacher: :func:`workbench.tasks.teacher_regression` with
    ``widths = [30, 10]``, ``activation = "linear"``, ``teacher_scale = 1``."""
    return teacher_regression(n_train, n_test, widths=(30, 10), activation="linear",
                              teacher_scale=1.0, noise=noise, seed=seed, dtype=dtype)


def teacher_nonlinear(n_train: int = 1000, n_test: int = 1000, noise: float = 0.0,
                      seed: int = 0, dtype: torch.dtype = torch.float64) -> Task:
    """Podlaski & Machens' nonlinear teacher: :func:`workbench.tasks.teacher_regression`'s
    defaults (``widths = [30, 20, 10, 10]``, tanh, weights ``U(±1/√n_in)``)."""
    return teacher_regression(n_train, n_test, noise=noise, seed=seed, dtype=dtype)


DATASETS: dict[str, Callable[..., Task]] = {
    "signed_xor": signed_xor, "digits": digits, "mnist1d": mnist1d, "mnist": mnist,
    "fashion_mnist": fashion_mnist, "teacher_linear": teacher_linear,
    "teacher_nonlinear": teacher_nonlinear}


def make_dataset(name: str, **arguments: Any) -> Task:
    """The data set called ``name`` (a key of :data:`DATASETS`) built with ``arguments``."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name: received {name!r}, expected one of {sorted(DATASETS)}")
    return DATASETS[name](**arguments)


__all__ = ["DATASETS", "DataFileError", "IDX_FILES", "IDX_TYPES", "MNIST1D_SEED", "MNIST1D_TEST",
           "MNIST1D_TRAIN", "digits", "fashion_mnist", "find_idx_files", "idx_dataset",
           "load_idx", "make_dataset", "mnist", "mnist1d", "mnist1d_arrays", "signed_xor",
           "teacher_linear", "teacher_nonlinear"]
