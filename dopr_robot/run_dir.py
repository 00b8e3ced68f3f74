"""Whether an output directory may be resumed with the settings asked for: the settings saved there
against the asked ones, key by key, refused in one line that names what differs and what to do.

Training (``config.json``), a comparison (``compare_config.json``), a sweep (``sweep_config.json``)
and a DAgger run (``dagger_config.json``) each decide which keys may differ (a comparison may grow
its seeds, a moved run its ``out``); the reading, the comparison and the message are here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from dopr_robot.errors import UserError


def read_saved(path: Path) -> dict[str, Any]:
    """The JSON object of settings saved at ``path``; a damaged file is one line, not a traceback."""
    try:
        values = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(values, dict):
        raise UserError(f"{path} must hold a JSON object of settings, got {type(values).__name__}")
    return values


def _equal(key: str, saved: Any, asked: Any) -> bool:
    return saved == asked


def changed_settings(saved: Mapping[str, Any], asked: Mapping[str, Any], *, skip: Iterable[str] = (),
                     same: Callable[[str, Any, Any], bool] = _equal, values: bool = True) -> list[str]:
    """Each key whose saved value differs from the asked one, in the asked settings' order, as
    ``key (saved -> asked)`` (the key alone with ``values=False``). A key saved by another version
    of the toolkit, which this one does not know, differs too: this version cannot honour it."""
    skipped = set(skip)
    changed = []
    for key, value in asked.items():
        if key not in skipped and not same(key, saved.get(key), value):
            changed.append(f"{key} ({saved.get(key)!r} -> {value!r})" if values else key)
    for key in (k for k in saved if k not in asked and k not in skipped):
        changed.append(f"{key} (saved by another version; not a setting of this one)")
    return changed


def refuse_changes(changed: list[str], holds: str, fix: str) -> None:
    """One UserError line when anything changed: ``<holds> (changed: a, b); <fix>``."""
    if changed:
        raise UserError(f"{holds} (changed: {', '.join(changed)}); {fix}")
