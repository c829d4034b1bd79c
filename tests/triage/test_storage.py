import hashlib
from pathlib import Path

import pytest
from sqlmodel import Session

from triage.models import StoredImage
from triage.storage import ImageStore, store_image


def test_content_addressed_and_never_overwritten(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    digest = store.put(b"abc")
    assert digest == hashlib.sha256(b"abc").hexdigest()
    path = store.path_for(digest)
    mtime = path.stat().st_mtime_ns
    assert store.put(b"abc") == digest
    assert path.stat().st_mtime_ns == mtime
    assert store.get(digest) == b"abc"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "a" * 63, "g" * 64, ""])
def test_paths_only_from_digests(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        ImageStore(tmp_path).path_for(bad)


def test_store_image_registers_once(session: Session, tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    a = store_image(session, store, b"\x89PNG...", "image/png", 1, 1)
    b = store_image(session, store, b"\x89PNG...", "image/png", 1, 1)
    session.commit()
    assert a == b
    assert session.get_one(StoredImage, a).size_bytes == 7
