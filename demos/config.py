"""YAML configs whose sections map one-to-one onto constructor (or function) arguments.

A demo declares a :class:`Schema`: which top-level *sections* it accepts, each bound to the
callable its keys are passed to (``network`` → :class:`circuits.ForwardNetwork`, ``solver`` →
:func:`solvers.solve`, ...), plus a few *demo-level* keys (``seed``, ...) with their defaults.
Section keys are checked against the callable's signature (:func:`inspect.signature`), so the
valid keys are always the real arguments; unknown sections and keys are errors that name what
was received and list what is valid. Arguments the demo supplies itself (the network object,
the input ``x``, the state ``y0`` ...) are excluded from a section's valid keys.

Typical use::

    schema = Schema(sections={"network": Section(ForwardNetwork)}, demo={"seed": 0})
    config = load_config("configs/settle.yaml", schema, defaults=load_config(default_path, schema))
    net = ForwardNetwork(**config["network"])
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import yaml

Config = dict[str, Any]


@dataclass(frozen=True)
class Section:
    """A config section: its keys are keyword arguments of ``target``.

    ``exclude`` names the parameters the demo passes itself (not configurable).
    """

    target: Callable[..., Any]
    exclude: tuple[str, ...] = ()

    def parameters(self) -> dict[str, inspect.Parameter]:
        params = inspect.signature(self.target).parameters
        return {name: p for name, p in params.items()
                if name not in self.exclude and name != "self"
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL,
                                   inspect.Parameter.VAR_KEYWORD)}

    def valid_keys(self) -> list[str]:
        return list(self.parameters())

    @property
    def target_name(self) -> str:
        module = getattr(self.target, "__module__", "")
        name = getattr(self.target, "__qualname__", repr(self.target))
        return f"{module}.{name}" if module else name


@dataclass(frozen=True)
class Schema:
    """What a demo's config may contain: sections (→ callables) and demo-level keys."""

    sections: Mapping[str, Section]
    demo: Mapping[str, Any] = field(default_factory=dict)

    def valid_top_level(self) -> list[str]:
        return list(self.sections) + list(self.demo)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping that gives the same key twice (YAML says keys are unique; PyYAML would
    silently keep the last)."""

    def __init__(self, key: Any, first: Any, again: Any):
        self.key, self.first, self.again = key, first, again
        super().__init__(None, None, f"found duplicate key {key!r}", again)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-12`` as a float (YAML 1.1 wants ``1.0e-12``), so a
    tolerance written the usual way does not silently become a string, and refuses a mapping
    that gives a key twice (:class:`DuplicateKeyError`; ``<<`` merge keys may still be
    overridden)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise DuplicateKeyError(key, seen[key], key_node.start_mark)
                except TypeError:            # unhashable: SafeLoader names it below
                    continue
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_yaml(path: str | Path) -> Config:
    """The mapping in a YAML file (an empty file is an empty config)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"config: received {str(path)!r}, which is not a file (resolved: {path.resolve()}); "
            "expected the path of a YAML config, e.g. configs/settle.yaml")
    with path.open(encoding="utf-8") as fh:
        try:
            data = yaml.load(fh, Loader=_Loader)
        except DuplicateKeyError as err:
            raise ValueError(
                f"config {str(path)!r}: duplicate key {err.key!r} (line {err.first.line + 1} "
                f"and again line {err.again.line + 1}); expected each key once in a mapping "
                "(YAML keys are unique; remove or merge one of them)") from None
        except yaml.YAMLError as err:
            raise ValueError(f"config {str(path)!r}: not valid YAML ({err})") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"config {str(path)!r}: not a UTF-8 text file ({err.reason} at "
                             f"byte {err.start}); expected a YAML config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config {str(path)!r}: received a YAML {type(data).__name__}, "
                         "expected a mapping of sections (network:, solver:, ...)")
    return data


def _coerce(section: str, key: str, value: Any, param: inspect.Parameter) -> Any:
    """YAML has no torch dtypes: ``dtype: float64`` becomes ``torch.float64``."""
    if isinstance(param.default, torch.dtype) or key == "dtype":
        if isinstance(value, torch.dtype):
            return value
        dtype = getattr(torch, value, None) if isinstance(value, str) else None
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"config section {section!r}, key {key!r}: received {value!r}, "
                             "expected a torch dtype name such as float64 or float32")
        return dtype
    return value


