"""`miatari watchlist import`: folders and CSV, a preview first, failures with reasons, resumable and idempotent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from miatari.cli import main
from tests.conftest import make_settings, require_faces
from tests.triage.test_matching import astronaut_altered_jpeg, astronaut_png, blank_png, grace_hopper_jpeg
from triage.config import get_settings
from triage.models import AuditEntry, GalleryChange, ReferencePhoto, Subject

pytestmark = pytest.mark.model


@pytest.fixture
def cli_env(monkeypatch, tmp_path: Path, db_url: str):
    settings = make_settings(tmp_path, db_url)
    monkeypatch.setenv("MIATARI_DATABASE_URL", db_url)
    monkeypatch.setenv("MIATARI_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MIATARI_SECRET_KEY", "t" * 40)
    monkeypatch.setenv("MIATARI_MODELS_DIR", str(settings.deepface_home))
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_folder_import_reports_failures_and_a_second_run_adds_nothing(cli_env, engine, tmp_path: Path,
                                                                      face_pipeline, capsys) -> None:
    root = tmp_path / "gallery"
    for name, files in {"astronaut": {"front.png": astronaut_png(), "other.jpg": astronaut_altered_jpeg(),
                                      "copy.png": astronaut_png()},
                        "hopper": {"portrait.jpg": grace_hopper_jpeg(), "wall.png": blank_png()},
                        "nobody": {"broken.jpg": b"this is not a photo" * 10}}.items():
        (root / name).mkdir(parents=True)
        for fname, data in files.items():
            (root / name / fname).write_bytes(data)
    assert main(["watchlist", "import", str(root), "--workers", "0", "--quiet", "--yes", "--name", "mugs"]) == 0
    out = capsys.readouterr().out
    assert "3 subjects, 6 photos" in out and "import mugs: 3 new subjects" in out
    assert "3 enrolled, 1 already enrolled, 2 failed" in out  # copy.png is front.png again
    assert "no face found" in out and "broken.jpg" in out and "photos/s" in out
    with Session(engine) as s:
        assert len(s.exec(select(Subject)).all()) == 3
        assert len(s.exec(select(ReferencePhoto)).all()) == 3
        assert len(s.exec(select(GalleryChange)).all()) == 3
    # The same import run again (as after an interruption) finds its own subjects.
    assert main(["watchlist", "import", str(root), "--workers", "0", "--quiet", "--yes", "--name", "mugs"]) == 0
    out = capsys.readouterr().out
    assert "0 new subjects" in out and "3 continued from this import" in out
    assert "(0 new)" in out and "0 enrolled, 4 already enrolled, 2 failed" in out
    with Session(engine) as s:
        assert len(s.exec(select(ReferencePhoto)).all()) == 3
        assert len(s.exec(select(AuditEntry).where(AuditEntry.action == "watchlist.import")).all()) == 2


def test_csv_import_with_a_column_map(cli_env, engine, tmp_path: Path, face_pipeline, capsys) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(astronaut_png())
    (tmp_path / "img" / "h.jpg").write_bytes(grace_hopper_jpeg())
    (tmp_path / "ids.csv").write_text("file,identity\nimg/a.png,101\nimg/h.jpg,102\n")
    assert main(["watchlist", "import", str(tmp_path / "ids.csv"), "--csv", "--map", "photo=file",
                 "--map", "name=identity", "--workers", "0", "--quiet", "--yes"]) == 0
    assert "2 enrolled" in capsys.readouterr().out
    with Session(engine) as s:
        assert sorted(x.name for x in s.exec(select(Subject)).all()) == ["101", "102"]


@pytest.mark.faces
def test_frmdb_mugshots_with_two_worker_processes(cli_env, engine, tmp_path: Path, capsys) -> None:
    frmdb = require_faces() / "frmdb"
    root = tmp_path / "frmdb"
    for folder in ("001", "002", "040"):  # a few subjects; the full import is run by hand
        shutil.copytree(frmdb / folder, root / folder)
    assert main(["watchlist", "import", str(root), "--include", "mugshot_*", "--workers", "2", "--quiet", "--yes",
                 "--name", "frmdb"]) == 0
    out = capsys.readouterr().out
    assert "3 subjects, 9 photos" in out
    with Session(engine) as s:
        photos = s.exec(select(ReferencePhoto)).all()
        assert len(photos) >= 8 and all("mugshot" in p.view for p in photos)
    assert main(["watchlist", "import", str(root), "--include", "mugshot_*", "--workers", "2", "--quiet", "--yes",
                 "--name", "frmdb"]) == 0
    assert f"0 enrolled, {len(photos)} already enrolled" in capsys.readouterr().out


def test_another_import_with_the_same_folder_name_makes_a_new_subject(cli_env, engine, tmp_path: Path,
                                                                      face_pipeline, capsys, monkeypatch) -> None:
    first, second = tmp_path / "unit-a", tmp_path / "unit-b"
    (first / "001").mkdir(parents=True)
    (first / "001" / "front.png").write_bytes(astronaut_png())
    (second / "001").mkdir(parents=True)
    (second / "001" / "front.jpg").write_bytes(grace_hopper_jpeg())  # another person, the same folder name
    assert main(["watchlist", "import", str(first), "--workers", "0", "--quiet", "--yes"]) == 0
    with Session(engine) as s:
        (wanted,) = s.exec(select(Subject)).all()
    capsys.readouterr()
    # A preview only; then no answer to the question (no terminal) enrols nothing either.
    assert main(["watchlist", "import", str(second), "--workers", "0", "--quiet", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"001: 1 photos, new (subject #{wanted.id} with the same name or case reference exist" in out
    assert "dry run: nothing enrolled" in out
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["watchlist", "import", str(second), "--workers", "0", "--quiet"]) == 1
    assert "pass --yes" in capsys.readouterr().err
    with Session(engine) as s:
        assert len(s.exec(select(Subject)).all()) == 1 and len(s.exec(select(ReferencePhoto)).all()) == 1
    assert main(["watchlist", "import", str(second), "--workers", "0", "--quiet", "--yes"]) == 0
    with Session(engine) as s:
        subjects = s.exec(select(Subject).order_by(col(Subject.id))).all()
        assert len(subjects) == 2
        assert [len(s.exec(select(ReferencePhoto).where(ReferencePhoto.subject_id == x.id)).all())
                for x in subjects] == [1, 1]  # the earlier subject 001 got nothing of the other person
    # Named explicitly, a folder adds to an existing subject; a subject that does not exist is refused.
    assert main(["watchlist", "import", str(second), "--workers", "0", "--quiet", "--yes",
                 "--into", "001=999"]) == 1
    assert "No subject #999" in capsys.readouterr().err
    assert main(["watchlist", "import", str(first), "--workers", "0", "--quiet", "--yes",
                 "--into", f"001={subjects[1].id}"]) == 0
    out = capsys.readouterr().out
    assert f"001: 1 photos, adds to existing subject #{subjects[1].id} 001 (named explicitly)" in out
    with Session(engine) as s:
        assert len(s.exec(select(Subject)).all()) == 2
        assert len(s.exec(select(ReferencePhoto).where(ReferencePhoto.subject_id == subjects[1].id)).all()) == 2
