"""One store folder, many processes: an exclusive file lock per operation and a generation number.

Chroma's embedded store keeps index state in memory: two processes writing one folder lose
writes ("Error finding id") unless they take turns and each re-reads what the other wrote.
Every operation holds a lock on the folder (exclusive; shared for a reader of a folder it
cannot write); a write bumps the folder's generation; a process whose view is older than the
folder's generation reopens its client first (`store.Store._exclusive`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".ech0.lock"
GENERATION_FILE = ".ech0-generation"


class FolderLock:
    """Re-entrant across one process's threads; serialised across processes with `flock`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen = -1  # the folder generation this process's view reflects
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def generation(self) -> int:
        try:
            return int((self.folder / GENERATION_FILE).read_text() or 0)
        except (OSError, ValueError):
            return 0

    def bump(self) -> None:
        """Record a write: the folder's generation becomes `seen` (set by the writer)."""
        tmp = self.folder / f"{GENERATION_FILE}.{os.getpid()}"
        tmp.write_text(str(self.seen))
        tmp.replace(self.folder / GENERATION_FILE)

    @contextlib.contextmanager
    def hold(self, *, shared: bool) -> Iterator[bool]:
        """Hold the folder for one operation; yields True for the outermost (not nested) hold.
        `shared`: a reader of a folder it cannot write waits for the folder's writers only."""
        with self._thread_lock:
            if self._depth == 0:
                if shared:
                    with contextlib.suppress(OSError):
                        self._fd = os.open(self.folder / LOCK_FILE, os.O_RDONLY)
                else:
                    self._fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield self._depth == 1
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None
