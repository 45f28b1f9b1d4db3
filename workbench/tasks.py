"""Small deterministic tasks (no downloads): the :class:`Task` type every data set here returns.

Each task draws ``n_train + n_test`` labelled points in the plane from one seeded generator,
splits them into a training and a test set, standardises the inputs with the training set's
per-feature mean and standard deviation (the test set uses the same shift and scale), and
returns a :class:`Task` with one-hot float targets.

* :func:`gaussian_mixture` — ``K · m`` Gaussian clusters on a circle, cluster ``j`` labelled
  ``j mod K``: with ``m ≥ 2`` clusters per class, a class's clusters sit on opposite sides of
  the circle, so the task is not linearly separable (m = 2, K = 2 is the XOR layout).
* :func:`spiral` — ``K`` interleaved arms ``r (cos θ, sin θ)``, ``θ = 2π(turns · r + k/K)``.
* :func:`teacher_regression` — regression onto a seeded teacher network (labels None).

``make_task(name, **arguments)`` picks one by name (:data:`TASKS`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Task:
    """A classification task with a train/test split.

    x_train ``[N, d]``, y_train ``[N, K]`` (one-hot, the inputs' dtype), labels_train ``[N]``
    (int64, in ``0..K-1``); likewise for the test set ``[M, ...]``. Inputs are standardised
    with the training set's statistics.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    labels_train: torch.Tensor | None
    labels_test: torch.Tensor | None

    @property
    def classification(self) -> bool:
        """Whether targets are one-hot classes (False: a regression task, labels None)."""
        return self.labels_test is not None

    @property
    def inputs(self) -> int:
        """d, the input dimension."""
        return self.x_train.shape[1]

    @property
    def classes(self) -> int:
        """K, the number of classes."""
        return self.y_train.shape[1]

    @property
    def chance(self) -> float:
        """Test accuracy of always answering the most frequent test label."""
        if not self.classification:
            raise ValueError(f"task {self.name!r} is a regression task: it has no chance "
                             "accuracy")
        counts = torch.bincount(self.labels_test, minlength=self.classes)
        return float(counts.max()) / len(self.labels_test)

    def minibatch_order(self, batch: int, epochs: int, seed: int) -> torch.Tensor:
        """``[P, B]`` training-set indices of each presentation (:func:`solvers.minibatch_order`:
        each shuffled epoch's last ``N mod B`` examples dropped); ``batch`` at most N."""
        from solvers import minibatch_order
        n = self.x_train.shape[0]
        if batch > n:
            raise ValueError(f"training.batch: received {batch}, expected at most the {n} "
                             "training examples")
        return minibatch_order(n, batch, epochs, seed)

    def minibatch(self, order: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Presentation k's inputs and targets under ``order``."""
        return self.x_train[order[k]], self.y_train[order[k]]

    def accuracy(self, outputs: torch.Tensor) -> torch.Tensor:
        """Test accuracy of ``outputs [..., M, K]`` (argmax against the test labels), float64
        ``[...]``: per replica for ``[S, M, K]``."""
        hits = outputs.argmax(-1) == self.labels_test.to(outputs.device)
        return hits.to(torch.float64).mean(-1)


# -- argument checks --------------------------------------------------------------------------

def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: received {value!r}, expected an integer ≥ {minimum}")
    return value


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: received {value!r}, expected a finite number {bound}")
    return float(value)


def _dtype(value: Any) -> torch.dtype:
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype: received {value!r}, expected a floating torch dtype such as "
                         "torch.float64")
    return value


# -- the tasks --------------------------------------------------------------------------------

def balanced_labels(n: int, classes: int, generator: torch.Generator) -> torch.Tensor:
    """``[n]`` labels in ``0..K-1``, each class ``⌊n/K⌋`` or ``⌈n/K⌉`` times, in random order."""
    return (torch.arange(n) % classes)[torch.randperm(n, generator=generator)]


def one_hot(labels: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``[N]`` labels → ``[N, K]`` float targets."""
    return torch.nn.functional.one_hot(labels, classes).to(dtype)


def standardise(x_train: torch.Tensor, x_test: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift and scale both sets by the training set's per-feature mean and std ``[d]``."""
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(torch.finfo(x_train.dtype).tiny)
    return (x_train - mean) / std, (x_test - mean) / std


def split(name: str, x: torch.Tensor, labels: torch.Tensor, n_train: int, classes: int,
          dtype: torch.dtype) -> Task:
    """The first ``n_train`` points train, the rest test; standardised, one-hot targets."""
    x = x.to(dtype)
    x_train, x_test = standardise(x[:n_train], x[n_train:])
    l_train, l_test = labels[:n_train], labels[n_train:]
    return Task(name, x_train, one_hot(l_train, classes, dtype), x_test,
                one_hot(l_test, classes, dtype), l_train, l_test)


def gaussian_mixture(n_train: int = 512, n_test: int = 1024, classes: int = 3,
                     clusters_per_class: int = 2, radius: float = 2.0, std: float = 0.5,
                     seed: int = 0, dtype: torch.dtype = torch.float64) -> Task:
    """Clusters ``N(c_j, std² I)`` with centres ``c_j = radius (cos 2πj/J, sin 2πj/J)``,
    ``J = classes · clusters_per_class``; cluster j has label ``j mod classes``.

    Inputs ``[N, 2]``; each class is equally likely to come from each of its clusters."""
    _integer("n_train", n_train, 1)
    _integer("n_test", n_test, 1)
    _integer("classes", classes, 2)
    _integer("clusters_per_class", clusters_per_class, 1)
    _positive("radius", radius)
    _positive("std", std)
    _integer("seed", seed, 0)
    dtype = _dtype(dtype)
    n = n_train + n_test
    g = torch.Generator().manual_seed(seed)
    labels = balanced_labels(n, classes, g)
    cluster = labels + classes * torch.randint(0, clusters_per_class, (n,), generator=g)
    angle = 2 * math.pi * cluster.to(torch.float64) / (classes * clusters_per_class)
    centres = radius * torch.stack([angle.cos(), angle.sin()], 1)
    x = centres + std * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return split("gaussian_mixture", x, labels, n_train, classes, dtype)


def spiral(n_train: int = 512, n_test: int = 1024, classes: int = 3, turns: float = 0.75,
           noise: float = 0.05, seed: int = 0, dtype: torch.dtype = torch.float64) -> Task:
    """``classes`` interleaved spiral arms: radius ``r ~ U(0, 1)``, angle
    ``2π(turns · r + k/K)`` for class k, plus ``N(0, noise² I)``. Inputs ``[N, 2]``."""
    _integer("n_train", n_train, 1)
    _integer("n_test", n_test, 1)
    _integer("classes", classes, 2)
    _positive("turns", turns)
    _positive("noise", noise, allow_zero=True)
    _integer("seed", seed, 0)
    dtype = _dtype(dtype)
    n = n_train + n_test
    g = torch.Generator().manual_seed(seed)
    labels = balanced_labels(n, classes, g)
    r = torch.rand(n, generator=g, dtype=torch.float64)
    angle = 2 * math.pi * (turns * r + labels.to(torch.float64) / classes)
    x = r[:, None] * torch.stack([angle.cos(), angle.sin()], 1)
    x = x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return split("spiral", x, labels, n_train, classes, dtype)


def teacher_regression(n_train: int = 1000, n_test: int = 1000,
                       widths: tuple[int, ...] | list[int] = (30, 20, 10, 10),
                       activation: str = "tanh", teacher_scale: float | None = None,
                       noise: float = 0.0, seed: int = 0,
                       dtype: torch.dtype = torch.float64) -> Task:
    """Regression onto a teacher network (Podlaski & Machens 2020's setting, SPEC §1):
    ``x ~ N(0, I)``, ``y = teacher(x) + N(0, noise²)`` with a :class:`circuits.ForwardNetwork`
    teacher of ``widths`` (linear output, biases zero) whose weights are ``U(−s, s)``,
    ``s = teacher_scale`` (default ``1/√n_in``; the paper's linear teacher is ``widths = [30,
    10]``, ``activation = "linear"``, ``teacher_scale = 1``). Inputs are not standardised
    (they already are); labels are None."""
    from circuits import ForwardNetwork
    _integer("n_train", n_train, 1)
    _integer("n_test", n_test, 1)
    _positive("noise", noise, allow_zero=True)
    _integer("seed", seed, 0)
    dtype = _dtype(dtype)
    teacher = ForwardNetwork(list(widths), activation, scale=teacher_scale, seed=seed + 1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, teacher.widths[0], generator=g, dtype=torch.float64)
    y = teacher.forward(x).r[-1][0]
    y = (y + noise * torch.randn(y.shape, generator=g, dtype=torch.float64)).to(dtype)
    x = x.to(dtype)
    return Task("teacher_regression", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                None, None)


TASKS: dict[str, Callable[..., Task]] = {"gaussian_mixture": gaussian_mixture, "spiral": spiral,
                                         "teacher_regression": teacher_regression}


def make_task(name: str, **arguments: Any) -> Task:
    """The task called ``name`` (a key of :data:`TASKS`) built with ``arguments``."""
    if name not in TASKS:
        raise ValueError(f"name: received {name!r}, expected one of {sorted(TASKS)}")
    return TASKS[name](**arguments)


__all__ = ["Task", "TASKS", "make_task", "gaussian_mixture", "spiral", "teacher_regression", "balanced_labels",
           "one_hot", "standardise", "split"]
