"""Output paths: every writer checks its destination before the work, fails in one line, and leaves
either the complete file or nothing (no half file, no hidden temporary file)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dopr_robot.atomic import (
    atomic_directory,
    atomic_path,
    check_destination,
    check_directory_destination,
    write_text_atomic,
)
from dopr_robot.cli import main
from dopr_robot.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _deny_writes_in(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``folder`` reads as not writable (as a read-only directory does for a user who is not root)."""
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == folder.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


# -- the rule -------------------------------------------------------------------------------------------


def test_check_destination_refuses_each_bad_path_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a_file").write_text("keep")
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "ro").mkdir()
    _deny_writes_in(monkeypatch, tmp_path / "ro")
    cases = {
        "": "is empty",
        str(tmp_path / "a_dir"): "is a directory",
        str(tmp_path / "a_file" / "x.json"): "a_file is a file, not a directory",
        str(tmp_path / "a_file" / "deeper" / "x.json"): "a_file is a file, not a directory",
        str(tmp_path / "ro" / "x.json"): "no permission to write in",
        str(tmp_path / "ro" / "new" / "x.json"): "no permission to write in",
        str(tmp_path / "a_file"): "a_file exists and is not a result file; pass --overwrite to replace it",
    }
    for path, message in cases.items():
        with pytest.raises(UserError, match=message) as caught:
            check_destination(path, overwrite=False, what="result file", ours=lambda p: False)
        assert "\n" not in str(caught.value)
    assert (tmp_path / "a_file").read_text() == "keep"


def test_check_destination_allows_new_files_ours_and_overwrite(tmp_path: Path) -> None:
    (tmp_path / "mine.json").write_text("{}")
    assert check_destination(tmp_path / "new" / "x.json", overwrite=False, what="result file") == tmp_path / "new" / "x.json"
    assert check_destination(tmp_path / "mine.json", overwrite=False, what="result file", ours=lambda p: True)
    assert check_destination(tmp_path / "mine.json", overwrite=True, what="result file", ours=lambda p: False)
    with pytest.raises(UserError, match="exists; pass --overwrite"):  # no judge of ownership: every file needs it
        check_destination(tmp_path / "mine.json", overwrite=False, what="result file")
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_check_directory_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a_file").write_text("keep")
    (tmp_path / "ro").mkdir()
    _deny_writes_in(monkeypatch, tmp_path / "ro")
    assert check_directory_destination(tmp_path / "runs" / "r1", what="run directory") == tmp_path / "runs" / "r1"
    for path, message in {"": "is empty", str(tmp_path / "a_file"): "is a file; the run directory needs a directory",
                          str(tmp_path / "a_file" / "r1"): "a_file is a file, not a directory",
                          str(tmp_path / "ro" / "r1"): "no permission to write in"}.items():
        with pytest.raises(UserError, match=message):
            check_directory_destination(path, what="run directory")


def test_a_failed_write_is_one_line_and_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(UserError, match=r"cannot write .*result.json: No space left on device"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    # An error that is not the storage's is the writer's own: it passes through unchanged.
    with pytest.raises(FileNotFoundError), atomic_path(target):
        raise FileNotFoundError(errno.ENOENT, "an input the writer reads")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    with pytest.raises(UserError, match="a_dir is a directory"):
        (tmp_path / "a_dir").mkdir()
        write_text_atomic(tmp_path / "a_dir", "x")


def test_a_writer_that_hides_a_full_disk_behind_its_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reports a full disk as RuntimeError("unexpected pos ..."): with no space left that is
    the one line too; with space left the writer's error passes through."""
    target = tmp_path / "checkpoint.pt"

    def failing_writer():
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"part")
            raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 704 vs 598")

    with pytest.raises(RuntimeError, match="unexpected pos"):
        failing_writer()
    full = os.statvfs_result((4096, 4096, 1000, 0, 0, 100, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda folder: full)
    with pytest.raises(UserError, match="cannot write .*checkpoint.pt: No space left on device"):
        failing_writer()
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_swaps_whole_folders(tmp_path: Path) -> None:
    target = tmp_path / "expert"
    with atomic_directory(target) as folder:
        (folder / "a").write_text("1")
        (folder / "b").write_text("1")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a": "1", "b": "1"}
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as folder:
        (folder / "a").write_text("2")
        raise KeyboardInterrupt
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a": "1", "b": "1"}  # no mix of old and new
    with atomic_directory(target) as folder:
        (folder / "c").write_text("3")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"c": "3"}
    assert [p.name for p in tmp_path.iterdir()] == ["expert"]
    (tmp_path / "x.txt").write_text("keep")
    with pytest.raises(UserError, match="x.txt is a file"), atomic_directory(tmp_path / "x.txt"):
        pass


# -- collect --------------------------------------------------------------------------------------------


def _no_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    """A destination check must come before any episode is run: the expert fails the test if asked to act."""
    import envs

    class Refusing:
        def act(self, obs):
            raise AssertionError("an episode ran before the destination was checked")

    monkeypatch.setattr(envs, "make_expert", lambda task: Refusing())


def test_collect_refuses_bad_destinations_before_collecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "reach.hdf5").write_bytes(b"not demos")
    (tmp_path / "ro").mkdir()
    _deny_writes_in(monkeypatch, tmp_path / "ro")
    _no_collection(monkeypatch)
    for out, message in ((tmp_path / "reach.hdf5" / "x.hdf5", "reach.hdf5 is a file, not a directory"),
                         (tmp_path / "ro" / "x.hdf5", "no permission to write in")):
        assert main(["collect", "--task", "Reach-v0", "--episodes", "2", "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reach.hdf5", "ro"]
    assert list((tmp_path / "ro").iterdir()) == []


_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    # The file-size limit fails writes past 64 KiB the way a full disk does (the write returns an error;
    # the signal that would otherwise kill the process is ignored).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    from dopr_robot.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="RLIMIT_FSIZE as on Linux")
@pytest.mark.parametrize("existing", [False, True])
def test_collect_onto_a_full_disk_is_one_line_and_leaves_no_file(tmp_path: Path, existing: bool) -> None:
    out = tmp_path / "r.hdf5"
    if existing:
        out.write_bytes(b"the demonstrations already there")
    command = ["collect", "--task", "Reach-v0", "--episodes", "12", "--out", str(out), "--no-progress",
               "--threads", "1", *(["--overwrite"] if existing else [])]
    done = subprocess.run([sys.executable, "-c", _FULL_DISK, *command], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "cannot write" in done.stderr and "r.hdf5" in done.stderr, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == (["r.hdf5"] if existing else [])  # no hidden temporary file
    if existing:
        assert out.read_bytes() == b"the demonstrations already there"
