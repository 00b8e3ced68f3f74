"""Where a command runs: ``--device auto|cpu|cuda|cuda:N`` turned into a ``torch.device``, in one place.

A device is where a run executes, not what it is: it is an argument of ``train()``,
``evaluate_checkpoint()`` and ``compare()`` (and ``--device`` of their commands), like
``--threads``, and never part of a saved config, so a run started on a GPU resumes on a CPU and the
reverse. :func:`resolve_device` turns the text into a device or raises one
:class:`~dopr_robot.errors.UserError` that names the problem and the fix.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from torch import nn

from dopr_robot.errors import UserError

DEVICE_HELP = "where the policy runs: auto (CUDA when available, else CPU) | cpu | cuda | cuda:N (default: auto)"
VALID = "auto, cpu, cuda, cuda:N (N counts from 0), mps"


def resolve_device(device: str | torch.device | None = "auto", *, local_rank: int | None = None) -> torch.device:
    """The ``torch.device`` that ``device`` names, checked against this machine.

    ``auto`` (or None) is the current CUDA device when CUDA is available, else the CPU; ``cuda``
    without an index is the current CUDA device (``cuda:0`` unless changed). ``local_rank`` (one
    process per GPU under torchrun) turns ``cuda`` and ``auto`` into ``cuda:LOCAL_RANK``. A device
    this machine cannot give (``cuda`` without CUDA, ``cuda:3`` with one GPU, ``mps`` without Apple
    GPU support) or a string that names none raises a UserError.
    """
    text = "auto" if device is None else str(device).strip().lower()
    shown = f"--device {text}"
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(text)
    except (RuntimeError, ValueError):
        raise UserError(f"{shown} names no device; valid: {VALID}") from None
    if resolved.type == "cpu":
        return torch.device("cpu")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise UserError(f"{shown}: CUDA is not available on this machine (torch {torch.__version__}, {build}, "
                            "finds no usable NVIDIA GPU); use --device cpu (or auto, which falls back to the CPU), "
                            "or run on a machine with an NVIDIA GPU and a CUDA build of torch")
        count = torch.cuda.device_count()
        if local_rank is not None:
            if resolved.index is not None:
                raise UserError(f"{shown}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                                "use --device cuda (or auto)")
            if local_rank >= count:
                raise UserError(f"torchrun started a process with LOCAL_RANK {local_rank}, but only {count} CUDA "
                                f"device(s) are visible: use --nproc-per-node {count} or fewer (one process per GPU), "
                                "or --device cpu")
            resolved = torch.device("cuda", local_rank)
        index = torch.cuda.current_device() if resolved.index is None else resolved.index
        if index >= count:
            raise UserError(f"{shown}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1}); "
                            "pick one of those, or --device cuda for the first")
        return torch.device("cuda", index)
    if resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{shown}: MPS (the Apple-silicon GPU) is not available here; use --device cpu or auto")
        return torch.device("mps")
    raise UserError(f"{shown}: device type {resolved.type!r} is not supported; valid: {VALID}")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` (the text; the command resolves it, so that a bad one is a one-line error)."""
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module with neither)."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def copy_to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without making the host wait for the device: on CUDA it goes
    through pinned memory as a non-blocking copy (a plain ``.to`` from pageable memory synchronizes)."""
    if device.type != "cuda" or tensor.device == device:
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
