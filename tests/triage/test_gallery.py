"""The per-process gallery applies the matcher's reference-photo quality gate."""

from __future__ import annotations

import numpy as np
import pytest
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
        record_change(s, ADD, subject.pk, good.id)
        record_change(s, ADD, subject.pk, poor.id)
        s.commit()
    fresh = Gallery(engine)
    fresh.rebuild()
    assert len(fresh) == 1 and fresh.subject_ids() == {subject.id}
    assert synced.sync() == 2
    assert len(synced) == 1 and synced.subject_ids() == {subject.id}
    with Session(engine) as s:
        assert s.get(type(poor), poor.id) is not None  # kept on the record


def test_a_stored_embedding_of_another_model_is_never_searched(engine: Engine, settings: Settings) -> None:
    from matcher import GalleryIndex, ModelMismatch
    from triage.gallery import active_model_id
    from triage.models import ReferenceEmbedding

    store = ImageStore(settings.images_dir)
    rng = np.random.default_rng(1)
    vectors = [v / np.linalg.norm(v) for v in rng.normal(size=(2, 128)).astype(np.float32)]
    with Session(engine, expire_on_commit=False) as s:
        active = active_model_id(s)
        subject = factories.make_subject(s, store, photos=0)
        kept = factories.add_reference_photo(s, store, subject, embedding=embedding_to_bytes(vectors[0]))
        # A photo that holds only an embedding of another model (same length, so only its model tells).
        other = factories.add_reference_photo(s, store, subject, embedding=embedding_to_bytes(vectors[1]))
        row = s.get(ReferenceEmbedding, (other.id, active))
        assert row is not None
        s.delete(row)
        s.flush()
        s.add(ReferenceEmbedding(reference_photo_id=other.pk, model_id="other@0123456789abcdef", dim=128,
                                 embedding=embedding_to_bytes(vectors[1])))
        for photo in (kept, other):
            photo.iod_px, photo.blur = 64.0, 150.0
            s.add(photo)
            record_change(s, ADD, subject.pk, photo.id)
        s.commit()
    synced = Gallery(engine)
    synced.rebuild()
    assert len(synced) == 1 and synced.model_id == active
    hits = synced.search(vectors[1], 5, model_id=active)
    assert [h.reference_photo_id for h in hits] == [kept.id]  # the other model's vector is not in the index
    with pytest.raises(ModelMismatch):
        synced.search(vectors[1], 5, model_id="other@0123456789abcdef")
    index = GalleryIndex(128, model_id=active)
    with pytest.raises(ModelMismatch):
        index.add(subject.pk, other.pk, vectors[1], model_id="other@0123456789abcdef")
    assert len(index) == 0


def test_a_model_switch_in_the_change_log_rebuilds_the_index_on_the_new_model(engine: Engine,
                                                                             settings: Settings) -> None:
    from triage.gallery import SWITCH_MODEL, gallery_model
    from triage.models import ReferenceEmbedding

    store = ImageStore(settings.images_dir)
    rng = np.random.default_rng(2)
    with Session(engine, expire_on_commit=False) as s:
        subject = factories.make_subject(s, store, photos=0)
        photo = factories.add_reference_photo(s, store, subject,
                                              embedding=embedding_to_bytes(rng.normal(size=128).astype(np.float32)))
        photo.iod_px, photo.blur = 64.0, 150.0
        s.add(photo)
        s.add(ReferenceEmbedding(reference_photo_id=photo.pk, model_id="next@0123456789abcdef", dim=64,
                                 embedding=embedding_to_bytes(rng.normal(size=64).astype(np.float32))))
        record_change(s, ADD, subject.pk, photo.id)
        s.commit()
    running = Gallery(engine)
    running.rebuild()
    old = running.model_id
    assert len(running) == 1 and running.index.dim == 128
    with Session(engine) as s:
        row = gallery_model(s)
        row.previous_model_id, row.model_id, row.dim = row.model_id, "next@0123456789abcdef", 64
        s.add(row)
        record_change(s, SWITCH_MODEL, 0)
        s.commit()
    assert running.sync() == 1
    assert running.model_id == "next@0123456789abcdef" != old and running.index.dim == 64 and len(running) == 1
