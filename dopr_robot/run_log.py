"""A run's ``metrics.jsonl``: one JSON object per line, each with the training ``step`` it belongs to.

The one writer (:class:`MetricsLog`, used by training) and the one reader (:func:`read_metrics`, used
by resumes, evaluation records and reports). A run killed while it wrote a line leaves that line cut:
the reader skips it, and a resume drops it with every line logged after its checkpoint
(:func:`truncate_metrics`). A line that does not parse anywhere else is damage the user must hear of.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dopr_robot.atomic import write_text_atomic
from dopr_robot.errors import UserError

METRICS_NAME = "metrics.jsonl"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of ``path`` in order (none when the file does not exist yet)."""
    return [record for _, record in _records(Path(path))]


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records logged at or before ``step`` (the checkpoint a resumed run restarts from),
    byte for byte, and drop the rest, a line cut by a kill included; the file is replaced atomically."""
    path = Path(path)
    if path.exists():
        write_text_atomic(path, "".join(line + "\n" for line, record in _records(path) if record["step"] <= step))


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, record)`` for each line of ``path``; a last line cut short by a kill is left out."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: the write was cut short
                continue
            raise UserError(f"{path} line {number} is not valid JSON ({err.msg}); the run's log is damaged: "
                            "delete that line, or start a new run directory") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise UserError(f"{path} line {number} is not a metrics record (a JSON object with an integer "
                            f"\"step\"): {line[:80]}")
        out.append((line, record))
    return out


class MetricsLog:
    """Appends to ``run_dir/metrics.jsonl`` (flushed per line), and to TensorBoard when it is installed.

    ``enabled=False`` (ranks other than 0 under torchrun) makes every call a no-op.
    """

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.file = open(Path(run_dir) / METRICS_NAME, "a") if enabled else None
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tensorboard = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                pass

    def write(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
