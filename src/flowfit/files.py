"""Writing flowfit's outputs safely: CSV files, pictures, model and run directories.

The rules, in one place:

* An output is never half-written. Bytes go to a temporary beside the target, which is renamed
  over the target (``os.replace``) only once the writer finished without an exception, including
  ``KeyboardInterrupt``, ``SystemExit`` and, inside :func:`terminate_gracefully`, SIGTERM. On failure
  the temporary is removed and the target is left as it was.
* An output is never silently replaced. An existing file needs ``force``; an existing directory is
  replaced only with ``force`` and only when it is empty or a flowfit run (:func:`is_flowfit_run`)
  that holds nothing but what flowfit writes there (:data:`RUN_ENTRIES`).
* Only regular files are replaced. ``-`` means standard output; a character device (``/dev/null``)
  or a named pipe is written to as a stream and never replaced; a directory, a socket or a block
  device is refused.
* Temporaries are named ``.{name}.flowfit-tmp-{pid}-{random}{suffix}``. A run that is killed
  (SIGKILL, power loss) leaves its temporary behind; the next write of the same target removes the
  temporaries whose process ``pid`` no longer runs. This assumes that every process writing into
  the directory runs on this machine (in this process namespace).
* Two processes writing the same run directory are kept apart by :func:`lock`.

Every error a user can cause is an :class:`~flowfit.errors.InputError` whose message names the path
and says what to do. This module imports only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from flowfit.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: lock() does no locking there
    fcntl = None  # type: ignore[assignment]

STDOUT = "-"
TEMPORARY_MARK = ".flowfit-tmp-"
CONFIG = "config.json"
#: What a flowfit run directory holds (the model, the metrics, the pictures, TensorBoard's
#: events): ``--force`` replaces a run only when it holds nothing else.
RUN_ENTRIES = frozenset(
    {"model.safetensors", CONFIG, "metrics.json", "history.csv", "tensorboard"}
    | {"samples.png", "density.png", "layers.png", "flow.gif", "loss.png", "loglik.png"}
)


# --- small helpers -------------------------------------------------------------------------------


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` can only be read
    by setting it, which briefly affects files that other threads create)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)  # restrictive while it is being read: a file made meanwhile is private, not public
    os.umask(mask)
    return mask


def _temporary_prefix(path: Path) -> str:
    """``.{name}.flowfit-tmp-{pid}-``: tempfile appends the random part (and the suffix)."""
    return f".{path.name}{TEMPORARY_MARK}{os.getpid()}-"


def _is_running(pid: int) -> bool:
    """Whether process ``pid`` exists. When unsure (no permission to signal it, Windows, where
    ``os.kill(pid, 0)`` would send CTRL_C), answer yes: a live process's temporary is never removed."""
    if sys.platform == "win32" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):  # no process can have such a number
        return False
    except OSError:  # PermissionError: it exists but belongs to someone else
        return True
    return True


