"""Writing run files safely, and warnings that never raise: the one home of both.

Every file the monitor or ``effrank-fast report`` writes goes through this module:

- :func:`replace_bytes` / :func:`replace_with`: the data go to a new temporary file in the same
  folder (created with ``O_EXCL``, so a file or symlink planted under that name is never opened),
  are fsynced, and the temporary file is renamed over the target. A reader sees the old file or
  the new one, never half of one; a symlink at the target is replaced by the file, its target is
  never written.
- :func:`append_bytes`: ``O_APPEND | O_NOFOLLOW``: a symlink planted at the target makes the
  write fail instead of writing outside the run folder. A write that fails half-way is cut back
  (best effort), and an append to a file whose last line is incomplete starts on a new line, so
  earlier partial lines never swallow the rows written after them.
- :func:`warn`: ``warnings.warn`` that never raises. Under ``warnings.simplefilter("error")``
  (``python -W error``, pytest's ``filterwarnings = error``) a warning is an exception; inside a
  training loop that would stop the run, so such a warning goes to the ``effrank_fast`` logger
  instead. An "ignore" filter still silences it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["append_bytes", "replace_bytes", "replace_with", "warn"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX; Windows has no symlink-following opens to guard
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_log = logging.getLogger("effrank_fast")


def warn(msg: str, category: type[Warning] = RuntimeWarning, stacklevel: int = 2) -> None:
    """``warnings.warn(msg, category)``, or a logged message when the filters turn it into an error."""
    try:
        warnings.warn(msg, category, stacklevel=stacklevel + 1)
    except Warning:  # the filters made it an exception: report it without stopping the caller
        _log.warning("%s: %s", category.__name__, msg)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_with(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Atomically replace ``path`` with what ``write(f)`` writes to a binary file object ``f``."""
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")  # O_CREAT | O_EXCL
    except OSError as exc:  # name the file meant, not the temporary one
        raise type(exc)(exc.errno, exc.strerror, str(p)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; run files are meant to be read by others
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(p.parent)


def replace_bytes(path: str | Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (temporary file in the same folder, fsync, rename)."""
    replace_with(path, lambda f: f.write(data))


def append_bytes(path: str | Path, data: bytes) -> None:
    """Append ``data`` (whole lines) to ``path`` without following a symlink, then fsync.

    Raises the ``OSError`` of a failed open or write; the file is then cut back to its former
    length when possible, so a retry of the same data does not duplicate any line.
    """
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _BINARY, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":  # an earlier write stopped mid-line
                data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
