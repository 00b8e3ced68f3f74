"""Self-contained checkpoints: written atomically, loadable with ``torch.load(..., weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:

    format          "dopr-robot/checkpoint/1"
    step            training steps done
    elapsed_s       seconds of training up to this checkpoint, over every call of a resumed run (absent
                    from checkpoints written before it was recorded: read as 0)
    config          the resolved TrainConfig as a dict
    policy          {"name", "obs_dim", "act_dim", "history", "chunk", "config", "image_shapes"}: enough to
                    rebuild it (image_shapes {key: [h, w, 3]}, empty or absent for a state policy)
    model           policy state_dict (normalizers included, as buffers)
    ema             EMA policy state_dict (or None when the EMA is off)
    optimizer       optimizer state_dict (DoPr: statistics, cached factors, base state)
    scheduler       learning-rate scheduler state_dict
    rng             {"torch": global CPU RNG state, "sampler": batch-order generator state,
                     "cuda": the CUDA generator's state (runs on a GPU only)}
    dataset         {"source", "task", "env_kwargs", "obs_keys", "obs_dim", "act_dim", "episodes", ...,
                     "sha256": the demonstrations' content, which a resume checks}
    best            {"val_loss", "step"} or None
    best_eval       {"eval_success_rate", "step"} of the best closed-loop evaluation (``--eval-every``)
                    or None

Tensors are written from the CPU, whatever device trained, so any machine reads the file (a plain
``torch.load`` on a CPU-only machine too); loading puts them back where the model and the optimizer
live (``load_state_dict`` copies into the module's tensors, and torch's optimizers move their state
to their parameters' device), so a resume on the same device is bit-exact and one on another device
works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dopr_robot.atomic import atomic_path
from dopr_robot.devices import resolve_device
from dopr_robot.errors import UserError
from policies import Policy, make_policy

FORMAT = "dopr-robot/checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` (every tensor moved to the CPU) to a temporary file in the same directory, then
    rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(_on_cpu(obj), tmp)


def _on_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in its dicts, lists and tuples on the CPU (CPU tensors are not copied)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {key: _on_cpu(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(value) for value in obj)
    return obj


# Policy options added with a default that changed behaviour: a checkpoint's config (every field, written
# by train) without one was trained before it existed, and loads with the value of that time.
OPTIONS_BEFORE_THEY_EXISTED = {"softmax_temperature": 1.0}  # image encoders' readout; the default became 0.1


def checkpoint_path(run_or_file: str | Path) -> Path:
    """RUN_DIR -> RUN_DIR/checkpoint.pt; a file path is returned as is."""
    path = Path(run_or_file)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(run_or_file: str | Path) -> dict[str, Any]:
    """Read a checkpoint (from a run directory or a file), with a clear error for each failure."""
    path = checkpoint_path(run_or_file)
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: pass a run directory made by `dopr-robot train` or its checkpoint.pt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        reason = " ".join(str(err).split())  # torch's messages span several lines
        raise UserError(f"{path} is not a readable checkpoint ({type(err).__name__}: {reason}); "
                        "it may be truncated or from another program") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path} is not a dopr-robot checkpoint (expected format {FORMAT!r})")
    return checkpoint


def policy_from_checkpoint(checkpoint: dict[str, Any], use_ema: bool = True,
                           device: str | torch.device = "cpu", flow_steps: int = 0) -> Policy:
    """Rebuild the policy in eval mode on ``device`` (a device name, ``auto`` included, or a
    ``torch.device``), with the EMA weights when present and asked for; ``flow_steps > 0`` sets a
    flow policy's number of Euler steps (a regressor has none: a clear error)."""

    spec = checkpoint["policy"]
    config = dict(spec["config"])
    if spec.get("image_shapes"):  # options a checkpoint predates load as the code that wrote it behaved
        config = {**OPTIONS_BEFORE_THEY_EXISTED, **config}
    policy = make_policy(spec["name"], spec["obs_dim"], spec["act_dim"], spec["history"], spec["chunk"],
                         image_shapes=spec.get("image_shapes"), **config)
    weights = checkpoint["ema"] if use_ema and checkpoint.get("ema") is not None else checkpoint["model"]
    policy.load_state_dict(weights)
    if flow_steps:
        if not hasattr(policy, "flow_steps"):
            raise UserError(f"--flow-steps sets a flow policy's sampler; this checkpoint holds policy {spec['name']!r}, "
                            "a regressor: drop --flow-steps")
        policy.flow_steps = flow_steps
    return policy.to(resolve_device(device)).eval()