def validate(config: Mapping[str, Any], schema: Schema) -> Config:
    """Check ``config`` against ``schema`` and return a copy with values coerced.

    Raises ``ValueError`` naming the offending section / key and listing the valid ones.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config: received {type(config).__name__}, expected a mapping of "
                         f"sections; valid top-level keys: {schema.valid_top_level()}")
    out: Config = {}
    for name, value in config.items():
        if name in schema.sections:
            section = schema.sections[name]
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ValueError(f"config section {name!r}: received {type(value).__name__} "
                                 f"{value!r}, expected a mapping of keyword arguments of "
                                 f"{section.target_name}; valid keys: {section.valid_keys()}")
            params = section.parameters()
            checked = {}
            for key, v in value.items():
                if key not in params:
                    raise ValueError(
                        f"config section {name!r}: unknown key {key!r} (the keys are keyword "
                        f"arguments of {section.target_name}); valid keys: "
                        f"{section.valid_keys()}")
                checked[key] = _coerce(name, key, v, params[key])
            out[name] = checked
        elif name in schema.demo:
            out[name] = copy.deepcopy(value)
        else:
            raise ValueError(f"config: unknown section {name!r}; valid sections: "
                             f"{list(schema.sections)}, valid demo-level keys: "
                             f"{list(schema.demo)}")
    return out


def merge(defaults: Mapping[str, Any], override: Mapping[str, Any] | None) -> Config:
    """``override`` over ``defaults``: sections merge key by key, other values are replaced."""
    out = copy.deepcopy(dict(defaults))
    for name, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(name), Mapping):
            out[name] = {**out[name], **copy.deepcopy(dict(value))}
        else:
            out[name] = copy.deepcopy(value)
    return out


def load_config(source: str | Path | Mapping[str, Any] | None, schema: Schema,
                defaults: Mapping[str, Any] | None = None) -> Config:
    """A validated config: ``source`` (a YAML path, a mapping, or None) merged over
    ``defaults`` (already validated, or validated here) and the schema's demo-level defaults."""
    if source is None:
        given: Config = {}
    elif isinstance(source, Mapping):
        given = dict(source)
    else:
        given = read_yaml(source)
    base = merge(dict(schema.demo), validate(defaults or {}, schema))
    return merge(base, validate(given, schema))


__all__ = ["Config", "Section", "Schema", "read_yaml", "validate", "merge", "load_config",
           "dataclass_config", "run_cli", "jsonable", "intra_op_threads"]


def dataclass_config(cls: type, config: Any, tuples: tuple[str, ...] = ()) -> Any:
    """``config`` as an instance of the dataclass ``cls``: None gives the defaults, an instance
    is returned as it is, a mapping overrides the defaults (fields named in ``tuples`` are
    turned into tuples, as YAML and JSON give lists). Unknown keys are errors listing the
    valid ones; the dataclass checks its own values."""
    if config is None:
        return cls()
    if isinstance(config, cls):
        return config
    if not isinstance(config, Mapping):
        raise TypeError(f"config: received {type(config).__name__}, expected None, a "
                        f"{cls.__name__} or a mapping of its fields")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"config: unknown keys {unknown}, expected names from {sorted(known)}")
    bad = [k for k in tuples if k in config and not isinstance(config[k], (list, tuple, range))]
    if bad:
        raise ValueError(f"config key {bad[0]!r}: received {config[bad[0]]!r}, expected a list")
    return cls(**{k: tuple(v) if k in tuples else v for k, v in config.items()})


def run_cli(parser: Any, argv: list[str] | None, make_config: Callable[[Any], Any],
            run: Callable[[Any, str], Mapping[str, Any]],
            report: Callable[[Mapping[str, Any]], str]) -> Any:
    """The tail every reproduction's ``main`` shares: parse ``argv``, build the config from the
    arguments (a ``ValueError``, ``TypeError`` or unreadable file becomes a usage error naming
    it), check ``--out`` (:func:`output_dir`) before any work, run into ``args.out`` (a bad
    value found only when the circuits are built is a usage error too), print the report and
    where the files went; returns the summary."""
    args = parser.parse_args(argv)
    try:
        cfg = make_config(args)
        output_dir(args.out, "--out")
    except (OSError, ValueError, TypeError) as err:
        parser.error(str(err))
    try:
        summary = run(cfg, args.out)
    except (ValueError, TypeError) as err:     # bad input found once the circuits are built
        parser.error(str(err))
    print(report(summary))
    print(f"figures and summary.json in {args.out}")
    return summary


