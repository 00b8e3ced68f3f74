"""Run configurations: frozen dataclasses that are also the command line and the saved record.

Each field carries its one-line help in ``metadata["help"]``. ``add_config_arguments`` turns a
dataclass into argparse options (``batch_size`` -> ``--batch-size``; a ``bool`` field is a switch
that flips its default, e.g. ``with_expert`` -> ``--no-expert``); ``resolve_config`` merges the
dataclass defaults, an optional JSON config file and the options given on the command line, in that
order of precedence, and validates the result. The resolved config is saved as JSON beside every
run, and a run can be repeated from that file alone (``--config RUN_DIR/config.json``).

Configs compose: a field declared with :func:`nested` holds another config (a comparison holds a
``TrainConfig`` as its template and an ``EvalConfig``). Its options appear on the command line as
``--{prefix}{name}``, in JSON as an object under the field's name (``{"train": {"lr": 3e-4}}``),
and are validated by the nested class alone; ``exclude`` names the nested fields the holder fills
itself (they are neither options nor keys of the JSON form).

Each range and validity check lives in its config's ``__post_init__`` and raises a
:class:`SettingError` naming fields: in Python ``episodes``, in a config file ``demo.episodes``, and on
the command line the option typed (``--demo-episodes`` in ``compare``, ``--episodes`` in ``collect``).
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import re
import types
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar, Union, get_args, get_origin, get_type_hints

from torch import nn

from dopr_robot.errors import UserError
from dopr_robot.optim import OPTIMIZERS, make_optimizer, optimizer_arguments
from envs.seeds import POLICY_EVAL
from policies import POLICIES, check_policy_shape, policy_config_fields


Namer = Callable[[str], str]  # a field's dotted path -> the name a message gives it


class SettingError(UserError):
    """A config's value refused in one line that names fields, not flags: ``message(name)`` writes
    it with ``name(field)`` for each field it mentions. In Python the name is the field's
    (``episodes``); a holder of the config prefixes its own field (``demo.episodes``), and the command
    line renders the flag the user typed (``--demo-episodes``, :func:`resolve_config`)."""

    def __init__(self, message: Callable[[Namer], str]) -> None:
        super().__init__(message(lambda path: path))
        self.message = message

    def renamed(self, name: Namer) -> SettingError:
        """The same refusal with each field called ``name(field)``."""
        return SettingError(lambda outer: self.message(lambda path: outer(name(path))))

    def within(self, holder_field: str) -> SettingError:
        """The refusal as the holder of this config sees it: ``field`` -> ``holder_field.field``."""
        return self.renamed(lambda path: f"{holder_field}.{path}")


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None, parse: Callable[[str], Any] | None = None,
           metavar: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its command-line help (and, where the default spelling does not fit,
    its ``flag``, a ``parse`` function for the command-line text and a ``metavar``)."""
    metadata = {"help": help, "flag": flag, "parse": parse, "metavar": metavar}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def nested(config_class: type, *, factory: Callable[[], Any] | None = None, prefix: str = "",
           exclude: tuple[str, ...] = (), why_excluded: str = "", help: str = "") -> Any:
    """A field holding a ``config_class`` (built by ``factory``, default ``config_class()``).

    Its options are ``--{prefix}{name}``; the ``exclude``d fields keep the factory's values and are
    set by the holder (``why_excluded`` says how, for the error when a file sets one).
    """
    return field(default_factory=factory or config_class,
                 metadata={"help": help, "nested": config_class, "prefix": prefix, "exclude": tuple(exclude),
                           "why_excluded": why_excluded})


def check_ranges(config: Any, *, at_least_1: tuple[str, ...] = (), at_least_0: tuple[str, ...] = (),
                 finite: tuple[str, ...] = ()) -> None:
    """The common range checks of a config's numeric fields, each refused as a :class:`SettingError`:
    ``finite`` (no nan or inf), ``at_least_1`` (counts), ``at_least_0`` (sizes, rates, seeds; nan fails)."""
    for name in finite:
        if not math.isfinite(getattr(config, name)):
            raise SettingError(lambda n: f"{n(name)} must be a finite number, got {getattr(config, name)}")
    for names, low in ((at_least_1, 1), (at_least_0, 0)):
        for name in names:
            if not getattr(config, name) >= low:
                raise SettingError(lambda n: f"{n(name)} must be >= {low}, got {getattr(config, name)}")


