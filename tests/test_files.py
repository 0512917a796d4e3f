from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flowfit import files
from flowfit.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src"

# Child processes import flowfit.files without running flowfit/__init__.py (which imports torch and
# takes seconds): a bare package object pointing at src/flowfit stands in for it.
BOOTSTRAP = f"""
import sys, types
package = types.ModuleType("flowfit")
package.__path__ = [{str(SRC / "flowfit")!r}]
sys.modules["flowfit"] = package
from flowfit import files
from flowfit.errors import InputError
"""


def start_python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", BOOTSTRAP + code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def temporaries(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if files.TEMPORARY_MARK in name)


@pytest.fixture
def null_device(tmp_path: Path) -> Path:
    """A character device to write to: a private node of the null device (1, 3) where we may create one
    (as root), so that a bug can never replace the machine's /dev/null; otherwise /dev/null itself,
    which a user without root cannot replace anyway."""
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        node.open("w").close()  # a filesystem mounted nodev refuses to open it
    except OSError:
        return Path("/dev/null")
    return node


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


# --- check_output / open_output ------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_dev_null_is_streamed_and_stays_a_device(null_device: Path, force: bool) -> None:
    files.check_output(null_device, force)
    with files.open_output(null_device, force=force) as handle:
        handle.write("x,y\n1,2\n")
    with files.open_output(null_device, force=force, binary=True) as handle:
        handle.write(b"\x00\x01")
    assert stat.S_ISCHR(os.stat(null_device).st_mode)
    assert os.stat(null_device).st_rdev == os.makedev(1, 3)
    assert temporaries(null_device.parent) == []