def jsonable(value: Any) -> Any:
    """``value`` with mappings, sequences, dtypes and non-finite floats made JSON-safe."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return repr(value)


@contextmanager
def intra_op_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` inside the block, restored after.

    The demos' tensors are tiny, so threads only add synchronisation; on a loaded 2-core
    machine 16 presentations of ``train_pc`` took 117 s with 2 threads and 5.6 s with 1, and
    ``reproduce_song2020`` 240 s against 10 s."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- checks and resumption shared by the demos ------------------------------------------------

def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) ≥ ``minimum``, else a ``ValueError`` naming
    ``name``, what was received and what was expected."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: received {value!r}, expected an integer ≥ {minimum}")
    return value


def check_number(name: str, value: Any, *, positive: bool) -> float:
    """``value`` if it is a finite number ``> 0`` (``positive``) or ``≥ 0``, else a
    ``ValueError`` naming ``name``, what was received and what was expected."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}: received {value!r}, expected a finite number "
                         f"{'> 0' if positive else '≥ 0'}")
    return value


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Keys (``section.key``, or top-level) whose values differ between two JSON-able
    configs."""
    out = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += [f"{name}.{k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        elif x != y:
            out.append(name)
    return out


def resume_checkpoint(path: str | Path, config: Mapping[str, Any],
                      required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The checkpoint at ``path`` (:func:`solvers.checkpoint.load`, holding ``required`` and
    ``config``), checked to have been written with ``config`` (compared as JSON): ``--resume``
    with another config is an error listing the keys that differ."""
    from solvers import checkpoint
    payload = checkpoint.load(path, required=("config", *required))
    if not isinstance(payload["config"], Mapping):
        raise checkpoint.CheckpointError(
            f"--resume: the checkpoint {str(path)!r} holds a config of type "
            f"{type(payload['config']).__name__}, expected a mapping; run without --resume to "
            "start afresh")
    differ = config_differences(payload["config"], jsonable(config))
    if differ:
        raise checkpoint.CheckpointError(
            f"--resume: the checkpoint {str(path)!r} was written with a different config "
            f"(differing keys: {differ}); expected the same config, or run without --resume to "
            "start afresh")
    return payload


def no_checkpoint(where: str | Path, expected: str) -> Exception:
    """The error of ``--resume`` when ``where`` holds no checkpoint (``expected``: which file(s)
    an earlier run would have written there): a :class:`solvers.checkpoint.CheckpointError`
    naming the place. Every demo with ``--resume`` raises it before any work."""
    from solvers.checkpoint import CheckpointError
    return CheckpointError(f"--resume: no checkpoint in {str(where)!r} (expected {expected}, "
                           "written by an earlier run with the same --out); nothing to resume: "
                           "check --out, or run without --resume to start afresh")


def output_dir(path: str | Path, name: str = "out") -> Path:
    """``path`` as a directory that exists and can be written to (created with its parents if
    missing; a file is created and removed in it to be sure), checked before any work. Else a
    ``ValueError`` naming ``name`` (``--out`` on a command line), what was received and why
    it cannot be used."""
    if isinstance(path, bool) or not isinstance(path, (str, Path)) or str(path) == "":
        raise ValueError(f"{name}: received {path!r}, expected the path of an output folder")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: received {str(path)!r}, which is an existing file, not a "
                         "folder; expected an output folder (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{name}: received {str(path)!r}, which cannot be created "
                         f"({err.strerror or err}); expected a writable output folder "
                         "(is a parent a file, or read-only?)") from None
    probe = path / f".write_test_{os.getpid()}"
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{name}: received {str(path)!r}, which cannot be written to "
                         f"({err.strerror or err}); expected a writable output folder") \
            from None
    return path


def check_widths(name: str, widths: Any, inputs: int, outputs: int) -> None:
    """A network's ``widths`` (a list, as a config gives it) must start with the task's
    ``inputs`` and end with its ``outputs``; anything else is left to the network to check."""
    if isinstance(widths, (list, tuple)) and widths and \
            (widths[0] != inputs or widths[-1] != outputs):
        raise ValueError(f"{name}: received {list(widths)}, expected first width {inputs} (the "
                         f"task's inputs) and last width {outputs} (its classes), e.g. "
                         f"[{inputs}, 16, 16, {outputs}]")


