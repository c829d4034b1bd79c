"""Gallery index: add, remove, top-k subjects, exclusions, storage helpers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from matcher import GalleryIndex, Hit, embedding_from_bytes, embedding_to_bytes, similarity
from matcher.score import distance_for_score


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def near(base: np.ndarray, rng: np.random.Generator, eps: float) -> np.ndarray:
    return unit(base + eps * rng.standard_normal(base.shape).astype(np.float32))


def test_empty_index(rng: np.random.Generator) -> None:
    idx = GalleryIndex()
    assert len(idx) == 0
    assert idx.search(unit(rng.standard_normal(128)), 5) == []


def test_top_k_subjects_best_reference_per_subject(rng: np.random.Generator) -> None:
    idx = GalleryIndex(initial_capacity=16)
    probe = unit(rng.standard_normal(128))
    # subject 1: two photos, one very close; subject 2: one close-ish photo; others far
    idx.add(1, 10, near(probe, rng, 0.30))
    idx.add(1, 11, near(probe, rng, 0.02))
    idx.add(2, 20, near(probe, rng, 0.05))
    for s in range(3, 60):  # forces growth past the initial capacity
        idx.add(s, 100 + s, unit(rng.standard_normal(128)))
    assert len(idx) == 60 and idx.subject_count == 59
    hits = idx.search(probe, 3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert [h.subject_id for h in hits[:2]] == [1, 2]
    assert hits[0].reference_photo_id == 11  # the best of subject 1's photos
    assert len({h.subject_id for h in hits}) == 3  # one hit per subject
    assert hits[0].distance <= hits[1].distance <= hits[2].distance
    assert all(isinstance(h, Hit) for h in hits)
    for h in hits:
        assert h.score == pytest.approx(similarity(h.distance), abs=1e-6)
        assert 0.0 <= h.score <= 1.0


def test_distance_is_euclidean_on_unit_vectors(rng: np.random.Generator) -> None:
    a, b = unit(rng.standard_normal(128)), unit(rng.standard_normal(128))
    idx = GalleryIndex()
    idx.add(5, 50, b * 3.0)  # stored normalised
    (hit,) = idx.search(a, 1)
    assert hit.distance == pytest.approx(float(np.linalg.norm(a - b)), abs=1e-5)


def test_remove_subject_and_reference_photo(rng: np.random.Generator) -> None:
    idx = GalleryIndex()
    probe = unit(rng.standard_normal(128))
    idx.add_many([(1, 10, near(probe, rng, 0.01)), (1, 11, near(probe, rng, 0.2)), (2, 20, near(probe, rng, 0.1))])
    idx.add(3, 30, unit(rng.standard_normal(128)))
    v0 = idx.version
    idx.remove_reference_photo(10)
    assert idx.version > v0
    hits = idx.search(probe, 3)
    assert hits[0].subject_id == 2  # subject 1's best photo is gone, its other photo is worse
    assert {h.reference_photo_id for h in hits} == {11, 20, 30}
    idx.remove_subject(2)
    hits = idx.search(probe, 3)
    assert [h.subject_id for h in hits] == [1, 3]
    assert 20 not in idx and len(idx) == 2
    idx.remove_subject(1)
    idx.remove_subject(3)
    assert len(idx) == 0 and idx.search(probe, 3) == []
    idx.remove_subject(999)  # unknown ids are no-ops
    idx.remove_reference_photo(999)


def test_exclusions_and_min_score(rng: np.random.Generator) -> None:
    idx = GalleryIndex()
    probe = unit(rng.standard_normal(128))
    idx.add(1, 10, near(probe, rng, 0.01))
    idx.add(2, 20, near(probe, rng, 0.03))
    idx.add(3, 30, unit(rng.standard_normal(128)))  # far: low score
    hits = idx.search(probe, 3, exclude_subjects=[1])
    assert [h.subject_id for h in hits] == [2, 3]
    far_score = hits[-1].score
    hits = idx.search(probe, 3, min_score=min(0.99, far_score + 0.05))
    assert [h.subject_id for h in hits] == [1, 2]
    assert all(h.score >= far_score + 0.05 - 1e-6 for h in hits)


def test_readding_a_photo_replaces_it(rng: np.random.Generator) -> None:
    idx = GalleryIndex()
    probe = unit(rng.standard_normal(128))
    idx.add(1, 10, unit(rng.standard_normal(128)))
    idx.add(2, 10, near(probe, rng, 0.01))  # same photo id, now for subject 2
    assert len(idx) == 1
    (hit,) = idx.search(probe, 5)
    assert (hit.subject_id, hit.reference_photo_id) == (2, 10)


def test_column_wise_add_many_and_compaction(rng: np.random.Generator) -> None:
    idx = GalleryIndex(initial_capacity=16)
    n = 1000
    mat = rng.standard_normal((n, 128)).astype(np.float32)
    ids = np.arange(n)
    idx.add_many(ids // 4, ids, mat)  # 250 subjects x 4 photos
    assert len(idx) == n and idx.subject_count == 250
    for s in range(0, 250, 2):
        idx.remove_subject(s)  # half of the rows die: compaction kicks in
    assert len(idx) == 500 and idx.subject_count == 125
    q = unit(mat[4 * 7 + 2])  # a photo of subject 7 (kept)
    hits = idx.search(q, 10)
    assert hits[0].subject_id == 7 and hits[0].reference_photo_id == 4 * 7 + 2
    assert hits[0].distance == pytest.approx(0.0, abs=1e-3)
    assert all(h.subject_id % 2 == 1 for h in hits)
    idx.compact()
    assert idx.search(q, 1)[0].reference_photo_id == 30


def test_k_larger_than_gallery_and_many_photos_per_subject(rng: np.random.Generator) -> None:
    idx = GalleryIndex()
    probe = unit(rng.standard_normal(128))
    # subject 1 has 200 photos all closer than subject 2's single photo
    idx.add_many([(1, i, near(probe, rng, 0.01)) for i in range(200)])
    idx.add(2, 999, near(probe, rng, 0.5))
    hits = idx.search(probe, 5)
    assert [h.subject_id for h in hits] == [1, 2]


def test_bad_embeddings_are_refused() -> None:
    idx = GalleryIndex()
    with pytest.raises(ValueError):
        idx.add(1, 1, np.zeros(128, np.float32))
    with pytest.raises(ValueError):
        idx.add(1, 1, np.full(128, np.nan, np.float32))


def test_applied_change_id_and_version() -> None:
    idx = GalleryIndex()
    assert idx.applied_change_id == 0
    idx.applied_change_id = 42
    v = idx.version
    idx.add(1, 1, np.ones(128, np.float32))
    assert idx.version == v + 1 and idx.applied_change_id == 42


def test_concurrent_adds_and_searches(rng: np.random.Generator) -> None:
    idx = GalleryIndex(initial_capacity=16)
    vecs = rng.standard_normal((400, 128)).astype(np.float32)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(offset, 400, 4):
                idx.add(i // 2, i, vecs[i])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def reader() -> None:
        try:
            for i in range(200):
                idx.search(vecs[i], 5)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(o,)) for o in range(4)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(idx) == 400
    assert idx.search(vecs[123], 1)[0].reference_photo_id == 123


def test_embedding_bytes_round_trip(rng: np.random.Generator) -> None:
    v = unit(rng.standard_normal(128))
    data = embedding_to_bytes(v)
    assert len(data) == 512
    assert data == v.astype("<f4").tobytes()
    back = embedding_from_bytes(data)
    assert back.dtype == np.float32 and back.shape == (128,)
    assert np.array_equal(back, v)


def test_score_mapping_is_monotone_and_invertible() -> None:
    ds = np.linspace(0, 2, 41)
    scores = [similarity(d) for d in ds]
    assert all(a >= b for a, b in zip(scores, scores[1:], strict=False))
    assert scores[0] > 0.99 and scores[-1] < 0.01
    for s in (0.1, 0.5, 0.9):
        assert similarity(distance_for_score(s)) == pytest.approx(s, abs=1e-9)
