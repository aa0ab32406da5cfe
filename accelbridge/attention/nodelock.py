"""One process per node fetches a shared artefact; the others wait, then load the same files.

Tensor-parallel ranks start together and would all download the same hub kernel into the same
cache at once. ``held(path, what)`` takes an OS file lock (the ``filelock`` package; hub kernels'
locks live in ``$ACCELBRIDGE_CACHE_DIR/locks/``, see ``hub.fetch_lock``): the first process does
the work, the others wait with a progress line naming the lock file and the holder's pid, then
find the files in place. The OS releases the lock when its holder dies, so a crashed holder
never blocks the others; a holder that hangs is an error after ``ACCELBRIDGE_LOCK_TIMEOUT`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from accelbridge import env
from accelbridge.errors import AccelbridgeError

if TYPE_CHECKING:  # imported with the first lock: nothing at import
    import filelock

log = logging.getLogger("accelbridge")
PROGRESS_EVERY = 10.0  # seconds between a waiting process's progress lines


class NodeLockError(AccelbridgeError):
    """The node-wide lock could not be taken: its directory is not writable, or its holder never let go."""


class LockTimeoutError(NodeLockError):
    """Waited ACCELBRIDGE_LOCK_TIMEOUT seconds for another process's fetch; names the lock, its holder and the fix."""


def timeout() -> float:
    text = env.get("ACCELBRIDGE_LOCK_TIMEOUT")
    try:
        seconds = float(text)
        if seconds <= 0:
            raise ValueError
    except ValueError:
        raise AccelbridgeError(f"ACCELBRIDGE_LOCK_TIMEOUT={text!r}: expected a positive number of seconds") from None
    return seconds


def holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it next to the lock (``pid 123 on node1: hub kernel ...``)."""
    try:
        return path.with_suffix(".holder").read_text().strip() or "unknown"
    except OSError:
        return "unknown (it wrote no .holder file yet)"


@contextlib.contextmanager
def held(path: Path, what: str, seconds: float | None = None) -> Iterator[Path]:
    """Hold the node-wide lock file ``path`` while fetching ``what``; waits (with progress lines) for its holder."""
    import filelock

    limit = timeout() if seconds is None else seconds
    lock = filelock.FileLock(path)
    start = time.monotonic()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(blocking=False)
    except filelock.Timeout:
        _wait(lock, path, what, start, limit)
    except OSError as e:  # a read-only cache: say which directory, and the fix
        raise NodeLockError(f"cannot take the lock {path} for {what}: {e.strerror or e}; set ACCELBRIDGE_CACHE_DIR "
                            "to a writable directory that the node's ranks share") from None  # fmt: skip
    marker = path.with_suffix(".holder")
    try:
        marker.write_text(f"pid {os.getpid()} on {socket.gethostname()}: {what}\n")
        yield path
    finally:
        with contextlib.suppress(OSError):
            marker.unlink()
        lock.release()


def _wait(lock: filelock.FileLock, path: Path, what: str, start: float, limit: float) -> None:
    import filelock

    log.info("waiting for %s: another process is fetching it (lock %s, held by %s)", what, path, holder(path))
    while True:
        waited = time.monotonic() - start
        if waited >= limit:
            raise LockTimeoutError(
                f"waited {waited:.0f} s for {what}: lock {path} is held by {holder(path)}, which is still running "
                "(a process that dies releases it); if it is stuck, end it; to wait longer, set "
                "ACCELBRIDGE_LOCK_TIMEOUT=SECONDS"
            )
        try:
            lock.acquire(timeout=min(PROGRESS_EVERY, limit - waited))
            log.info("%s: lock %s acquired after %.1f s", what, path, time.monotonic() - start)
            return
        except filelock.Timeout:
            log.warning("still waiting for %s after %.0f s (lock %s, held by %s)", what,
                        time.monotonic() - start, path, holder(path))  # fmt: skip