def test_fifo_is_streamed_to_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    with files.open_output(fifo, force=False) as handle:
        handle.write("a,b\n1,2\n")
    reader.join(timeout=5)
    assert received == [b"a,b\n1,2\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["pipe"]


def test_dash_is_stdout_and_is_not_closed(capsys: pytest.CaptureFixture[str]) -> None:
    files.check_output("-", force=False)
    with files.open_output("-", force=False) as handle:
        handle.write("to stdout\n")
    assert not sys.stdout.closed
    assert capsys.readouterr().out == "to stdout\n"


def test_dash_binary_is_stdout_buffer(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    with files.open_output("-", force=False, binary=True) as handle:
        handle.write(b"\x00bytes")
    assert capsysbinary.readouterr().out == b"\x00bytes"


@pytest.mark.parametrize("force", [False, True])
def test_directory_target_is_refused(tmp_path: Path, force: bool) -> None:
    target = tmp_path / "M"
    target.mkdir()
    with pytest.raises(InputError, match=re.escape(f"{target} is a directory; give a file name")):
        files.check_output(target, force)
    with pytest.raises(InputError, match=re.escape(str(target))), files.open_output(target, force):
        pytest.fail("the block must not run")
    with pytest.raises(InputError, match=re.escape(str(target))), files.atomic_path(target):
        pytest.fail("the block must not run")
    assert target.is_dir()
    assert os.listdir(tmp_path) == ["M"]


@pytest.mark.parametrize("below", ["x.csv", "sub/x.csv"])
def test_parent_that_is_a_file_is_refused(tmp_path: Path, below: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("data")
    target = afile / below
    message = re.escape(f"{afile} is not a directory")
    with pytest.raises(InputError, match=message):
        files.check_output(target, force=True)
    with pytest.raises(InputError, match=message), files.open_output(target, force=True):
        pytest.fail("the block must not run")
    with pytest.raises(InputError, match=message), files.atomic_path(target):
        pytest.fail("the block must not run")
    with pytest.raises(InputError, match=message), files.replace_directory(target, force=True):
        pytest.fail("the block must not run")
    with pytest.raises(InputError, match=message), files.lock(target):
        pytest.fail("the block must not run")
    assert afile.read_text() == "data"
    assert os.listdir(tmp_path) == ["afile"]


def test_check_output_writes_nothing(tmp_path: Path) -> None:
    files.check_output(tmp_path / "new" / "dir" / "x.csv", force=False)
    assert os.listdir(tmp_path) == []


def test_existing_file_needs_force(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old")
    expected = re.escape(f"{target} already exists; pass --force to replace it")
    with pytest.raises(InputError, match=expected):
        files.check_output(target, force=False)
    with pytest.raises(InputError, match=expected), files.open_output(target, force=False):
        pytest.fail("the block must not run")
    assert target.read_text() == "old"
    with files.open_output(target, force=True) as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_new_file_and_parents_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.csv"
    with files.open_output(target, force=False) as handle:
        handle.write("é\n")
    assert target.read_text(encoding="utf-8") == "é\n"
    with files.open_output(tmp_path / "bytes.bin", force=False, binary=True) as handle:
        handle.write(b"\xff")
    assert (tmp_path / "bytes.bin").read_bytes() == b"\xff"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_exception_in_block_keeps_old_content_and_no_temporary(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(error), files.open_output(target, force=True) as handle:
        handle.write("half")
        assert len(temporaries(tmp_path)) == 1  # the bytes really go to a temporary
        raise error
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.csv"]
    with pytest.raises(error), files.open_output(tmp_path / "new.csv", force=False) as handle:
        raise error
    assert os.listdir(tmp_path) == ["out.csv"]


def test_permissions_are_not_0600(tmp_path: Path, umask_022: None) -> None:
    with files.open_output(tmp_path / "a.csv", force=False) as handle:
        handle.write("x")
    files.write_text(tmp_path / "b.txt", "x")
    with files.atomic_path(tmp_path / "c.png") as temporary:
        temporary.write_bytes(b"x")
    with files.replace_directory(tmp_path / "run", force=False) as directory:
        (directory / "f").write_text("x")
    for name in ("a.csv", "b.txt", "c.png"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
    assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o755


# --- atomic_path and temporaries -----------------------------------------------------------------


def test_atomic_path_names_keep_the_suffix_and_replace_on_success(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with files.atomic_path(target) as temporary:
        assert temporary.parent == tmp_path
        assert re.fullmatch(rf"\.plot\.png\.flowfit-tmp-{os.getpid()}-[a-z0-9_]+\.png", temporary.name)
        assert target.read_bytes() == b"old"
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["plot.png"]


def test_a_symbolic_link_is_followed_and_kept(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "x.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    with files.open_output(link, force=True) as handle:
        handle.write("new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(os.listdir(target.parent)) == ["x.csv"]


def test_atomic_path_failure_removes_temporary(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), files.atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["plot.png"]


def test_atomic_path_refuses_a_device(null_device: Path) -> None:
    with (
        pytest.raises(InputError, match=re.escape(f"{null_device} is not a regular file")),
        files.atomic_path(null_device),
    ):
        pytest.fail("the block must not run")
    assert stat.S_ISCHR(os.stat(null_device).st_mode)


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead, alive = dead_pid(), os.getpid()
    stale_file = tmp_path / f".out.csv.flowfit-tmp-{dead}-abcd1234.csv"
    stale_dir = tmp_path / f".out.csv.flowfit-tmp-{dead}-efgh5678"
    live = tmp_path / f".out.csv.flowfit-tmp-{alive}-abcd1234.csv"
    other_target = tmp_path / f".other.csv.flowfit-tmp-{dead}-abcd1234.csv"
    unrelated = tmp_path / f".out.csv.backup-{dead}-abcd1234.csv"
    stale_file.write_text("killed")
    stale_dir.mkdir()
    (stale_dir / "inside").write_text("killed")
    for keep in (live, other_target, unrelated):
        keep.write_text("keep")
    files.write_text(tmp_path / "out.csv", "done")
    assert sorted(os.listdir(tmp_path)) == sorted(["out.csv", live.name, other_target.name, unrelated.name])


def test_stale_temporary_directories_are_removed_by_replace_directory(tmp_path: Path) -> None:
    stale = tmp_path / f".run.flowfit-tmp-{dead_pid()}-abcd1234"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"killed")
    live = tmp_path / f".run.flowfit-tmp-{os.getpid()}-abcd1234"
    live.mkdir()
    with files.replace_directory(tmp_path / "run", force=False):
        pass
    assert sorted(os.listdir(tmp_path)) == sorted(["run", live.name])


# --- JSON ----------------------------------------------------------------------------------------


def test_write_json_is_strict(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    files.write_json(
        target, {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": (math.nan, 2), "d": {"e": -math.inf}}
    )
    text = target.read_text()

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    value = json.loads(text, parse_constant=refuse)
    expected = {"a": None, "b": [None, None, 1.5], "c": [None, 2], "d": {"e": None}}
    assert value == expected
    assert text == json.dumps(expected, indent=2) + "\n"


# --- replace_directory ---------------------------------------------------------------------------


def make_run(directory: Path, marker: str) -> None:
    """A flowfit run directory whose metrics say ``marker``."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"format": "flowfit", "format_version": 1}))
    (directory / "metrics.json").write_text(marker)


def test_replace_directory_creates_an_absent_one(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "run"
    with files.replace_directory(target, force=False) as directory:
        assert directory.parent == target.parent
        assert re.fullmatch(rf"\.run\.flowfit-tmp-{os.getpid()}-[a-z0-9_]+", directory.name)
        assert list(directory.iterdir()) == []
        (directory / "model").write_text("new")
    assert (target / "model").read_text() == "new"
    assert os.listdir(target.parent) == ["run"]


def test_replace_directory_needs_force(tmp_path: Path) -> None:
    target = tmp_path / "run"
    make_run(target, "old")
    with (
        pytest.raises(InputError, match=re.escape(f"{target} already exists; pass --force to replace it")),
        files.replace_directory(target, force=False),
    ):
        pytest.fail("the block must not run")
    assert (target / "metrics.json").read_text() == "old"
    assert os.listdir(tmp_path) == ["run"]


def test_replace_directory_replaces_a_flowfit_run(tmp_path: Path) -> None:
    target = tmp_path / "run"
    make_run(target, "old")
    with files.replace_directory(target, force=True) as directory:
        assert (target / "metrics.json").read_text() == "old"  # the old run stays until the new one is complete
        (directory / "new").write_text("new")
    assert sorted(os.listdir(target)) == ["new"]
    assert os.listdir(tmp_path) == ["run"]


def test_replace_directory_replaces_an_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.mkdir()
    with files.replace_directory(target, force=True) as directory:
        (directory / "new").write_text("new")
    assert os.listdir(target) == ["new"]
    assert os.listdir(tmp_path) == ["run"]


@pytest.mark.parametrize(
    "config",
    [None, "not json {", json.dumps(["format", "flowfit"]), json.dumps({"format": "other"})],
    ids=["no-config", "broken-config", "list-config", "other-format"],
)
def test_replace_directory_refuses_other_directories_even_with_force(tmp_path: Path, config: str | None) -> None:
    target = tmp_path / "home"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    if config is not None:
        (target / "config.json").write_text(config)
    assert not files.is_flowfit_run(target)
    with (
        pytest.raises(InputError, match=re.escape(f"{target} is not a flowfit run and will not be replaced")),
        files.replace_directory(target, force=True),
    ):
        pytest.fail("the block must not run")
    assert (target / "thesis.tex").read_text() == "precious"
    assert os.listdir(tmp_path) == ["home"]


def test_replace_directory_refuses_a_file_even_with_force(tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.write_text("a file")
    with pytest.raises(InputError, match="is not a flowfit run"), files.replace_directory(target, force=True):
        pytest.fail("the block must not run")
    assert target.read_text() == "a file"


def test_is_flowfit_run(tmp_path: Path) -> None:
    make_run(tmp_path / "run", "x")
    assert files.is_flowfit_run(tmp_path / "run")
    assert not files.is_flowfit_run(tmp_path / "absent")
    assert not files.is_flowfit_run(tmp_path / "run" / "x")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_replace_directory_failure_cleans_up(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "run"
    make_run(target, "old")
    with pytest.raises(error), files.replace_directory(target, force=True) as directory:
        (directory / "half").write_text("half")
        raise error
    assert (
        sorted(os.listdir(target)) == ["config.json", "metrics.json"] and (target / "metrics.json").read_text() == "old"
    )
    assert os.listdir(tmp_path) == ["run"]


def test_replace_directory_rechecks_before_the_swap(tmp_path: Path) -> None:
    target = tmp_path / "run"
    with pytest.raises(InputError, match="already exists"), files.replace_directory(target, force=False) as directory:
        (directory / "new").write_text("new")
        make_run(target, "concurrent")  # another run finished first
    assert (target / "metrics.json").read_text() == "concurrent"
    assert os.listdir(tmp_path) == ["run"]


# --- lock ----------------------------------------------------------------------------------------

HOLD_LOCK = """
target = sys.argv[1]
with files.lock(target):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def start_holder(target: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", BOOTSTRAP + HOLD_LOCK, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    line = holder.stdout.readline()
    assert line == "locked\n", holder.stderr.read() if holder.stderr else line
    return holder


def test_lock_excludes_another_process_until_released(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "run"
    holder = start_holder(target)
    try:
        expected = f"another flowfit process (pid {holder.pid}) is writing {target}; wait for it to finish"
        with pytest.raises(InputError, match=re.escape(expected)), files.lock(target):
            pytest.fail("two processes hold the lock")
    finally:
        holder.communicate("\n", timeout=10)
    assert holder.returncode == 0
    assert os.listdir(target.parent) == []  # the lock file is removed on release
    with files.lock(target):
        assert (target.parent / ".run.lock").read_text() == f"{os.getpid()}\n"
    assert os.listdir(target.parent) == []


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    target = tmp_path / "run"
    holder = start_holder(target)
    holder.kill()
    holder.communicate(timeout=10)
    assert holder.returncode == -signal.SIGKILL
    assert (tmp_path / ".run.lock").exists()  # SIGKILL leaves the file, but not the lock
    with files.lock(target):
        pass
    assert os.listdir(tmp_path) == []


def test_lock_is_exclusive_within_a_process_too(tmp_path: Path) -> None:
    target = tmp_path / "run"
    with files.lock(target), pytest.raises(InputError, match=f"pid {os.getpid()}"), files.lock(target):
        pytest.fail("the lock was taken twice")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("moment", ["after-locking", "while-blocked"])
def test_lock_handles_the_unlink_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str) -> None:
    # A holder unlinks the lock file on release while a contender may already have it open. Make the
    # holder release exactly inside the contender's flock call: right after it locked the now-unlinked
    # file (a lock that must not count), or right after it found the file busy (it must try again).
    target = tmp_path / "run"
    holder = contextlib.ExitStack()
    holder.enter_context(files.lock(target))
    real_flock = fcntl.flock

    def flock_racing_the_holder(fd: int, operation: int) -> None:
        try:
            if moment == "while-blocked":
                real_flock(fd, operation)
        finally:
            holder.close()  # idempotent: only the first call releases
        if moment == "after-locking":
            real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_racing_the_holder)
    with files.lock(target):
        monkeypatch.setattr(fcntl, "flock", real_flock)
        assert (tmp_path / ".run.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(InputError, match=f"pid {os.getpid()}"), files.lock(target):
            pytest.fail("two holders at once")
    assert os.listdir(tmp_path) == []


# --- terminate_gracefully ------------------------------------------------------------------------

WRITE_UNTIL_TERMINATED = """
import time
with files.terminate_gracefully(), files.open_output(sys.argv[1], force=False) as handle:
    handle.write("partial")
    handle.flush()
    print("inside", flush=True)
    time.sleep(30)
"""


def test_sigterm_removes_the_temporary_and_exits_nonzero(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    child = subprocess.Popen(
        [sys.executable, "-c", BOOTSTRAP + WRITE_UNTIL_TERMINATED, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == "inside\n"
        assert len(temporaries(tmp_path)) == 1
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert os.listdir(tmp_path) == []


def test_terminate_gracefully_raises_in_process_and_restores_the_handler() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), files.terminate_gracefully():
        assert signal.getsignal(signal.SIGTERM) is not previous
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
        pytest.fail("SIGTERM did not raise")
    assert signal.getsignal(signal.SIGTERM) is previous


def test_terminate_gracefully_does_nothing_outside_the_main_thread() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def worker() -> None:
        with files.terminate_gracefully():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=5)
    assert seen == [previous]


def test_module_imports_only_the_standard_library() -> None:
    check = "assert not {'torch', 'numpy'} & set(sys.modules), sorted(sys.modules)"
    child = start_python(check)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 0, stderr


def test_a_run_holding_files_flowfit_did_not_write_is_not_replaced(tmp_path: Path) -> None:
    """``flowfit density --out runs/x/scores.csv``, then ``train --out runs/x --force``: the
    scores were deleted with the old run."""
    target = tmp_path / "run"
    make_run(target, "old")
    (target / "scores.csv").write_text("precious")
    with pytest.raises(InputError, match=r"holds files flowfit did not write \(scores.csv\)"):
        files.check_directory(target, force=True)
    with pytest.raises(InputError, match="did not write"), files.replace_directory(target, force=True):
        pytest.fail("the block must not run")
    assert (target / "scores.csv").read_text() == "precious"
