"""In-memory gallery of reference embeddings of one face model, with exact top-k subject search.

One contiguous float32 matrix (rows = reference photos), grown by doubling;
removals only clear a row's "alive" flag and the matrix is compacted lazily once
a quarter of its rows are dead. A search is one matrix-vector product, an
``argpartition`` for the best rows, and a per-subject best (15 ms for 1M x 128 on
two idle cores; ``python -m bench.matcher`` measures the default model's 192 dims). Each index holds the vectors of
one model (``model_id``, ``dim``) and refuses any other. Thread-safe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from matcher.errors import ModelMismatch
from matcher.score import distance_for_score, similarity_array

DIM = 128
PARALLEL_MIN_ROWS = 200_000  # below this one thread is faster than splitting

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _search_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=_search_workers(), thread_name_prefix="gallery-search")
    return _pool


@dataclass(frozen=True)
class Hit:
    subject_id: int
    reference_photo_id: int
    distance: float
    score: float
    rank: int


class GalleryIndex:
    """Reference embeddings of ONE face model (``model_id``, ``dim``): a vector of another
    model, or of another length, is refused with :class:`ModelMismatch` on add and search."""

    def __init__(self, dim: int | None = None, initial_capacity: int = 1024, *, model_id: str | None = None) -> None:
        # dim None: the length of the first vector added (the default model's, in the app)
        self.dim: int | None = None if dim is None else int(dim)
        self.model_id = model_id
        self._lock = threading.RLock()
        cap = max(16, int(initial_capacity))
        self._vecs = np.zeros((cap, self.dim or 0), dtype=np.float32)
        self._subj = np.zeros(cap, dtype=np.int64)
        self._ref = np.zeros(cap, dtype=np.int64)
        self._alive = np.zeros(cap, dtype=bool)
        self._n = 0  # rows used (alive or dead)
        self._dead = 0
        self._row_of_ref: dict[int, int] = {}
        self._rows_of_subject: dict[int, set[int]] = {}
        self.version = 0  # bumped on every change
        self.applied_change_id = 0  # the last change-log id the app applied

    # -- size -------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n - self._dead

    @property
    def subject_count(self) -> int:
        return len(self._rows_of_subject)

    @property
    def nbytes(self) -> int:
        return int(self._vecs.nbytes + self._subj.nbytes + self._ref.nbytes + self._alive.nbytes)

    def __contains__(self, reference_photo_id: object) -> bool:
        return reference_photo_id in self._row_of_ref

    # -- changes ---------------------------------------------------------------------
    def _check_model(self, model_id: str | None, emb: np.ndarray, adopt: bool = False) -> None:
        if model_id is not None and self.model_id is not None and model_id != self.model_id:
            raise ModelMismatch(
                f"embedding of face model {model_id!r} offered to a gallery of {self.model_id!r}; "
                "re-embed the reference photos with the gallery's model"
            )
        arr = np.asarray(emb)
        width = arr.shape[-1] if arr.ndim else 0
        if self.dim is None and width > 0 and not adopt:
            return
        if self.dim is None and width > 0:
            with self._lock:
                if self.dim is None:
                    self.dim = int(width)
                    self._vecs = np.zeros((self._vecs.shape[0], width), dtype=np.float32)
        if width != self.dim:
            raise ModelMismatch(
                f"embedding of length {width} offered to a gallery of {self.dim}-d vectors"
                + (f" ({self.model_id})" if self.model_id else "")
            )

    def _normalise(self, emb: np.ndarray) -> np.ndarray:
        arr = np.asarray(emb, dtype=np.float32).reshape(-1, self.dim or 0)
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if not np.all(np.isfinite(arr)) or np.any(norms == 0):
            raise ValueError("embedding must be finite and non-zero")
        return arr / norms

    def _grow(self, need: int) -> None:
        cap = self._vecs.shape[0]
        if need <= cap:
            return
        new_cap = cap
        while new_cap < need:
            new_cap *= 2
        for name in ("_vecs", "_subj", "_ref", "_alive"):
            old = getattr(self, name)
            new = np.zeros((new_cap, *old.shape[1:]), dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def add(
        self, subject_id: int, reference_photo_id: int, embedding: np.ndarray, *, model_id: str | None = None
    ) -> None:
        self.add_many([(subject_id, reference_photo_id, embedding)], model_id=model_id)

    def add_many(
        self,
        items: Iterable[tuple[int, int, np.ndarray]] | Sequence[int],
        reference_photo_ids: Sequence[int] | np.ndarray | None = None,
        embeddings: np.ndarray | None = None,
        *,
        model_id: str | None = None,
    ) -> None:
        """Add (or replace) reference photos: ``add_many([(subject_id, photo_id, emb), ...])``
        or column-wise ``add_many(subject_ids, photo_ids, matrix)``. ``model_id`` is the model
        the vectors came from (:class:`ModelMismatch` if it is not the gallery's); nothing is
        added when any vector is refused."""
        if reference_photo_ids is not None or embeddings is not None:
            if reference_photo_ids is None or embeddings is None:
                raise TypeError("pass subject_ids, reference_photo_ids and embeddings together")
            subj = np.asarray(list(items), dtype=np.int64)
            refs = np.asarray(list(reference_photo_ids), dtype=np.int64)
            self._check_model(model_id, np.asarray(embeddings), adopt=True)
            mat = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim or 0)
        else:
            rows: list[tuple[int, int, np.ndarray]] = []
            for r in items:  # (subject id, photo id, embedding) each
                if isinstance(r, int | np.integer):
                    raise TypeError("pass subject_ids, reference_photo_ids and embeddings together")
                subject_id, photo_id, vector = r
                rows.append((subject_id, photo_id, vector))
            if not rows:
                return
            subj = np.asarray([r[0] for r in rows], dtype=np.int64)
            refs = np.asarray([r[1] for r in rows], dtype=np.int64)
            for r in rows:
                self._check_model(model_id, np.asarray(r[2]).reshape(-1), adopt=True)
            mat = np.stack([np.asarray(r[2], dtype=np.float32).reshape(-1) for r in rows])
        if not (len(subj) == len(refs) == len(mat)):
            raise ValueError("subject ids, photo ids and embeddings differ in length")
        if len(subj) == 0:
            return
        mat = self._normalise(mat)
        with self._lock:
            # a photo id given twice in one batch: the last one wins
            last: dict[int, int] = {}
            for i, r in enumerate(refs.tolist()):
                last[r] = i
            keep = np.fromiter(sorted(last.values()), dtype=np.int64)
            subj, refs, mat = subj[keep], refs[keep], mat[keep]
            for r in refs.tolist():
                if r in self._row_of_ref:
                    self._kill_row(self._row_of_ref[r])
            start = self._n
            self._grow(start + len(refs))
            end = start + len(refs)
            self._vecs[start:end] = mat
            self._subj[start:end] = subj
            self._ref[start:end] = refs
            self._alive[start:end] = True
            self._n = end
            for row, (s, r) in enumerate(zip(subj.tolist(), refs.tolist(), strict=True), start=start):
                self._row_of_ref[r] = row
                self._rows_of_subject.setdefault(s, set()).add(row)
            self.version += 1

    def _kill_row(self, row: int) -> None:
        if not self._alive[row]:
            return
        self._alive[row] = False
        self._dead += 1
        ref = int(self._ref[row])
        subj = int(self._subj[row])
        if self._row_of_ref.get(ref) == row:
            del self._row_of_ref[ref]
        rows = self._rows_of_subject.get(subj)
        if rows is not None:
            rows.discard(row)
            if not rows:
                del self._rows_of_subject[subj]

    def remove_subject(self, subject_id: int) -> None:
        with self._lock:
            for row in list(self._rows_of_subject.get(int(subject_id), ())):
                self._kill_row(row)
            self.version += 1
            self._maybe_compact()

    def remove_reference_photo(self, reference_photo_id: int) -> None:
        with self._lock:
            row = self._row_of_ref.get(int(reference_photo_id))
            if row is not None:
                self._kill_row(row)
            self.version += 1
            self._maybe_compact()

    def clear(self) -> None:
        with self._lock:
            self._alive[: self._n] = False
            self._n = 0
            self._dead = 0
            self._row_of_ref.clear()
            self._rows_of_subject.clear()
            self.version += 1

    def _maybe_compact(self, force: bool = False) -> None:
        if self._dead == 0 or (not force and self._dead * 4 < max(self._n, 64)):
            return
        alive = np.flatnonzero(self._alive[: self._n])
        n = len(alive)
        self._vecs[:n] = self._vecs[alive]
        self._subj[:n] = self._subj[alive]
        self._ref[:n] = self._ref[alive]
        self._alive[:n] = True
        self._alive[n : self._n] = False
        self._n = n
        self._dead = 0
        self._row_of_ref = {int(r): i for i, r in enumerate(self._ref[:n].tolist())}
        self._rows_of_subject = {}
        for i, s in enumerate(self._subj[:n].tolist()):
            self._rows_of_subject.setdefault(s, set()).add(i)

    def compact(self) -> None:
        with self._lock:
            self._maybe_compact(force=True)

    # -- search ----------------------------------------------------------------------
    def _scores(self, q: np.ndarray, n: int) -> np.ndarray:
        """Dot products of the first ``n`` rows with ``q``; large galleries are split
        across threads (NumPy releases the GIL in the product)."""
        mat = self._vecs
        workers = _search_workers()
        if n < PARALLEL_MIN_ROWS or workers < 2:
            return mat[:n] @ q
        out = np.empty(n, dtype=np.float32)
        bounds = np.linspace(0, n, workers + 1).astype(int)

        def part(i: int) -> None:
            a, b = bounds[i], bounds[i + 1]
            np.dot(mat[a:b], q, out=out[a:b])

        list(_executor().map(part, range(workers)))
        return out

    def search(
        self,
        embedding: np.ndarray,
        k: int,
        *,
        min_score: float | None = None,
        exclude_subjects: Iterable[int] = (),
        model_id: str | None = None,
    ) -> list[Hit]:
        """The ``k`` most similar subjects (best reference photo each), rank 1..k; a probe
        embedding of another model than the gallery's raises :class:`ModelMismatch`."""
        self._check_model(model_id, np.asarray(embedding).reshape(-1))
        if k <= 0 or self.dim is None:
            return []
        q = self._normalise(embedding)[0]
        excluded = {int(s) for s in exclude_subjects}
        with self._lock:
            n = self._n
            if n - self._dead == 0:
                return []
            dots = self._scores(q, n)
            alive_n = n - self._dead
            if self._dead:
                dots[~self._alive[:n]] = -np.inf
            if excluded:
                hit = np.isin(self._subj[:n], np.fromiter(excluded, dtype=np.int64))
                dots[hit] = -np.inf
                alive_n = int(np.count_nonzero(np.isfinite(dots)))
            if min_score is not None:
                # score >= min_score  <=>  distance <= d  <=>  dot >= 1 - d^2/2
                d = distance_for_score(min_score, self.model_id)
                dots[dots < 1.0 - d * d / 2.0 - 1e-6] = -np.inf
                alive_n = int(np.count_nonzero(np.isfinite(dots)))
            if alive_n == 0:
                return []
            m = min(alive_n, max(4 * k, k + 16))
            while True:
                if m >= n:
                    top = np.argsort(dots)[::-1][:alive_n]
                else:
                    part = np.argpartition(dots, n - m)[n - m :]
                    top = part[np.argsort(-dots[part], kind="stable")]
                top = top[np.isfinite(dots[top])]
                subjects = self._subj[top]
                _, first = np.unique(subjects, return_index=True)
                if len(first) >= k or len(top) >= alive_n or m >= n:
                    break
                m = min(n, m * 4)
            first.sort()
            best_rows = top[first][:k]
            best_dots = dots[best_rows].astype(np.float64)
            subj_out = self._subj[best_rows].tolist()
            ref_out = self._ref[best_rows].tolist()
        dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * np.minimum(best_dots, 1.0)))
        scores = similarity_array(dist, self.model_id)
        return [
            Hit(subject_id=int(s), reference_photo_id=int(r), distance=float(d), score=float(sc), rank=i + 1)
            for i, (s, r, d, sc) in enumerate(zip(subj_out, ref_out, dist, scores, strict=True))
        ]
