"""Run configurations: frozen dataclasses that are also the command line and the saved record.

Each field carries its one-line help in ``metadata["help"]``. ``add_config_arguments`` turns a
dataclass into argparse options (``batch_size`` -> ``--batch-size``); ``resolve_config`` merges the
dataclass defaults, an optional JSON config file and the options given on the command line, in that
order of precedence, and validates the result. The resolved config is saved as JSON beside every
run, and a run can be repeated from that file alone (``--config RUN_DIR/config.json``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from dopr_robot.errors import UserError
from dopr_robot.optim import OPTIMIZERS, is_dopr
from policies import POLICIES, policy_config_fields


def option(default: Any = MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with its command-line help."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass(frozen=True)
class TrainConfig:
    data: str = option(help="demonstrations: a file from `collect`, a robomimic-layout HDF5 file, or a Minari dataset id/path")
    out: str = option(help="run directory (config.json, checkpoint.pt, metrics.jsonl)")
    policy: str = option("mlp", help=f"policy: {' | '.join(POLICIES)}")
    optimizer: str = option("adamw", help=f"optimizer: {' | '.join(OPTIMIZERS)}")
    steps: int = option(2000, help="training steps")
    batch_size: int = option(256, help="global batch size (split across ranks under torchrun)")
    lr: float = option(1e-3, help="peak learning rate")
    weight_decay: float = option(0.0, help="weight decay (decoupled for adamw, signum, muon)")
    damping: float = option(0.01, help="DoPr relative damping (dopr-* optimizers only)")
    optimizer_options: dict = option({}, help='extra optimizer arguments as JSON, e.g. \'{"refresh_every": 10}\'')
    history: int = option(1, help="observations the policy sees (the current one and history-1 before it)")
    chunk: int = option(1, help="future actions the policy predicts")
    policy_options: dict = option({}, help='policy config as JSON, e.g. \'{"width": 512, "depth": 4}\'')
    obs_keys: list = option([], help="observation keys to concatenate for robomimic/Minari data (default: all low-dim)")
    warmup_steps: int = option(100, help="linear learning-rate warmup, then cosine decay to 0")
    grad_clip: float = option(1.0, help="clip the gradient norm to this (0: off)")
    ema_decay: float = option(0.995, help="decay of the weight EMA used for validation and evaluation (0: off)")
    val_every: int = option(250, help="validation loss on the held-out episodes every N steps (and at the end)")
    checkpoint_every: int = option(500, help="write RUN_DIR/checkpoint.pt every N steps (and at the end)")
    log_every: int = option(50, help="append the mean training loss to metrics.jsonl every N steps")
    seed: int = option(0, help="seed for initialization, batch order and dropout")

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise UserError(f"unknown policy {self.policy!r}; valid: {', '.join(POLICIES)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        unknown = sorted(set(self.policy_options) - set(policy_config_fields(self.policy)))
        if unknown:
            raise UserError(f"policy {self.policy!r} has no option(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(policy_config_fields(self.policy))}")
        for name in ("steps", "batch_size", "history", "chunk", "val_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "damping", "grad_clip", "warmup_steps"):
            if not getattr(self, name) >= 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``make_optimizer(self.optimizer, model, **kwargs)``."""
        kwargs = dict(lr=self.lr, weight_decay=self.weight_decay, **self.optimizer_options)
        if is_dopr(self.optimizer):
            kwargs.setdefault("damping", self.damping)
        return kwargs

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


C = TypeVar("C")


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One option per field; defaults are left unset so that given options can be told apart."""
    hints = get_type_hints(config_class)
    for f in fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else None)
        help_text = f.metadata.get("help", "") + (f" (default: {default})" if default not in (None, {}, []) else "")
        if kind in (dict,):
            parser.add_argument(flag, type=_json_object, default=argparse.SUPPRESS, metavar="JSON", help=help_text)
        elif kind in (list,):
            parser.add_argument(flag, type=_comma_list, default=argparse.SUPPRESS, metavar="A,B", help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)
    parser.add_argument("--config", type=Path, default=None, metavar="FILE.json",
                        help="read options from a JSON file (options given here override it)")


def resolve_config(config_class: type[C], args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> C:
    """Defaults < ``--config`` file < options given on the command line."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values.update(read_config_file(args.config, config_class))
    names = {f.name for f in fields(config_class)}
    values.update({k: v for k, v in vars(args).items() if k in names and k not in exclude})
    missing = [f.name for f in fields(config_class)
               if f.default is MISSING and f.default_factory is MISSING and f.name not in values]
    if missing:
        raise UserError(f"missing required option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return config_class(**values)


def read_config_file(path: Path, config_class: type) -> dict[str, Any]:
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"config file {path} is not valid JSON: {err}") from None
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a JSON object of options")
    unknown = sorted(set(values) - {f.name for f in fields(config_class)})
    if unknown:
        raise UserError(f"config file {path} has unknown option(s) {', '.join(unknown)}")
    return values


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