# Mixed-precision modes of training (``TrainConfig.amp``).
AMP_MODES = ("none", "bf16")

# TrainConfig's real-valued settings: finite and >= 0.
FINITE_TRAIN_FIELDS = ("lr", "weight_decay", "damping", "grad_clip")
# Training cadences that default to a fraction of the run: 0 means ``max(1, steps // divisor)``.
DERIVED_FROM_STEPS = {"val_every": 10, "checkpoint_every": 4, "log_every": 40}


@dataclass(frozen=True)
class TrainConfig:
    """One behavior-cloning run (``dopr-robot train``; every cell of ``compare``).

    ``val_every``, ``checkpoint_every`` and ``log_every`` default to 0, a fraction of ``steps``
    (:data:`DERIVED_FROM_STEPS`), resolved here: the saved config.json holds the number, and
    ``dataclasses.replace(config, steps=...)`` keeps it (pass 0 again to derive it anew).
    Where a run executes is not part of it (``train(config, device=...)``, see
    :mod:`dopr_robot.devices`): a run resumes on another device; ``amp`` changes the numerics, so it is.
    """

    data: str = option(help="demonstrations: a file from `collect`, a robomimic-layout HDF5 file, or a Minari dataset id/path")
    out: str = option(help="run directory (config.json, checkpoint.pt, metrics.jsonl)")
    policy: str = option("mlp", help=f"policy: {' | '.join(POLICIES)}")
    optimizer: str = option("adamw", help=f"optimizer: {' | '.join(OPTIMIZERS)}")
    steps: int = option(2000, help="training steps")
    batch_size: int = option(256, help="global batch size (split across ranks under torchrun)")
    lr: float = option(1e-3, help="peak learning rate")
    weight_decay: float = option(0.0, help="weight decay (decoupled for adamw, signum, muon)")
    damping: float = option(0.01, help="DoPr relative damping (dopr-* optimizers only)")
    optimizer_options: dict = option({}, help='extra optimizer arguments as JSON, e.g. \'{"refresh_every": 10}\' '
                                              "(DoPr's own, like damping, reach dopr-* optimizers only)")
    history: int = option(1, help="observations the policy sees (the current one and history-1 before it)")
    chunk: int = option(1, help="future actions the policy predicts")
    policy_options: dict = option({}, help='policy config as JSON, e.g. \'{"width": 512, "depth": 4}\'')
    obs_keys: list = option([], help="observation keys to concatenate for robomimic/Minari data (default: all low-dim)")
    warmup_steps: int = option(100, help="linear learning-rate warmup, then cosine decay to 0")
    grad_clip: float = option(1.0, help="clip the gradient norm to this (0: off)")
    ema_decay: float = option(0.995, help="decay of the weight EMA used for validation and evaluation (0: off)")
    val_every: int = option(0, help="validation loss on the held-out episodes every N steps and at the end (0: steps // 10)")
    checkpoint_every: int = option(0, help="write RUN_DIR/checkpoint.pt every N steps and at the end (0: steps // 4)")
    log_every: int = option(0, help="append the mean training loss to metrics.jsonl every N steps (0: steps // 40)")
    eval_every: int = option(0, help="closed-loop evaluation of the policy every N steps and at the end, logged as "
                                     "eval_* in metrics.jsonl; the checkpoint records the step of the best success "
                                     "rate (0: off)")
    seed: int = option(0, help="seed for initialization, batch order and dropout")
    amp: str = option("none", help=f"mixed precision: {' | '.join(AMP_MODES)} (bf16: the network's forward and "
                                   "backward under torch.autocast in bfloat16; weights, loss and DoPr's statistics "
                                   "stay float32)")
    compile: bool = option(False, help="torch.compile the step (CPU and CUDA; on CUDA its compiled pieces are also "
                                       "captured as CUDA graphs): the forward, loss and backward, the gradient clip "
                                       "and the optimizer's step. For dopr-* only the clip and the base step: the "
                                       "forward with DoPr's statistics hooks and DoPr's solve stay eager (their "
                                       "Python step counters would recompile them every step). The first steps pay "
                                       "the compilation; the numerics match eager within float round-off")

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise SettingError(lambda n: f"{n('amp')} {self.amp!r} is not a precision; valid: {', '.join(AMP_MODES)}")
        if self.policy not in POLICIES:
            raise UserError(f"unknown policy {self.policy!r}; valid: {', '.join(POLICIES)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        unknown = sorted(set(self.policy_options) - set(policy_config_fields(self.policy)))
        if unknown:
            raise UserError(f"policy {self.policy!r} has no option(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(policy_config_fields(self.policy))}")
        for name, value in self.policy_options.items():  # 64.0 for a width would fail deep inside torch
            problem = type_problem(POLICIES[self.policy][1], name, value)
            if problem:
                raise SettingError(lambda n: f"{n('policy_options')} {name} {problem}")
        try:  # the policy config's own checks (e.g. width >= 1), before anything is written
            POLICIES[self.policy][1](**self.policy_options)
        except (TypeError, ValueError) as err:
            why = str(err)  # the except clause unbinds err before the message is written
            raise SettingError(lambda n: f"{n('policy_options')} {json.dumps(self.policy_options)}: {why}") from None
        check_ranges(self, at_least_1=("steps", "batch_size", "history", "chunk"), finite=FINITE_TRAIN_FIELDS,
                     at_least_0=(*FINITE_TRAIN_FIELDS, "warmup_steps", "eval_every", "seed", *DERIVED_FROM_STEPS))
        try:  # a head that cannot take this chunk (a U-Net halves it): refused before any data is collected or loaded
            check_policy_shape(self.policy, self.history, self.chunk, **self.policy_options)
        except ValueError as err:
            why = str(err)
            raise SettingError(lambda n: f"{n('policy')} {self.policy} {n('chunk')} {self.chunk}: {why}") from None
        if not 0.0 <= self.ema_decay < 1.0:
            raise SettingError(lambda n: f"{n('ema_decay')} must be in [0, 1), got {self.ema_decay}")
        # One source for each setting: a field given again among the options would be what ran while
        # config.json and the reports said otherwise.
        fields_there = sorted({f.name for f in fields(self)} & set(self.optimizer_options))
        if fields_there:
            raise SettingError(lambda n: f"{n('optimizer_options')} must not set {', '.join(fields_there)}: use "
                                         f"{', '.join(n(name) for name in fields_there)}")
        try:  # the optimizer's own checks on a weightless layer (no RNG, no memory), before any work
            make_optimizer(self.optimizer, nn.Linear(2, 2, device="meta"), **self.optimizer_kwargs())
        except ValueError as err:
            why = str(err)
            raise SettingError(lambda n: f"{n('optimizer_options')} {json.dumps(self.optimizer_options)} with "
                                         f"{n('optimizer')} {self.optimizer}: {why}") from None
        # The one place a default is derived: the saved config.json holds the resolved number.
        for name, divisor in DERIVED_FROM_STEPS.items():
            if getattr(self, name) == 0:
                object.__setattr__(self, name, max(1, self.steps // divisor))

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``make_optimizer(self.optimizer, model, **kwargs)``.

        DoPr's own arguments (``damping``, and ``cov_ema``, ``refresh_every``, ... in
        ``optimizer_options``) go to ``dopr-*`` optimizers only, so that one config serves every
        cell of a DoPr-X vs X comparison.
        """
        options = optimizer_arguments(self.optimizer, {**self.optimizer_options, "damping": self.damping})
        return dict(lr=self.lr, weight_decay=self.weight_decay, **options)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def parse_size(text: str) -> tuple[int, int]:
    """``"160x120"`` -> ``(160, 120)`` (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels like 320x240, got {text!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class EvalConfig:
    """Closed-loop evaluation (``eval``, ``video``, and every run of ``compare``): episode i starts
    from ``reset(seed=seed + i)``."""

    episodes: int = option(50, help="closed-loop episodes")
    seed: int = option(POLICY_EVAL, help="episode i is reset with seed SEED + i (clear of the demonstration seeds)")
    num_envs: int = option(8, help="environments stepped together (results do not depend on it, up to float32 rounding of batched forwards, ~1e-7)")
    actions_per_chunk: int = option(1, help="actions executed from each predicted chunk before re-planning (<= chunk)")
    with_expert: bool = option(True, flag="--no-expert", help="skip the expert rollouts and the compounding error")
    use_ema: bool = option(True, flag="--no-ema", help="use the raw weights instead of the EMA")
    size: tuple = option((320, 240), parse=parse_size, metavar="WxH", help="video panel size in pixels")
    fps: int = option(0, help="video frames per second (0: the task's control rate)")
    flow_steps: int = option(0, help="Euler steps of a flow policy's sampler (0: the number it was trained with)")

    def __post_init__(self) -> None:
        for name in ("episodes", "seed", "num_envs", "actions_per_chunk", "fps", "flow_steps"):
            value = getattr(self, name)  # from Python, 2.5 episodes would pass the range check
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise SettingError(lambda n: f"{n(name)} must be an integer, got {value!r}")
        check_ranges(self, at_least_1=("episodes", "num_envs", "actions_per_chunk"), at_least_0=("seed",))
        if self.fps < 0:
            raise SettingError(lambda n: f"{n('fps')} must be >= 0 (0: the task's rate), got {self.fps}")
        if self.flow_steps < 0:
            raise SettingError(lambda n: f"{n('flow_steps')} must be >= 0 (0: the policy's own), got {self.flow_steps}")
        size = tuple(self.size)  # a JSON file gives a list
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
            raise SettingError(lambda n: f"{n('size')} must be WIDTHxHEIGHT in pixels, got {self.size!r}")
        if min(size) < 16:
            raise SettingError(lambda n: f"{n('size')} must be at least 16x16 pixels, got {size[0]}x{size[1]}")
        object.__setattr__(self, "size", size)

    @property
    def seeds(self) -> list[int]:
        """The reset seed of every episode."""
        return [self.seed + i for i in range(self.episodes)]


C = TypeVar("C")


def _declared_default(f) -> Any:
    """A plain field's default (MISSING when required); nested fields are never required."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING and "nested" not in f.metadata:
        return f.default_factory()
    return MISSING


def _options(config_class: type, exclude: tuple[str, ...] = (), prefix: str = "", path: str = "",
             group: str | None = None) -> Iterator[tuple[str, str, Any, type, str | None]]:
    """``(dest, flag, field, type, group)`` for every command-line option of ``config_class``, the
    fields of nested configs included: ``dest`` is the dotted path (``train.lr``), ``flag`` the
    option, ``group`` the help of the nested field it belongs to (None at the top)."""
    hints = get_type_hints(config_class)
    for f in fields(config_class):
        if f.name in exclude:
            continue
        if "nested" in f.metadata:
            yield from _options(f.metadata["nested"], f.metadata["exclude"], prefix + f.metadata["prefix"],
                                f"{path}{f.name}.", f.metadata["help"] or f.name)
            continue
        own = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        yield path + f.name, "--" + prefix + own[2:], f, hints[f.name], group


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type, *, exclude: tuple[str, ...] = (),
                         defaults: dict[str, Any] | None = None, config_file: bool = True) -> None:
    """One option per field, nested configs' fields included; defaults are left unset so that given
    options can be told apart. ``exclude`` leaves fields off this command line (top-level names, or
    dotted names of nested fields: ``train.lr``);
    ``defaults`` (dotted names) replaces field defaults for this command: pass the same to
    :func:`resolve_config`. ``config_file``: add ``--config FILE.json`` (a command that takes two
    configs adds it for one of them)."""
    defaults = defaults or {}
    groups: dict[str | None, Any] = {None: parser}
    for dest, flag, f, kind, group in _options(config_class, exclude):
        if dest in exclude:
            continue
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        target = groups[group]
        default = defaults.get(dest, _declared_default(f))
        help_text = f.metadata.get("help", "")
        if kind is bool:
            target.add_argument(flag, dest=dest, action="store_const", const=not default, default=argparse.SUPPRESS,
                                help=help_text)
            continue
        if default not in (MISSING, None, {}, [], ""):
            help_text += f" (default: {'x'.join(map(str, default)) if kind is tuple else default})"
        if f.metadata.get("parse") is not None:
            parse = f.metadata["parse"]
        else:
            parse = {dict: _json_object, list: _comma_list}.get(kind, kind)
        metavar = f.metadata.get("metavar") or {dict: "JSON", list: "A,B"}.get(kind) or f.name.upper()
        target.add_argument(flag, dest=dest, type=parse, default=argparse.SUPPRESS, metavar=metavar, help=help_text)
    if config_file:
        parser.add_argument("--config", type=Path, default=None, metavar="FILE.json",
                            help="read options from a JSON file (options given here override it)")


def given_options(config_class: type, args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """``dotted name -> flag`` for the options of ``config_class`` given on the command line."""
    present = vars(args)
    return {dest: flag for dest, flag, _, _, _ in _options(config_class, exclude) if dest in present and dest not in exclude}


def resolve_config(config_class: type[C], args: argparse.Namespace, *, exclude: tuple[str, ...] = (),
                   defaults: dict[str, Any] | None = None) -> C:
    """Field defaults < ``defaults`` < ``--config`` file < options given on the command line."""
    values: dict[str, Any] = {}
    for dest, value in (defaults or {}).items():
        _put(values, dest, value)
    if getattr(args, "config", None) is not None:
        _merge(values, read_config_file(args.config, config_class), config_class)
    for dest in given_options(config_class, args, exclude):
        _put(values, dest, getattr(args, dest))
    with flags_named(config_class):
        return config_from_dict(config_class, values)


def read_config_file(path: Path, config_class: type) -> dict[str, Any]:
    """The JSON form of (part of) a ``config_class``, its keys and value types checked."""
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a directory; pass a JSON file (a run's is RUN_DIR/config.json)") from None
    except OSError as err:
        raise UserError(f"config file {path} cannot be read: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"config file {path} is not valid JSON: {err}") from None
    check_config_dict(config_class, values, where=f"config file {path}")
    return values


def check_config_dict(config_class: type, values: Any, where: str = "", path: str = "", exclude: tuple[str, ...] = (),
                      why_excluded: str = "") -> None:
    """Raise a UserError naming the first unknown key, wrongly typed value, or ``exclude``d key (one
    the holder of a nested config fills itself); missing keys are fine (they keep their defaults)."""
    prefix = f"{where}: " if where else ""
    if not isinstance(values, dict):
        raise UserError(f"{prefix}{path.rstrip('.') or 'the file'} must be a JSON object of options, got {values!r}")
    hints = get_type_hints(config_class)
    by_name = {f.name: f for f in fields(config_class)}
    for name in values:
        if name in exclude:
            raise UserError(f"{prefix}{path}{name} cannot be set here: {why_excluded}")
        if name not in by_name:
            owners = [n for n, f in by_name.items() if "nested" in f.metadata
                      and name in {g.name for g in fields(f.metadata["nested"])} and name not in f.metadata["exclude"]]
            hint = f" (put it under \"{owners[0]}\": {{\"{owners[0]}\": {{\"{name}\": ...}}}})" if owners else ""
            raise UserError(f"{prefix}unknown option {path}{name}{hint}; valid: "
                            f"{', '.join(n for n in by_name if n not in exclude)}")
    for name, value in values.items():
        f = by_name[name]
        if "nested" in f.metadata:
            check_config_dict(f.metadata["nested"], value, where, f"{path}{name}.", f.metadata["exclude"],
                              f.metadata["why_excluded"])
        else:
            _check_type(value, hints[name], f"{prefix}{path}{name}")


def config_from_dict(config_class: type[C], values: dict[str, Any], where: str = "") -> C:
    """Build ``config_class`` from its JSON form (nested configs as objects under their field's
    name; a missing key keeps its default), checked as :func:`check_config_dict` does."""
    check_config_dict(config_class, values, where)
    return _build(config_class, values)


def _build(config_class: type[C], values: dict[str, Any]) -> C:
    kwargs = dict(values)
    for f in fields(config_class):
        if "nested" in f.metadata and f.name in values:
            meta, template = f.metadata, f.default_factory()
            filled = {**{name: getattr(template, name) for name in meta["exclude"]}, **values[f.name]}
            try:
                kwargs[f.name] = _build(meta["nested"], filled)
            except SettingError as err:  # its fields as the holder's JSON form names them: demo.episodes
                raise err.within(f.name) from None
    missing = [f.name for f in fields(config_class) if _declared_default(f) is MISSING and "nested" not in f.metadata
               and f.name not in kwargs]
    if missing:
        raise UserError(f"missing required option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return config_class(**kwargs)


@contextmanager
def flags_named(config_class: type) -> Iterator[None]:
    """Inside: a :class:`SettingError` names the options of ``config_class``'s command line
    (``--demo-episodes``) instead of its fields (``demo.episodes``); a field without an option keeps
    its dotted name."""
    try:
        yield
    except SettingError as err:
        flags = {dest: flag for dest, flag, _, _, _ in _options(config_class)}
        raise err.renamed(lambda path: flags.get(path, path)) from None


def config_to_dict(config: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON form of ``config``: nested configs as objects, less the fields their holder fills."""
    out: dict[str, Any] = {}
    for f in fields(config):
        if f.name in exclude:
            continue
        value = getattr(config, f.name)
        if "nested" in f.metadata:
            out[f.name] = config_to_dict(value, f.metadata["exclude"])
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_items(config: Any) -> dict[str, Any]:
    """The JSON form flattened to dotted names: ``{"train.lr": 0.001, "tasks": [...], ...}``."""
    items: dict[str, Any] = {}
    for f in fields(config):
        if "nested" in f.metadata:
            inner = config_items(getattr(config, f.name))
            items.update({f"{f.name}.{k}": v for k, v in inner.items() if k not in f.metadata["exclude"]})
        else:
            value = getattr(config, f.name)
            items[f.name] = list(value) if isinstance(value, tuple) else value
    return items


def same_file(saved_path: str, saved_dir: str, path: str, directory: str) -> bool:
    """Whether a file named in a saved config is the file named now, for a resume check: the same path, or
    the same place relative to the saved and the present directory of the run or grid (a directory moved
    or copied elsewhere with the files inside it, e.g. the demonstrations a comparison collected)."""
    return Path(saved_path) == Path(path) or os.path.relpath(saved_path, saved_dir) == os.path.relpath(path, directory)


def _put(values: dict[str, Any], dotted: str, value: Any) -> None:
    *outer, name = dotted.split(".")
    for key in outer:
        values = values.setdefault(key, {})
    values[name] = value


def _merge(values: dict[str, Any], new: dict[str, Any], config_class: type) -> None:
    """Update ``values`` with ``new``, recursing into nested configs (not into dict-valued options)."""
    by_name = {f.name: f for f in fields(config_class)}
    for key, value in new.items():
        f = by_name[key]
        if "nested" in f.metadata and isinstance(value, dict):
            _merge(values.setdefault(key, {}), value, f.metadata["nested"])
        else:
            values[key] = value


_EXPECTED = {
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
    dict: ("a JSON object", lambda v: isinstance(v, dict)),
    list: ("a JSON list", lambda v: isinstance(v, list)),
    tuple: ("a JSON list", lambda v: isinstance(v, (list, tuple))),
}


def _type_problem(value: Any, kind: Any) -> str | None:
    """``must be <type>, got <value>`` when ``value`` is not of type ``kind``; None when it is."""
    kinds = get_args(kind) if get_origin(kind) in (Union, types.UnionType) else (kind,)  # int | list: either
    if not all(k in _EXPECTED for k in kinds):
        return None  # a type this check does not know: the config's own __post_init__ is the judge
    if not any(_EXPECTED[k][1](value) for k in kinds):
        return f"must be {' or '.join(_EXPECTED[k][0] for k in kinds)}, got {value!r}"
    return None


def _check_type(value: Any, kind: Any, name: str) -> None:
    problem = _type_problem(value, kind)
    if problem:
        raise UserError(f"{name} {problem}")


def type_problem(config_class: type, name: str, value: Any) -> str | None:
    """``must be <type>, got <value>`` unless ``value`` has the type of ``config_class.name``."""
    return _type_problem(value, get_type_hints(config_class)[name])


def check_value_type(config_class: type, name: str, value: Any, where: str) -> None:
    """Raise a UserError, naming ``where``, unless ``value`` has the type of ``config_class.name``."""
    _check_type(value, get_type_hints(config_class)[name], where)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"width\": 512}}', got {text}")
    return value


def _comma_list(text: str) -> list:
    return [item.strip() for item in text.split(",") if item.strip()]


def number_list(text: str) -> list:
    """``"1e-3,3e-3"`` -> ``[0.001, 0.003]`` (a command-line list of numbers)."""
    try:
        return [float(item) for item in _comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas like 1e-4,3e-4, got {text!r}") from None


def count_or_counts(text: str) -> int | list:
    """``"50"`` -> ``50``; ``"10,25,50"`` -> ``[10, 25, 50]``."""
    items = _comma_list(text)
    if not items or not all(item.isdigit() for item in items):
        raise argparse.ArgumentTypeError(f"expected a count like 50 or counts separated by commas like 10,25,50, got {text!r}")
    return int(items[0]) if len(items) == 1 and "," not in text else [int(item) for item in items]


def json_object_or_file(text: str) -> dict:
    """A JSON object given inline (``'{"adamw": {"lr": 0.001}}'``) or as the path of a JSON file."""
    if text.lstrip().startswith("{"):
        return _json_object(text)
    try:
        value = json.loads(Path(text).read_text())
    except OSError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object or the path of a JSON file: {err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise argparse.ArgumentTypeError(f"{text} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text} must hold a JSON object, got {type(value).__name__}")
    return value