def phase_from_config(name: str, args: Mapping[str, Any], *, teacher: bool,
                      default_steps: int | None = None) -> Any:
    """The :class:`solvers.Phase` ``name`` from its config section ``args`` (``Phase``'s
    arguments but name, teacher and save_every). ``duration: null`` is ``default_steps`` steps
    of ``dt`` where given; a method that is not one of :mod:`solvers.methods` is an error
    naming the section (``{name}.method: received ..., expected one of ...``)."""
    from solvers import ADAPTIVE, Phase, get_method
    args = dict(args)
    if args.get("duration") is None and default_steps is not None \
            and isinstance(args.get("dt"), (int, float)):
        args["duration"] = default_steps * args["dt"]
    phase = Phase(name, teacher=teacher, **args)
    if phase.method not in ADAPTIVE:
        try:
            get_method(phase.method)
        except ValueError as err:
            raise ValueError(f"{name}.{err}") from None
    return phase


__all__ += ["check_int", "check_number", "config_differences", "resume_checkpoint",
            "no_checkpoint", "output_dir", "DuplicateKeyError", "check_widths",
            "phase_from_config"]


def check_keywords(name: str, given: Mapping[str, Any], target: Callable[..., Any],
                   exclude: tuple[str, ...] = ()) -> None:
    """``given``'s keys must be keyword arguments of ``target`` (but ``exclude``, which the
    demo passes itself), else a ``ValueError`` naming ``name``, the unknown keys and the valid
    ones."""
    valid = Section(target, exclude).valid_keys()
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"{name}: unknown keys {unknown} (keyword arguments of "
                         f"{getattr(target, '__qualname__', target)}); valid keys: {valid}")


__all__ += ["check_keywords"]


def check_numbers(name: str, values: Any, *, positive: bool = True, at_least: int = 1
                  ) -> tuple[float, ...]:
    """``values`` as a tuple if it is a sequence of at least ``at_least`` finite numbers ``> 0``
    (``positive``) or ``≥ 0``, else a ``ValueError`` naming ``name``, what was received and
    what was expected."""
    bound = "> 0" if positive else "≥ 0"
    ok = isinstance(values, (list, tuple)) and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        and (v > 0 if positive else v >= 0) for v in values)
    if not ok or not values:
        shown = list(values) if isinstance(values, (list, tuple)) else values
        raise ValueError(f"{name}: received {shown!r}, expected finite numbers {bound}")
    if len(values) < at_least:
        raise ValueError(f"{name}: received {list(values)!r}, expected at least {at_least} "
                         f"finite numbers {bound}")
    return tuple(values)


def check_layer_widths(name: str, widths: Any, *, layers: int = 1, square: bool = False
                       ) -> tuple[int, ...]:
    """``widths`` ``[n_0, ..., n_L]`` as a tuple if it holds positive integers with ``L ≥
    layers`` (and, ``square``, equal ``n_1 = ... = n_L``: square layers, which have exact
    inverses), else a ``ValueError`` naming ``name``, what was received and what was
    expected."""
    shown = list(widths) if isinstance(widths, (list, tuple)) else widths
    if not isinstance(widths, (list, tuple)) or len(widths) < layers + 1 or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in widths):
        raise ValueError(f"{name}: received {shown!r}, expected at least {layers + 1} positive "
                         f"integers [n_0, ..., n_L] (L ≥ {layers})")
    if square and len(set(widths[1:])) != 1:
        raise ValueError(f"{name}: received {shown!r}, expected equal widths n_1 = ... = n_L "
                         "(square layers have exact inverses)")
    return tuple(widths)


__all__ += ["check_numbers", "check_layer_widths"]


def dataclass_flags(parser: Any, cls: type, helps: Mapping[str, str]) -> Callable[[Any], Any]:
    """Add a flag ``--name`` (underscores written as dashes) to the argparse ``parser`` for each
    field of the dataclass ``cls`` named in ``helps`` (its help text), typed and defaulted from
    ``cls()``: a tuple field takes one or more values of its first element's type. Returns
    ``make_config(args)`` for :func:`run_cli`: ``cls`` with those fields from the parsed
    arguments and the others at their defaults."""
    defaults = cls()
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(helps) - set(known))
    if unknown:
        raise ValueError(f"helps: unknown fields {unknown}, expected names from {known}")
    for name, text in helps.items():
        value = getattr(defaults, name)
        kind = type(value[0]) if isinstance(value, tuple) and value else type(value)
        if kind not in (int, float, str):
            raise ValueError(f"helps[{name!r}]: the field's default is {value!r}, expected an "
                             "int, float or str, or a non-empty tuple of them (other fields "
                             "need a flag of their own)")
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple):
            parser.add_argument(flag, type=kind, nargs="+", default=list(value), help=text)
        else:
            parser.add_argument(flag, type=kind, default=value, help=text)

    def make_config(args: Any) -> Any:
        given = {name: getattr(args, name) for name in helps}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})

    return make_config