def _remove(path: str | Path) -> None:
    """Remove a file or a directory tree; one already gone is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_stale_temporaries(path: str | Path) -> None:
    """Remove the temporaries of ``path`` (files or directories) left by processes that no longer run.

    Only names of the exact form ``.{name}.flowfit-tmp-{pid}-{random}`` (optionally followed by the
    target's suffix) in the target's directory are considered, so other files are never touched.
    Temporaries of running processes, this one included, are kept.
    """
    path = Path(path)
    pattern = re.compile(
        re.escape(f".{path.name}{TEMPORARY_MARK}") + r"(\d+)-[A-Za-z0-9_]+" + f"(?:{re.escape(path.suffix)})?"
    )
    try:
        entries = os.listdir(path.parent)
    except OSError:  # no directory yet, or not readable: nothing we can clean
        return
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match and not _is_running(int(match.group(1))):
            with contextlib.suppress(OSError):
                _remove(path.parent / entry)


def _check_parents(path: Path) -> None:
    """Refuse a path below something that exists and is not a directory (``afile/x.csv``)."""
    for ancestor in path.parents:
        if ancestor.is_dir():
            return
        if os.path.lexists(ancestor):
            raise InputError(f"{ancestor} is not a directory, so {path} cannot be written; choose another --out")


def _file_kind(path: Path) -> str:
    """``"absent"``, ``"regular"``, ``"directory"``, ``"stream"`` (character device or named pipe) or
    ``"other"`` (socket, block device). Symbolic links are followed; a dangling one counts as a regular
    file, so that replacing it needs ``force``."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "regular" if os.path.islink(path) else "absent"
    if stat.S_ISREG(mode):
        return "regular"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "stream"
    return "other"


# --- output files --------------------------------------------------------------------------------


def _check_output(path: str | Path, force: bool) -> str:
    """:func:`check_output`, returning the kind of target found (see :func:`_file_kind`)."""
    if str(path) == STDOUT:
        return "stdout"
    path = Path(path)
    _check_parents(path)
    kind = _file_kind(path)
    if kind == "directory":
        raise InputError(f"{path} is a directory; give a file name")
    if kind == "other":
        raise InputError(f"{path} is a socket or a block device, not a file; choose another --out")
    if kind == "regular" and not force:
        raise InputError(f"{path} already exists; pass --force to replace it")
    return kind


def check_output(path: str | Path, force: bool) -> None:
    """Check that ``path`` can be written as an output file, without writing anything.

    Run it before expensive work, so that a bad ``--out`` fails at once. The rules:

    * ``"-"`` means standard output: fine (a file really named ``-`` is ``./-``).
    * A parent component that exists and is not a directory (``afile/x.csv``): refused.
    * An existing directory: refused ("give a file name").
    * An existing regular file: refused unless ``force``.
    * An existing character device (``/dev/null``) or named pipe: fine even without ``force``; it is
      written to as a stream, never replaced.
    * A socket or a block device: refused.
    * Anything absent: fine (missing parent directories are created when writing).

    Raises:
        InputError: with one sentence naming the path and what to do.
    """
    _check_output(path, force)


@contextlib.contextmanager
def open_output(path: str | Path, force: bool, binary: bool = False) -> Iterator[IO[Any]]:
    """Open an output file for writing, after :func:`check_output`; yield the handle.

    * ``"-"``: yields ``sys.stdout`` (``sys.stdout.buffer`` when ``binary``), flushed but not closed.
    * A character device or named pipe: opened directly and streamed into.
    * Otherwise (absent, or a regular file with ``force``): parent directories are created, the bytes
      go to a temporary file beside ``path``, and only when the ``with`` block ends without an
      exception is it renamed over ``path``, with normal permissions (``0o666 & ~umask``). On any
      exception, ``KeyboardInterrupt`` and ``SystemExit`` included, the temporary is removed and
      ``path`` is left untouched.

    Text is written as UTF-8.
    """
    kind = _check_output(path, force)
    mode = "wb" if binary else "w"
    encoding = None if binary else "utf-8"
    if kind == "stdout":
        stream = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
    elif kind == "stream":
        with open(path, mode, encoding=encoding) as handle:
            yield handle
    else:
        with atomic_path(path) as temporary, open(temporary, mode, encoding=encoding) as handle:
            yield handle


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, for code that writes by file name (``savefig``,
    ``safetensors.save_file``); on success it is renamed over ``path``.

    The temporary ``.{name}.flowfit-tmp-{pid}-{random}{suffix}`` keeps the target's suffix, so writers
    that choose the format by extension still work. It exists (empty) when yielded. On success it gets
    normal permissions (``0o666 & ~umask``), its bytes are flushed to disk and it replaces ``path``; on
    any exception it is removed and ``path`` is untouched. Stale temporaries of ``path`` left by dead
    processes are removed first (:func:`remove_stale_temporaries`).

    An existing regular file at ``path`` is replaced: the caller decides about ``force`` (see
    :func:`check_output`). A symbolic link at ``path`` is followed, as ``cp`` does: the file it points
    to is replaced and the link is kept.

    Raises:
        InputError: ``path`` is a directory or not a regular file (a device, a pipe), or a parent
            component is not a directory.
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    _check_parents(path)
    kind = _file_kind(path)
    if kind == "directory":
        raise InputError(f"{path} is a directory; give a file name")
    if kind not in ("absent", "regular"):
        raise InputError(f"{path} is not a regular file and will not be replaced; choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=path.suffix)
    os.close(handle)
    temporary = Path(name)
    done = False
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600
        _flush_to_disk(temporary)
        os.replace(temporary, path)
        done = True
    finally:
        if not done:
            _remove(temporary)


def _flush_to_disk(path: Path) -> None:
    """fsync a finished file, so that after a power loss the renamed target is not empty."""
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None``, inside dicts, lists and tuples."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`); an existing regular file
    is replaced."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` to ``path`` atomically as strict JSON: indent 2, a trailing newline.

    Strict: NaN and +-inf floats, which Python would write as ``NaN``/``Infinity`` (rejected by strict
    JSON parsers, browsers and ``jq``), are written as ``null``, also inside nested dicts, lists and
    tuples. Tuples become lists, as usual.
    """
    write_text(path, json.dumps(_strict_json(value), indent=2, allow_nan=False) + "\n")


# --- run directories -----------------------------------------------------------------------------


def is_flowfit_run(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by flowfit: it holds a ``config.json`` that parses as a
    JSON object with ``"format": "flowfit"``."""
    config = Path(path) / CONFIG
    try:
        value = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(value, dict) and value.get("format") == "flowfit"


def _check_named(path: Path) -> None:
    """Refuse ``.``, ``..`` and ``/``: they name no entry of a parent directory."""
    if path.name in ("", ".", ".."):
        raise InputError(f"{path} does not name a directory that flowfit can write; choose another --out")


def _check_directory_target(path: Path, force: bool) -> None:
    """The rules of :func:`replace_directory` for what is at ``path`` now."""
    if not os.path.lexists(path):
        return
    if not force:
        raise InputError(f"{path} already exists; pass --force to replace it")
    if path.is_dir() and is_flowfit_run(path):
        foreign = sorted(entry.name for entry in path.iterdir() if entry.name not in RUN_ENTRIES)
        if foreign:
            raise InputError(
                f"{path} holds files flowfit did not write ({', '.join(foreign[:3])}); it will not be replaced, "
                "even with --force: move them, or choose another --out"
            )
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    raise InputError(
        f"{path} is not a flowfit run and will not be replaced, even with --force; "
        "remove it yourself or choose another --out"
    )


def _swap_in(temporary: Path, path: Path) -> None:
    """Move ``temporary`` to ``path``; an existing ``path`` is moved aside first and removed only once the
    new one is in place (it is put back if that fails)."""
    if not os.path.lexists(path):
        os.replace(temporary, path)
        return
    aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path)))  # cleaned as stale if killed
    try:
        os.replace(path, aside / path.name)
        try:
            os.replace(temporary, path)
        except BaseException:
            os.replace(aside / path.name, path)
            raise
    finally:
        _remove(aside)


