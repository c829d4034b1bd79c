"""`miatari reindex`: a real process re-embedding with a progress bar, killed with SIGKILL half-way, run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from miatari.cli import main
from tests.conftest import ROOT, make_settings, require_faces
from triage import watchlist
from triage.config import get_settings
from triage.gallery import active_model_id, enrolment_models
from triage.models import AuditEntry, ReferenceEmbedding, ReferencePhoto, ReindexRun
from triage.storage import ImageStore

pytestmark = [pytest.mark.model, pytest.mark.faces]

NEW_MODEL = "faceres"
LEASE_SECONDS = 8  # short, so the second run takes over the killed one's job soon
STARTUP_SECONDS = 240


def _counts(engine) -> tuple[int, int, int]:
    """(photos done by the run, target embeddings stored, distinct photos holding one)."""
    with Session(engine) as s:
        run = s.exec(select(ReindexRun)).first()
        if run is None:
            return 0, 0, 0
        rows = s.exec(select(func.count(), func.count(func.distinct(ReferenceEmbedding.reference_photo_id)))
                      .where(ReferenceEmbedding.model_id == run.target_model_id)).one()
        return run.photos_done, int(rows[0]), int(rows[1])


def test_reindex_command_shows_progress_survives_sigkill_and_completes(
        engine, tmp_path: Path, db_url: str, face_pipeline, monkeypatch, capsys) -> None:
    frmdb = require_faces() / "frmdb"
    settings = make_settings(tmp_path, db_url, face_model="dlib")
    store = ImageStore(settings.images_dir)
    for label in ("002", "003", "004"):
        with Session(engine, expire_on_commit=False) as s:
            subject = watchlist.create_subject(s, watchlist.SubjectCreate(name=label, case_ref=label), None)
            s.commit()
        for view in ("mugshot_Img_33.png", "mugshot_Img_22.png"):
            analysis = watchlist.analyze_for_enrolment((frmdb / label / view).read_bytes(), settings, face_pipeline,
                                                       enrolment_models(engine, settings.face_model))
            with Session(engine) as s:
                watchlist.enrol_reference_photo(s, store, subject.pk, analysis, None)
                s.commit()
    env = {**os.environ, "MIATARI_DATABASE_URL": db_url, "MIATARI_DATA_DIR": str(settings.data_dir),
           "MIATARI_SECRET_KEY": "t" * 40, "MIATARI_MODELS_DIR": str(settings.deepface_home),
           "MIATARI_FACE_MODEL": NEW_MODEL, "MIATARI_JOB_LEASE_SECONDS": str(LEASE_SECONDS)}
    command = [str(ROOT / ".venv" / "bin" / "miatari"), "reindex", "--batch-size", "2"]
    if not Path(command[0]).exists():
        command = [sys.executable, "-m", "miatari.cli", "reindex", "--batch-size", "2"]

    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while _counts(engine)[0] < 2:  # one batch committed
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run did not commit a batch in time"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    done, stored, distinct = _counts(engine)
    assert 2 <= done < 6 and done % 2 == 0, "killed half-way: whole batches only"
    assert stored == distinct == done

    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=STARTUP_SECONDS + 4 * LEASE_SECONDS)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "re-embedding run 1: dlib@55533b28a95800a5 -> faceres@" in second.stdout
    assert "photos: 6 of 6 hold an embedding of faceres@" in second.stdout
    assert "the gallery now searches with faceres@" in second.stdout
    assert "re-embedding" in second.stderr and "6/6" in second.stderr  # the progress bar
    assert _counts(engine) == (6, 6, 6)
    with Session(engine) as s:
        assert active_model_id(s).startswith(NEW_MODEL + "@")
        assert len(s.exec(select(ReferencePhoto)).all()) == 6
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "job.lease_expired")).first() is not None

    for key, value in env.items():
        if key.startswith("MIATARI_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        assert main(["reindex", "--status"]) == 0
        out = capsys.readouterr().out
        assert "active model:     faceres@" in out and "6 of 6" in out and "switched the gallery" in out
        assert main(["reindex"]) == 0
        assert "nothing to do" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
