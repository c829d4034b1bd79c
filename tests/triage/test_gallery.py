"""The per-process gallery applies the matcher's reference-photo quality gate."""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine
from sqlmodel import Session

from matcher import embedding_to_bytes
from tests import factories
from triage.config import Settings
from triage.gallery import ADD, Gallery, record_change, reference_photo_searchable
from triage.storage import ImageStore


def test_quality_gate_rule() -> None:
    assert reference_photo_searchable(60.0, 150.0, 0.0, "")
    assert not reference_photo_searchable(28.0, 150.0, 0.0, "small")  # too small to be a reliable entry
    assert not reference_photo_searchable(60.0, 5.0, 0.0, "blurred")
    # A three-quarter view is judged by its frontal-equivalent eye distance.
    assert reference_photo_searchable(35.0, 150.0, 40.0, "turned")


def test_poor_reference_photos_are_kept_but_not_searched(engine: Engine, settings: Settings) -> None:
    store = ImageStore(settings.images_dir)
    synced = Gallery(engine)
    synced.rebuild()  # empty; the photos below reach it through the change log
    assert len(synced) == 0
    rng = np.random.default_rng(0)
    with Session(engine, expire_on_commit=False) as s:
        subject = factories.make_subject(s, store, photos=0)
        good, poor = (factories.add_reference_photo(s, store, subject, view=view,
                                                    embedding=embedding_to_bytes(v / np.linalg.norm(v)))
                      for view, v in (("frontal", rng.normal(size=128)), ("cctv", rng.normal(size=128))))
        good.iod_px, good.blur = 64.0, 150.0
        poor.iod_px, poor.blur, poor.quality_issues = 20.0, 150.0, "small"
        s.add(good)
        s.add(poor)
        record_change(s, ADD, subject.id, good.id)  # type: ignore[arg-type]
        record_change(s, ADD, subject.id, poor.id)  # type: ignore[arg-type]
        s.commit()
    fresh = Gallery(engine)
    fresh.rebuild()
    assert len(fresh) == 1 and fresh.subject_ids() == {subject.id}
    assert synced.sync() == 2
    assert len(synced) == 1 and synced.subject_ids() == {subject.id}
    with Session(engine) as s:
        assert s.get(type(poor), poor.id) is not None  # kept on the record