def check_directory(path: str | Path, force: bool) -> None:
    """The checks of :func:`replace_directory`, without writing anything (callers run it before
    expensive work)."""
    path = Path(path)
    _check_named(path)
    _check_parents(path)
    _check_directory_target(path, force)


@contextlib.contextmanager
def replace_directory(path: str | Path, force: bool) -> Iterator[Path]:
    """Yield a fresh, empty temporary directory beside ``path``; on success it replaces ``path``.

    Checked before yielding (so before any work), and again just before the swap:

    * ``path`` absent: fine (its parents are created).
    * ``path`` exists and ``force`` is False: refused ("pass --force").
    * ``path`` exists and ``force`` is True: allowed only if it is an empty directory or a flowfit run
      (:func:`is_flowfit_run`) holding only :data:`RUN_ENTRIES`. Anything else, a regular file, a run
      with the user's own files in it, a directory with other content (a home directory, a source
      tree), is refused even with ``force``.

    The temporary is ``.{name}.flowfit-tmp-{pid}-{random}`` with normal permissions (``0o777 & ~umask``);
    stale ones left by dead processes are removed first. On success the old ``path`` is moved aside and
    removed only once the new one is in place. On any exception (``KeyboardInterrupt`` included) the
    temporary is removed and ``path`` is untouched.

    Two processes writing the same ``path`` should hold :func:`lock` around this.

    Raises:
        InputError: as above, or a parent component is not a directory.
    """
    path = Path(path)
    _check_named(path)
    _check_parents(path)
    _check_directory_target(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path)))
    done = False
    try:
        os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp makes 0700
        yield temporary
        _check_directory_target(path, force)  # something may have appeared at path meanwhile
        _swap_in(temporary, path)
        done = True
    finally:
        if not done:
            _remove(temporary)


