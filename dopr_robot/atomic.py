"""Atomic file writes: a result file is either complete or absent, never half-written.

Everything the toolkit writes for users (checkpoints, evaluation JSON, reports, plots, videos,
demonstrations) goes through :func:`atomic_path`: write to a temporary file in the target's directory,
then ``os.replace`` it over the target; on any exception (Ctrl-C included) the temporary file is
removed, and an OS error while writing (a full disk, a lost permission) becomes one :class:`UserError`
line naming the path and the cause.

The one rule for destinations, checked before the expensive work by :func:`check_destination` (a file)
and :func:`check_directory_destination` (an output directory): the toolkit never replaces a file it did
not make for the same purpose unless the user passes ``--overwrite``, and a path that cannot be written
(a directory where a file is meant, a file where a directory is meant, no write permission) is refused
up front with one line.

This is a foundation module: it imports nothing of ours except :mod:`dopr_robot.errors`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from dopr_robot.errors import UserError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (the directory that a ``mkdir -p`` would start from)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _check_parent(path: Path) -> None:
    """The directories above ``path`` can be created and written: no file in the way, write permission
    on the nearest existing one."""
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise UserError(f"{path}: {existing} is a file, not a directory; choose a path outside it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{path}: no permission to write in {existing}; choose another path")


def check_destination(
    path: str | Path, *, overwrite: bool, what: str, ours: Callable[[Path], bool] | None = None
) -> Path:
    """Refuse, in one line, a file destination that the write would fail on or that holds something else.

    Call it before the expensive work (collection, rollouts, training). ``what`` names the kind of file
    in messages ("demonstrations file", "evaluation JSON"). ``ours(path)`` says whether an existing file
    is one the toolkit made for the same purpose, which may be replaced without ``overwrite``; when
    ``ours`` is None every existing file needs ``overwrite``. Returns ``path`` as a Path.
    """
    if str(path) == "":
        raise UserError(f"the path for the {what} is empty; give a file path")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; the {what} needs a file path (choose a file name inside it)")
    _check_parent(path)
    if path.exists():
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise UserError(f"{path}: no permission to replace it in {path.parent}; choose another path")
        if not overwrite and not (ours is not None and ours(path) is True):
            raise UserError(
                f"{path} exists and is not {'an' if what[:1] in 'aeiou' else 'a'} {what}; pass --overwrite to replace it, "
                "or choose another path"
                if ours is not None
                else f"{path} exists; pass --overwrite to replace it, or choose another path"
            )
    return path


def check_directory_destination(path: str | Path, *, what: str) -> Path:
    """Refuse, in one line, an output directory that cannot be made or written: an empty path, a file
    at ``path`` or above it, no write permission. Whether an existing directory's contents may be reused
    or replaced is the caller's rule (it knows what it wrote there). Returns ``path`` as a Path."""
    if str(path) == "":
        raise UserError(f"the directory for the {what} is empty; give a directory path")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file; the {what} needs a directory (choose another path)")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise UserError(f"{path}: {existing} is a file, not a directory; choose a path outside it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{path}: no permission to write in {existing}; choose another path")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path (same directory, same final suffix as ``path``, so that writers choosing
    a format by extension still work) to write; publish it on success."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as err:
        raise UserError(f"cannot write {path}: {_cause(err)}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates files readable by the owner only; give the result the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno not in _STORAGE_ERRORS:
            raise
        raise UserError(f"cannot write {path}: {_cause(err)}; nothing was written there") from None
    except Exception:
        # Some writers hide a full disk behind their own error (torch.save: "unexpected pos"); look
        # while the temporary file still takes its space.
        full = _disk_full(path.parent)
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise UserError(f"cannot write {path}: No space left on device; nothing was written there") from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a new empty directory beside ``path`` to fill; when the block completes it takes the
    place of ``path`` (a directory already there is renamed aside, the new one renamed in, the old one
    deleted), so readers find the old set of files or the new one, never a mix. On any exception the
    new directory is deleted and ``path`` is untouched. Only a crash between the two renames leaves
    ``path`` missing, with the old directory intact beside it as ``.<name>.<random>.old``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file; a directory is meant")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as err:
        raise UserError(f"cannot write {path}: {_cause(err)}") from None
    try:
        yield tmp
        umask = os.umask(0)  # mkdtemp's 0700 would survive the rename
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if path.exists():
            old = path.parent / f".{path.name}.{secrets.token_hex(4)}.old"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno not in _STORAGE_ERRORS:
            raise
        raise UserError(f"cannot write {path}: {_cause(err)}; nothing was written there") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# Errors of the destination's storage (full, read-only, no permission, failing), not of the writer.
_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def _disk_full(folder: Path) -> bool:
    """Whether the file system of ``folder`` has (next to) no space left for us (checked after a failure)."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # statvfs is POSIX only
        return False
    return stats.f_bavail * stats.f_frsize < 64 * 1024


def _cause(err: OSError) -> str:
    """The OS's reason without the path repeated (``No space left on device``)."""
    return err.strerror or str(err)


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
