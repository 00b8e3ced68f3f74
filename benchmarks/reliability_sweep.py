"""Rerun the CLI reliability sweep: bad inputs, clashing outputs and faults, each checked for one clear
line, exit status 2 (130 for Ctrl-C), no traceback, and no file changed that the command did not own.

    python benchmarks/reliability_sweep.py [--keep DIR] [--only D1,T3]

Prints one row per case (id, exit status, what was expected, the first line of stderr) and a final
count; exits 1 if any case misbehaved. Runs every command with one thread on the CPU, in a scratch
directory (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DOPR = [sys.executable, "-m", "dopr_robot"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FAST = "--threads 1 --device cpu"
GRID = f"--tasks Reach-v0 --seeds 1 --steps 20 --batch-size 32 --eval-episodes 2 --demo-episodes 3 {FAST} --no-progress"


@dataclass
class Outcome:
    case: str
    ok: bool
    rc: int
    expected: str
    line: str


def run(command: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(DOPR + shlex.split(command), cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256("".join(digest(p) for p in sorted(path.rglob("*")) if p.is_file()).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def message_lines(stderr: str) -> list[str]:
    """stderr's lines less progress bars and argparse's usage lines (argparse errors are usage + one line)."""
    lines, usage = [], False
    for line in stderr.splitlines():
        usage = line.startswith("usage:") or (usage and line.startswith(" "))
        if line.strip() and not usage and "%|" not in line:
            lines.append(line)
    return lines


def refused(case: str, command: str, cwd: Path, keep: tuple[str, ...] = (), absent: tuple[str, ...] = (),
            match: str = "") -> Outcome:
    """``command`` must exit 2 with one stderr line (``match`` in it), leave ``keep`` unchanged and
    ``absent`` absent."""
    before = {name: digest(cwd / name) for name in keep}
    result = run(command, cwd)
    lines = message_lines(result.stderr)
    line = lines[-1] if lines else ""
    ok = (result.returncode == 2 and "Traceback" not in result.stderr and len(lines) == 1 and match in line
          and all(digest(cwd / name) == before[name] for name in keep)
          and not any((cwd / name).exists() for name in absent))
    return Outcome(case, ok, result.returncode, f"exit 2, one line{f' with {match!r}' if match else ''}", line)


def succeeds(case: str, command: str, cwd: Path) -> Outcome:
    result = run(command, cwd)
    tail = (result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or [""])[-1]
    return Outcome(case, result.returncode == 0, result.returncode, "exit 0", tail)


def setup(root: Path) -> None:
    for command in (f"collect --task Reach-v0 --episodes 12 --out reach.hdf5 --threads 1",
                    f"collect --task Push-v0 --episodes 3 --out push.hdf5 --threads 1",
                    f"train --data reach.hdf5 --out run_base --steps 50 --batch-size 64 {FAST} --no-progress"):
        result = run(command, root)
        if result.returncode:
            raise SystemExit(f"setup failed: {command}\n{result.stderr}")
    (root / "x.txt").write_text("hi\n")
    (root / "adir").mkdir()


def start_then_signal(command: str, cwd: Path, ready: Callable[[], bool], sig: int, group: bool) -> subprocess.Popen:
    # Ctrl-C's default action in the child (a sweep started in the background of a script would pass
    # SIGINT on as ignored, and Python then installs no KeyboardInterrupt handler).
    process = subprocess.Popen(DOPR + shlex.split(command), cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not ready() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    os.killpg(process.pid, sig) if group else os.kill(process.pid, sig)
    return process


def data_and_overwrites(root: Path) -> list[Outcome]:
    shutil.copy(root / "reach.hdf5", root / "demos_copy.hdf5")
    shutil.copy(root / "run_base/checkpoint.pt", root / "ckcopy.pt")
    (root / "u3/data").mkdir(parents=True)
    (root / "u3/results.csv").write_text("t\n")
    (root / "mine.png").write_bytes(b"a picture of the user's\n")
    (root / "mine.mp4").write_bytes(b"a video of the user's\n")
    eval_args = f"--checkpoint run_base --episodes 2 {FAST} --no-progress"
    return [
        refused("D1 eval --out an HDF5 file", f"eval {eval_args} --out demos_copy.hdf5", root, keep=("demos_copy.hdf5",)),
        refused("D1 eval --out a checkpoint", f"eval {eval_args} --out ckcopy.pt", root, keep=("ckcopy.pt",)),
        refused("D1 eval --plot an existing file", f"eval {eval_args} --out e1.json --plot mine.png", root,
                keep=("mine.png",), absent=("e1.json",)),
        refused("D1 video --out an existing file", f"video --checkpoint run_base --episodes 1 --out mine.mp4 {FAST}",
                root, keep=("mine.mp4",)),
        refused("D3 compare into a foreign directory", f"compare --out u3 {GRID}", root, keep=("u3",), absent=("u3/runs",)),
        refused("D3 compare --out ''", f"compare --out '' {GRID}", root),
        refused("D4 damping given twice", f"compare --out d4 --optimizers dopr-adamw --damping 0.02 "
                f"--optimizer-options '{{\"damping\": 0.5}}' {GRID}", root, absent=("d4",)),
        refused("D8 a late check writes nothing", f"compare --out c8 --demo-noise -1 {GRID}", root, absent=("c8",)),
        succeeds("D8 the corrected command runs", f"compare --out c8 --demo-noise 0.1 {GRID}", root),
        refused("D10 another task's demos", f"compare --out c10 --data '{{\"Reach-v0\": \"push.hdf5\"}}' {GRID}", root,
                absent=("c10/runs",)),
        refused("D11 an unreachable Ray address", f"compare --out cr --ray 127.0.0.1:1 {GRID}", root, absent=("cr/data",)),
        refused("D14 --lr inf", f"train --data reach.hdf5 --out tr_p9 --steps 20 --batch-size 32 --lr inf {FAST}", root,
                absent=("tr_p9",)),
        refused("T3 a float for an integer option", f"train --data reach.hdf5 --out t3 --steps 20 "
                f"--policy-options '{{\"width\": 1.5}}' {FAST}", root, absent=("t3",)),
        refused("T5 --config a directory", f"train --config adir --data reach.hdf5 --out t5 {FAST}", root, absent=("t5",)),
        refused("T6 --data with a number", f"compare --out c6 --data '{{\"Reach-v0\": 5}}' {GRID}", root, absent=("c6",)),
        refused("T4 optimizer-demo --damping -1", "optimizer-demo --damping -1 --max-steps 30 --threads 1", root),
        refused("T2 video on a task of another size", f"video --checkpoint run_base --out v3.mp4 --episodes 1 "
                f"--task Push-v0 {FAST}", root, absent=("v3.mp4",)),
        refused("T7 expert train --threads 0", "expert train --task Hopper-v5 --algo sac --steps 100 --out e7 --threads 0",
                root, absent=("e7",)),
        refused("T7 expert train --hp learning_rate=abc", "expert train --task Hopper-v5 --algo sac --steps 100 --out e7 "
                "--hp learning_rate=abc", root, absent=("e7",)),
        refused("T7 expert eval --seed -1", "expert eval --task Hopper-v5 --episodes 1 --seed -1", root),
    ]


def experts(root: Path) -> list[Outcome]:
    """D2: an export onto an existing expert (a copy of the shipped Hopper-v5 one), and with no --to."""
    import envs.experts.sb3 as sb3_weights

    shutil.copytree(Path(sb3_weights.__file__).parent / "weights" / "Hopper-v5", root / "hopper_copy")
    result = run("expert train --task Hopper-v5 --algo sac --steps 100 --out ex14 --threads 1", root)
    if result.returncode:
        return [Outcome("D2 setup: expert train", False, result.returncode, "exit 0", result.stderr.strip()[-140:])]
    shipped = Path(sb3_weights.__file__).parent / "weights" / "Hopper-v5"
    before = digest(shipped)
    found = [refused("D2 export onto an existing expert", "expert export --run ex14 --which latest --episodes 1 "
                     "--to hopper_copy", root, keep=("hopper_copy",))]
    outcome = refused("D2 export with no --to (the shipped one)", "expert export --run ex14 --which latest --episodes 1",
                      root)
    outcome.ok = outcome.ok and digest(shipped) == before
    return found + [outcome]


def output_paths(root: Path) -> list[Outcome]:
    cases = [("collect", "collect --task Reach-v0 --episodes 2 --out {} --threads 1"),
             ("train", f"train --data reach.hdf5 --out {{}} --steps 20 {FAST}"),
             ("eval", f"eval --checkpoint run_base --episodes 2 --out {{}} {FAST}"),
             ("compare", f"compare --out {{}} {GRID}")]
    found = []
    for name, command in cases:
        found.append(refused(f"T1 {name} under a file", command.format("x.txt/out"), root, keep=("x.txt",)))
    found.append(refused("T1 train --out a file", f"train --data reach.hdf5 --out x.txt --steps 20 {FAST}", root,
                         keep=("x.txt",)))
    found.append(refused("T1 eval --out a directory", f"eval --checkpoint run_base --episodes 2 --out adir {FAST}", root))
    return found


def resumes_and_cells(root: Path) -> list[Outcome]:
    found = []
    shutil.copy(root / "reach.hdf5", root / "dc.hdf5")
    process = start_then_signal(f"train --data dc.hdf5 --out run_dc --steps 4000 --checkpoint-every 50 {FAST} --no-progress",
                                root, lambda: (root / "run_dc/checkpoint.pt").exists(), signal.SIGKILL, group=True)
    process.wait()
    run("collect --task Reach-v0 --episodes 12 --seed 500 --out dc.hdf5 --overwrite --threads 1", root)
    found.append(refused("D5 resume on replaced data", f"train --resume run_dc {FAST}", root, keep=("run_dc",)))
    result = run(f"train --resume run_base {FAST}", root)
    found.append(Outcome("D13 resume a finished run", result.returncode == 0 and "nan" not in result.stdout + result.stderr,
                         result.returncode, "exit 0, real numbers", (result.stdout.strip().splitlines() or [""])[-1]))
    found.append(refused("D13 --resume with another --out", f"train --resume run_base --out other {FAST}", root,
                         absent=("other",)))
    found.append(succeeds("grid for D9/D12", f"compare --out grid {GRID}", root))
    cell = "grid/runs/Reach-v0/adamw/seed0"
    found.append(refused("D9 eval over a grid cell's eval.json", f"eval --checkpoint {cell} --episodes 2 --seed 777 {FAST}",
                         root, keep=(f"{cell}/eval.json",)))
    (root / f"{cell}/eval.json").unlink()
    (root / f"{cell}/checkpoint.pt").write_bytes((root / f"{cell}/checkpoint.pt").read_bytes()[:1000])
    result = run(f"compare --out grid {GRID}", root)
    line = (result.stderr.strip().splitlines() or [""])[-1]
    found.append(Outcome("D12 a corrupt cell names what to delete", result.returncode == 2 and "delete" in line,
                         result.returncode, "exit 2, says what to delete", line))
    shutil.rmtree(root / cell)
    found.append(succeeds("D12 after deleting it, the same command", f"compare --out grid {GRID}", root))
    return found


def faults(root: Path) -> list[Outcome]:
    found = []
    process = start_then_signal(f"train --data reach.hdf5 --out run_int --steps 4000 --checkpoint-every 50 {FAST}",
                                root, lambda: (root / "run_int/checkpoint.pt").exists(), signal.SIGINT, group=True)
    _, stderr = process.communicate(timeout=60)
    lines = message_lines(stderr)
    found.append(Outcome("T8 Ctrl-C during train", process.returncode == 130 and "Traceback" not in stderr
                         and "resume" in (lines[-1] if lines else ""), process.returncode, "exit 130, how to resume",
                         lines[-1] if lines else ""))
    pipe = subprocess.run(f"{shlex.join(DOPR)} inspect reach.hdf5 | head -1", shell=True, cwd=root, env=ENV,
                          capture_output=True, text=True)
    found.append(Outcome("T9 inspect | head -1", "Traceback" not in pipe.stderr and "BrokenPipe" not in pipe.stderr,
                         0, "no traceback", pipe.stderr.strip()[:100]))
    marker = root / "d6_started"
    process = start_then_signal(f"compare --out d6 --optimizers adamw,dopr-adamw --seeds 2 --steps 2000 "
                                f"--batch-size 32 --eval-episodes 2 --demo-episodes 3 --workers 2 --no-progress --device cpu",
                                root, lambda: any((root / "d6/runs").rglob("config.json")) if (root / "d6/runs").exists()
                                else False, signal.SIGKILL, group=False)
    process.wait()
    time.sleep(5)
    left = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True).stdout.split()
    found.append(Outcome("D6 workers die with their parent", not left, 0, "no process left", f"left: {left}"))
    for pid in left:
        os.kill(int(pid), signal.SIGKILL)
    marker.unlink(missing_ok=True)
    found.append(_full_disk(root))
    return found


def _full_disk(root: Path) -> Outcome:
    """D7: collect with a 64 KiB file-size limit (a full disk as the writer sees it)."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    (root / "full").mkdir()
    result = subprocess.run(DOPR + shlex.split("collect --task Reach-v0 --episodes 12 --out full/r.hdf5 --threads 1"),
                            cwd=root, env=ENV, capture_output=True, text=True, preexec_fn=limit)
    lines = message_lines(result.stderr)
    ok = result.returncode == 2 and len(lines) == 1 and not any((root / "full").iterdir())
    return Outcome("D7 collect onto a full disk", ok, result.returncode, "exit 2, one line, nothing left",
                   lines[-1] if lines else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, default=None, help="scratch directory to use and keep")
    parser.add_argument("--only", default="", help="comma-separated case ids (e.g. D1,T3): run only those")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="dopr-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    setup(root)
    outcomes = []
    for group in (data_and_overwrites, experts, output_paths, resumes_and_cells, faults):
        outcomes += group(root)
    wanted = {item.strip() for item in args.only.split(",") if item.strip()}
    if wanted:
        outcomes = [o for o in outcomes if o.case.split()[0] in wanted]
    for o in outcomes:
        print(f"{'ok ' if o.ok else 'BAD'} {o.case:44s} rc={o.rc:<4} {o.expected:34s} | {o.line[:140]}")
    bad = sum(not o.ok for o in outcomes)
    print(json.dumps({"cases": len(outcomes), "bad": bad, "seconds": round(time.perf_counter() - started, 1)}))
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
