"""Atomic output (spec W-WRT-02): write to a temporary file in the target's folder, fsync it, rename
it over the target, fsync the folder. A crash at any point leaves the target absent or intact."""

from __future__ import annotations

import os
import re
import socket
import tempfile

# A temporary file is named `.<target name>.wcodec-<host>-<pid>-<random>.tmp` in the target's
# folder: hidden, never the target's own name, and recognizable. A writer killed (SIGKILL, power
# loss) before its rename leaves one behind; the next AtomicFile for the same target removes those
# that were made on this host by a process that no longer exists (cleanup_stale_temps).
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.wcodec-(?P<host>[A-Za-z0-9_-]*)-(?P<pid>\d+)-[^.]+\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64]


def temp_prefix(path: str | os.PathLike) -> str:
    return f".{os.path.basename(os.fspath(path))}.wcodec-{_host()}-{os.getpid()}-"


def stale_temp_files(path: str | os.PathLike, *, only_dead: bool = True) -> list[str]:
    """Temporary files of writers of `path` (in its folder). only_dead: those made on this host by
    a process that no longer runs (safe to delete); else every one, whoever made it."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    out = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return out
    host = _host()
    for n in entries:
        m = _TMP_RE.match(n)
        if not m or m.group("name") != name:
            continue
        if only_dead and (m.group("host") != host or _alive(int(m.group("pid")))):
            continue
        out.append(os.path.join(folder, n))
    return sorted(out)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def cleanup_stale_temps(path: str | os.PathLike) -> list[str]:
    """Delete the temporary files that dead writers of `path` left on this host; returns them."""
    removed = []
    for p in stale_temp_files(path):
        try:
            os.unlink(p)
            removed.append(p)
        except OSError:
            pass
    return removed


# write() keeps pieces smaller than this (copied) and hands them to the OS together; larger ones
# go out at once, uncopied
SMALL_WRITE = 64 << 10
PENDING_LIMIT = 1 << 20
IOV_MAX = 1024  # Linux's limit on the buffers of one writev


class AtomicFile:
    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        cleanup_stale_temps(self.path)
        fd, self.tmp_path = tempfile.mkstemp(dir=folder, prefix=temp_prefix(self.path),
                                             suffix=".tmp")
        # unbuffered, with our own position and our own list of small pending pieces: the
        # writer's main thread writes while worker threads encode, so its writes should neither
        # hold the GIL while copying (a BufferedWriter copies every piece into its buffer under
        # the GIL, then copies the buffer to the OS) nor release it more often than needed (each
        # release may cost up to the 5 ms switch interval to get it back); os.writev copies a
        # whole tensor's blocks to the OS in one call, with the GIL released
        self.file = os.fdopen(fd, "wb", buffering=0)
        self.fd = fd
        self.pos = 0
        self._pending: list = []
        self._pending_bytes = 0
        self.done = False

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if n < SMALL_WRITE:
            # bytes(b) is b for bytes; anything mutable is copied, as a buffered write would
            self._pending.append(bytes(data) if not isinstance(data, bytes) else data)
            self._pending_bytes += n
            self.pos += n
            if self._pending_bytes >= PENDING_LIMIT or len(self._pending) >= IOV_MAX:
                self.flush()
            return n
        self.writev([data])
        return n

    def writev(self, pieces) -> int:
        """Write the pieces (bytes-like) after whatever is pending, in as few system calls as
        the OS allows; the pieces are not kept."""
        bufs = self._pending + [p if type(p) is bytes else memoryview(p).cast("B") for p in pieces]
        total = sum(len(b) for b in bufs)
        self.pos += total - self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        _writev_all(self.fd, bufs)
        return total

    def flush(self) -> None:
        if self._pending:
            bufs, self._pending, self._pending_bytes = self._pending, [], 0
            _writev_all(self.fd, bufs)

    def tell(self) -> int:
        return self.pos

    def commit(self) -> None:
        self.flush()
        os.fsync(self.fd)
        self.file.close()
        os.replace(self.tmp_path, self.path)
        self.done = True
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.file.close()
        finally:
            try:
                os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _writev_all(fd: int, bufs: list) -> None:
    """os.writev until every byte of `bufs` is written (a write may be short; EINTR is retried
    by Python)."""
    i = 0
    while i < len(bufs):
        batch = bufs[i:i + IOV_MAX]
        n = os.writev(fd, batch)
        for b in batch:
            if n >= len(b):
                n -= len(b)
                i += 1
            else:  # a short write: the rest of this piece first
                bufs[i] = memoryview(b)[n:]
                break
        # zero-length pieces after a complete batch are skipped by the loop above


def fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)
