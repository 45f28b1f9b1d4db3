"""The method table's config (:mod:`demos.train`): the task, the hidden widths, which methods
of :mod:`circuits.registry` run, each one's settings (:class:`MethodSpec`) and the training
schedule (:class:`Training`); and the task and network it describes."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from circuits import ArrivalGate, FeedbackLearning, ForwardNetwork, weight_flow
from circuits.losses import LOSSES
from circuits.registry import CIRCUIT_ARGS, METHODS, OWN_PLASTICITY
from workbench import datasets

from .config import (Config, Schema, Section, check_choice, check_int, check_keywords,
                     check_number, dataclass_config, load_config, read_yaml)

TASKS = {"digits": datasets.digits, "mnist1d": datasets.mnist1d}


@dataclass(frozen=True)
class Training:
    """epochs: passes over the training set.  batch: B examples per presentation (each epoch's
    remainder dropped: B is part of the state's shape).  seeds: replicas S (network seeds
    0..S-1).  order_seed: the minibatch order.  checkpoint_every: examples between
    checkpoints (rounded down to whole minibatches, at least one).  loss: what every method
    learns, ``squared_error`` or ``cross_entropy`` (:mod:`circuits.losses`: each family's
    target becomes the loss's gradient target; ``local_decoders`` keeps its own losses)."""

    epochs: int = 5
    batch: int = 32
    seeds: int = 3
    order_seed: int = 0
    checkpoint_every: int = 1024
    loss: str = "squared_error"

    def __post_init__(self):
        for name in ("epochs", "batch", "seeds", "checkpoint_every"):
            check_int(f"training.{name}", getattr(self, name), 1)
        check_int("training.order_seed", self.order_seed, 0)
        check_choice("training.loss", self.loss, LOSSES)


@dataclass(frozen=True)
class MethodSpec:
    """How one method is integrated.

    eta: learning rate η per unit time.  period: time each minibatch is shown.  dt: the
    step.  integrator: a fixed-step method of :func:`solvers.solve` (``euler``, ``rk4`` ...).
    gate: ``settled`` or ``always`` (:class:`circuits.Plastic`; ignored by ``pc`` and
    ``local_decoders``, which gate themselves).  theta: the settle gate's rate threshold.
    teacher_from: when in each period the teacher appears (``pc``: the free phase before it).
    output_activation: of the network (``pc`` needs ``linear``, ``local_decoders`` with
    ``bce`` ``sigmoid``).  form: the target methods' weight change (``dtp1``, ``dtp``,
    ``local_loss``).  target_leak: λ, the target methods' hidden targets leak towards the
    forward pass at this rate (``anchor`` of :class:`circuits.TargetPropagation`).
    relinearise_every: presentations between Jacobians of ``exp_partitioned``.  circuit:
    keyword arguments of the method's circuit (e.g. DI's ``alpha``, ``k_i``).  gate_args:
    :class:`circuits.ArrivalGate`'s (``pc``).  feedback: ``iterated_dtp``'s decoder learning
    (:class:`circuits.FeedbackLearning`).  flow: how the weights move
    (:mod:`circuits.weight_flow`): null (gradient flow: Euler is SGD), ``adam`` or
    ``{adam: {tau_m: ..., tau_v: ..., eps: ...}}`` (Adam as an ODE on plastic time; not for
    ``pc``, ``z_il``, ``local_decoders``).  reset: ``none`` (a new minibatch meets the credit
    populations where the last one left them) or ``rest`` (every minibatch settles from the
    circuit's initial state, e.g. DFC's feed-forward pass with the controller at zero, as its
    authors simulate each sample; :class:`circuits.Plastic`'s ``reset``)."""

    eta: float = 0.1
    period: float = 1.0
    dt: float = 1.0
    integrator: str = "euler"
    gate: str = "always"
    theta: float = 0.05
    teacher_from: float = 0.0
    output_activation: str = "linear"
    form: str = "dtp1"
    target_leak: float = 0.0
    relinearise_every: int = 1
    circuit: dict = field(default_factory=dict)
    gate_args: dict = field(default_factory=dict)
    feedback: dict = field(default_factory=dict)
    flow: Any = None
    reset: str = "none"

    def check(self, method: str) -> None:
        where = f"method.{method}"
        for name in ("eta", "period", "dt", "theta", "teacher_from", "target_leak"):
            check_number(f"{where}.{name}", getattr(self, name),
                         positive=name not in ("teacher_from", "target_leak"))
        check_int(f"{where}.relinearise_every", self.relinearise_every, 1)
        steps = self.period / self.dt
        if abs(steps - round(steps)) > 1e-9 * steps:
            raise ValueError(f"{where}.dt: received {self.dt!r}, expected a divisor of period = "
                             f"{self.period!r} (whole steps per minibatch, so no step straddles "
                             "a switch of minibatch)")
        if self.teacher_from >= self.period:
            raise ValueError(f"{where}.teacher_from: received {self.teacher_from!r}, expected a "
                             f"number in [0, period = {self.period!r})")
        check_choice(f"{where}.gate", self.gate, ("settled", "always"))
        check_choice(f"{where}.reset", self.reset, ("none", "rest"))
        if self.reset != "none" and method in OWN_PLASTICITY:
            raise ValueError(f"{where}.reset: received {self.reset!r}, expected 'none' ({method} "
                             "sets its own reset under circuit:)")
        if self.flow is not None:
            if method in OWN_PLASTICITY:
                raise ValueError(f"{where}.flow: received {self.flow!r}, expected null ({method} "
                                 "owns its plasticity: gradient flow only)")
            try:
                weight_flow(self.flow)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{where}.{error}") from None
        check_choice(f"{where}.form", self.form, ("dtp1", "dtp", "local_loss"))
        from solvers.methods import METHODS as STEPPERS
        from solvers import TRAINING_METHODS
        if self.integrator not in (*STEPPERS, *TRAINING_METHODS):
            raise ValueError(f"{where}.integrator: received {self.integrator!r}, expected a "
                             f"fixed-step method, one of "
                             f"{sorted(STEPPERS) + list(TRAINING_METHODS)}")
        for name, (owner, target, exclude) in {
                "circuit": (method, *CIRCUIT_ARGS[method]), "gate_args": ("pc", ArrivalGate, ()),
                "feedback": ("iterated_dtp", FeedbackLearning, ())}.items():
            given = getattr(self, name)
            if not isinstance(given, Mapping):
                raise ValueError(f"{where}.{name}: received {given!r}, expected a mapping of "
                                 "keyword arguments")
            if given and method != owner:
                raise ValueError(f"{where}.{name}: received {dict(given)!r}, expected none "
                                 f"(only {owner} takes {name}: {target.__qualname__}'s "
                                 "keyword arguments)")
            check_keywords(f"{where}.{name}", given, target, exclude)


SCHEMA = Schema(sections={
    "digits": Section(datasets.digits, exclude=("dtype",)),
    "mnist1d": Section(datasets.mnist1d, exclude=("dtype",)),
    "network": Section(ForwardNetwork, exclude=("widths", "weights", "biases", "replicas",
                                                 "seed", "output_activation")),
    "training": Section(Training),
}, demo={"task": "digits", "table": None, "hidden": [32], "methods": list(METHODS), "method": {},
         "threads": 1})


ROOT = Path(__file__).resolve().parents[1]
TASK_CONFIGS = {"digits": ROOT / "configs" / "digits.yaml",
                "mnist1d": ROOT / "configs" / "mnist1d.yaml"}


def load(config: str | Path | Mapping[str, Any] | None) -> Config:
    """A validated config: ``config`` (a YAML path, a mapping or None) merged over its task's
    shipped config (:data:`TASK_CONFIGS`: ``configs/digits.yaml`` unless ``task:`` says
    otherwise), the rule every demo follows. Sections (``digits``, ``network``, ``training``
    ...) merge key by key; under ``method:`` a method given replaces that method's settings
    whole (its period, dt and integrator are chosen together) and the others keep the task's;
    ``hidden`` and ``methods`` are replaced. Unknown keys are errors."""
    if config is None:
        given: Any = {}
    elif isinstance(config, (str, Path)):
        given = read_yaml(config)
    else:
        given = config
    if not isinstance(given, Mapping):
        raise ValueError(f"config: received {type(given).__name__}, expected a mapping of "
                         f"sections; valid top-level keys: {SCHEMA.valid_top_level()}")
    task = given.get("task", SCHEMA.demo["task"])
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"config key 'task': received {task!r}, expected one of "
                         f"{list(TASKS)}")
    cfg = load_config(dict(given), SCHEMA, defaults=read_yaml(TASK_CONFIGS[task]))
    for section in ("network", "training"):
        cfg.setdefault(section, {})
    hidden, methods, specs = cfg["hidden"], cfg["methods"], cfg["method"]
    if not isinstance(hidden, list) or not hidden or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in hidden):
        raise ValueError(f"config key 'hidden': received {hidden!r}, expected a non-empty list "
                         "of positive hidden widths, e.g. [32]")
    if not isinstance(methods, list) or not methods or any(m not in METHODS for m in methods) \
            or len(set(methods)) != len(methods):
        raise ValueError(f"config key 'methods': received {methods!r}, expected a non-empty "
                         f"list of distinct names drawn from {list(METHODS)}")
    if not isinstance(specs, Mapping):
        raise ValueError(f"config key 'method': received {specs!r}, expected a mapping from "
                         "method names to their settings")
    unknown = sorted(set(specs) - set(METHODS))
    if unknown:
        raise ValueError(f"config key 'method': unknown methods {unknown}; valid methods: "
                         f"{list(METHODS)}")
    for m in methods:
        spec(cfg, m)
    Training(**cfg["training"])
    check_int("config key 'threads'", cfg["threads"], 1)
    name = cfg.get("table")
    if name is not None and not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_-]+", name)):
        raise ValueError(f"config key 'table': received {name!r}, expected null (the task's "
                         "name) or a name of letters, digits, '_' and '-' (it names the "
                         "table's rows and its folder in demos.method_table)")
    return cfg


def table_name(cfg: Config) -> str:
    """The name of a config's table: its ``table`` key, else its task (rows of the combined
    method table and its folder in :mod:`demos.method_table`)."""
    return cfg.get("table") or cfg["task"]


def spec(cfg: Config, method: str) -> MethodSpec:
    """The method's settings (``method.<name>`` in the config over the defaults), checked."""
    try:
        s = dataclass_config(MethodSpec, cfg["method"].get(method))
    except (TypeError, ValueError) as err:       # not a mapping, or unknown keys
        raise ValueError(f"method.{method}: {str(err).removeprefix('config: ')}") from None
    s.check(method)
    return s


def load_task(cfg: Config):
    """The configured task (:data:`TASKS`) in the network's dtype."""
    dtype = cfg["network"].get("dtype", torch.float64)
    return TASKS[cfg["task"]](**cfg.get(cfg["task"], {}), dtype=dtype)


def network(cfg: Config, task, output_activation: str) -> ForwardNetwork:
    """The task's network, one replica per seed (``training.seeds``)."""
    widths = [task.inputs, *cfg["hidden"], task.classes]
    return ForwardNetwork(widths, seed=list(range(Training(**cfg["training"]).seeds)),
                          output_activation=output_activation, **cfg["network"])
