"""Atomic file writes: a result file is either complete or absent, never half-written.

Everything the toolkit writes for users (checkpoints, evaluation JSON, reports, plots, videos) goes
through :func:`atomic_path`: write to a temporary file in the target's directory, then
``os.replace`` it over the target; on any exception (Ctrl-C included) the temporary file is removed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path (same directory, same final suffix as ``path``, so that writers choosing
    a format by extension still work) to write; publish it on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates files readable by the owner only; give the result the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """JSON with NaN/Inf written as null (strict JSON) and NumPy scalars as plain numbers."""
    return write_text_atomic(path, json.dumps(_strict(data), indent=1) + "\n")


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    if isinstance(value, np.generic):
        return _strict(value.item())
    return value
