"""Content-addressed image store: files named by their sha256, never overwritten.

Paths are derived only from a hex digest that this module computed or
validated, never from user input.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path

from sqlmodel import Session

from triage.models import StoredImage

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
TEMP_PREFIX = ".tmp-"
# A temporary file this old is a leftover whoever wrote it (a write takes well under a second).
TEMP_MAX_AGE_SECONDS = 3600


def pid_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError("not a sha256 digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        # The writer's pid in the name: a leftover of a killed process is known as such at the next start.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{os.getpid()}-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                # link() fails if the name exists: a concurrent writer of the same
                # content wins and nothing is ever overwritten.
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        return digest

    def remove_leftovers(self) -> int:
        """Remove temporary files left by writers that died (a kill -9 mid-write); return how many.

        A file whose writer (the pid in its name) is still running is kept unless it is
        over an hour old, so processes sharing the store never lose each other's writes.
        """
        removed = 0
        now = time.time()
        for tmp in self.root.glob(f"*/*/{TEMP_PREFIX}*"):
            pid_text = tmp.name[len(TEMP_PREFIX):].split("-", 1)[0]
            try:
                stale = not pid_text.isdigit() or not pid_alive(int(pid_text)) \
                    or now - tmp.stat().st_mtime > TEMP_MAX_AGE_SECONDS
                if stale:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # its writer finished (or another process tidied it) meanwhile
        return removed

    def get(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def delete(self, sha256: str) -> None:
        try:
            self.path_for(sha256).unlink()
        except FileNotFoundError:
            pass


def store_image(
    session: Session, store: ImageStore, data: bytes, media_type: str,
    width: int | None = None, height: int | None = None,
) -> str:
    """Write the bytes and register them; the same content is stored once."""
    return register_image(session, store.put(data), len(data), media_type, width, height)


def register_image(session: Session, digest: str, size_bytes: int, media_type: str,
                   width: int | None = None, height: int | None = None) -> str:
    """Register bytes already written to the store under ``digest`` (``ImageStore.put``); the same content is
    registered once."""
    if session.get(StoredImage, digest) is None:
        session.add(StoredImage(sha256=digest, media_type=media_type, size_bytes=size_bytes,
                                width=width, height=height))
        session.flush()
    return digest