__all__ += ["dataclass_flags"]


def grid_axis(name: str, spec: Any) -> Any:
    """A grid axis from a config: ``{logspace: [lo, hi, n]}`` (``n`` powers of ten from
    ``10**lo`` to ``10**hi``) or ``{linspace: [lo, hi, n]}`` as a list of floats; anything else
    (a list of values) is returned as given, for the grid to check. A malformed mapping is a
    ``ValueError`` naming the axis ``name``, what was received and what was expected."""
    if not isinstance(spec, Mapping):
        return spec
    if len(spec) != 1 or next(iter(spec)) not in ("logspace", "linspace"):
        raise ValueError(f"grid axis {name!r}: received {dict(spec)!r}, expected a list of "
                         "values, {logspace: [lo, hi, n]} or {linspace: [lo, hi, n]}")
    kind, args = next(iter(spec.items()))
    if not isinstance(args, (list, tuple)) or len(args) != 3 \
            or isinstance(args[2], bool) or not isinstance(args[2], int) or args[2] < 1 \
            or any(isinstance(a, bool) or not isinstance(a, (int, float))
                   or not math.isfinite(a) for a in args[:2]):
        raise ValueError(f"grid axis {name!r}: received {kind}: {args!r}, expected "
                         "[lo, hi, n] with finite lo, hi and an integer n ≥ 1")
    import numpy as np
    return getattr(np, kind)(float(args[0]), float(args[1]), int(args[2])).tolist()


def check_optional(check: Callable[..., Any], name: str, value: Any, *args: Any,
                   **kwargs: Any) -> Any:
    """None if ``value`` is None, else ``check(name, value, *args, **kwargs)`` (e.g.
    :func:`check_int`, :func:`check_number`) whose error then also says null is accepted."""
    if value is None:
        return None
    try:
        return check(name, value, *args, **kwargs)
    except ValueError as err:
        raise ValueError(f"{err} or null") from None


__all__ += ["grid_axis", "check_optional"]


def check_names(name: str, values: Any, valid: Any) -> tuple:
    """``values`` as a tuple if it holds one or more distinct names from ``valid``, else a
    ``ValueError`` naming ``name``, what was received and the valid names."""
    if not isinstance(values, (list, tuple)) or not values \
            or any(v not in valid for v in values) or len(set(values)) != len(values):
        shown = list(values) if isinstance(values, (list, tuple)) else values
        raise ValueError(f"{name}: received {shown!r}, expected distinct names from "
                         f"{list(valid)}")
    return tuple(values)


def check_choice(name: str, value: Any, valid: Any) -> Any:
    """``value`` if it is one of ``valid``, else a ``ValueError`` naming ``name``, what was
    received and the valid choices."""
    if value not in valid:
        raise ValueError(f"{name}: received {value!r}, expected one of {list(valid)}")
    return value


def check_number_in(name: str, value: Any, low: float, high: float = math.inf, *,
                    open_low: bool = False, open_high: bool = True, what: str = "") -> float:
    """``value`` if it is a finite number in the interval from ``low`` to ``high`` (ends open
    or closed as asked), else a ``ValueError`` naming ``name``, what was received and the
    interval expected (``what`` says what the number is)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) \
        and math.isfinite(value) and (value > low if open_low else value >= low) \
        and (value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name}: received {value!r}, expected a finite number in {interval}"
                         + (f" ({what})" if what else ""))
    return value


def summary_stats(values: Any) -> dict[str, float | None]:
    """``{"mean", "max", "min"}`` of ``values`` as floats (all None if there are none)."""
    import numpy as np
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"mean": None, "max": None, "min": None}
    return {"mean": float(a.mean()), "max": float(a.max()), "min": float(a.min())}


def first_at_or_below(at: Any, curve: Any, level: float) -> Any:
    """The first ``at[i]`` with ``curve[i] ≤ level`` (e.g. the examples a learning curve takes
    to reach a loss), or None if the curve never gets there."""
    return next((k for k, v in zip(at, curve) if v <= level), None)


__all__ += ["check_names", "check_choice", "check_number_in", "summary_stats",
            "first_at_or_below"]
