"""Atomic output (spec W-WRT-02): write to a temporary file in the target's folder, fsync it, rename
it over the target, fsync the folder. A crash at any point leaves the target absent or intact."""

from __future__ import annotations

import os
import tempfile


class AtomicFile:
    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp_path = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(self.path)}.",
                                             suffix=".tmp")
        self.file = os.fdopen(fd, "wb")
        self.done = False

    def write(self, data) -> int:
        return self.file.write(data)

    def tell(self) -> int:
        return self.file.tell()

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
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