# --- locking -------------------------------------------------------------------------------------


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(fd: int) -> int | None:
    """The pid written in a lock file, if readable (its holder may not have written it yet)."""
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _acquire(lock_path: Path, path: Path) -> int:
    """Open and flock ``lock_path``; return its descriptor, or raise InputError if another holds it.

    A releaser unlinks the lock file while holding it, so a file we opened may be unlinked before we
    lock it: after locking (or failing to), check that the path still names our file, else retry.
    """
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise InputError(
                f"cannot create the lock file {lock_path} ({error.strerror}); choose another --out"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            stale = not _same_file(lock_path, fd)
            os.close(fd)
            if stale:
                continue  # its holder was releasing it; try the new one
            who = f"another flowfit process (pid {holder})" if holder else "another flowfit process"
            raise InputError(f"{who} is writing {path}; wait for it to finish or choose another --out") from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(lock_path, fd):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # unlinked between our open and our lock: that lock protects nothing


def _release(fd: int, lock_path: Path) -> None:
    """Unlink the lock file while still holding it (so nobody locks a file about to vanish), then close."""
    try:
        if _same_file(lock_path, fd):
            os.unlink(lock_path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the output ``path`` (a run directory, a file) for the ``with`` block.

    A second holder, in another process or in this one, fails at once instead of waiting. The lock is
    ``fcntl.flock`` on ``.{name}.lock`` beside ``path`` (parent directories are created); the file
    holds the holder's pid and is removed on release. The kernel releases a flock when its process dies,
    even by SIGKILL, so a killed run never blocks the next one (its lock file stays, harmlessly, and is
    reused). Where ``fcntl`` does not exist (Windows) this does no locking at all.

    Raises:
        InputError: "another flowfit process (pid N) is writing {path}; ...", or a parent component of
            ``path`` is not a directory.
    """
    path = Path(path)
    _check_named(path)
    _check_parents(path)
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    fd = _acquire(lock_path, path)
    try:
        yield
    finally:
        _release(fd, lock_path)


# --- signals -------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"terminated by {signal.Signals(signum).name}")


@contextlib.contextmanager
def terminate_gracefully() -> Iterator[None]:
    """Inside the ``with`` block, SIGTERM raises ``KeyboardInterrupt`` in the main thread instead of
    killing the process at once, so ``finally`` blocks and the cleanups of this module run (the
    temporaries are removed, the targets are left as they were). The previous handler is restored on
    exit.

    Python runs signal handlers between bytecodes, so a long call into C code (one tensor operation)
    finishes first. SIGKILL cannot be caught: what it leaves is cleaned by the next run. Outside the
    main thread (where handlers cannot be installed) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
