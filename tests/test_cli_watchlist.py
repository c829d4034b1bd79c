"""`miatari watchlist import`: folders and CSV, failures with reasons, resumable and idempotent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlmodel import Session, select

from miatari.cli import main
from tests.conftest import make_settings, require_faces
from tests.triage.test_matching import astronaut_altered_jpeg, astronaut_png, blank_png, grace_hopper_jpeg
from triage.config import get_settings
from triage.models import AuditEntry, GalleryChange, ReferencePhoto, Subject

pytestmark = pytest.mark.model


@pytest.fixture
def cli_env(monkeypatch, tmp_path: Path, db_url: str):  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, db_url)
    monkeypatch.setenv("MIATARI_DATABASE_URL", db_url)
    monkeypatch.setenv("MIATARI_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MIATARI_SECRET_KEY", "t" * 40)
    monkeypatch.setenv("MIATARI_MODELS_DIR", str(settings.deepface_home))
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_folder_import_reports_failures_and_a_second_run_adds_nothing(cli_env, engine, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                      face_pipeline, capsys) -> None:
    root = tmp_path / "gallery"
    for name, files in {"astronaut": {"front.png": astronaut_png(), "other.jpg": astronaut_altered_jpeg(),
                                      "copy.png": astronaut_png()},
                        "hopper": {"portrait.jpg": grace_hopper_jpeg(), "wall.png": blank_png()},
                        "nobody": {"broken.jpg": b"this is not a photo" * 10}}.items():
        (root / name).mkdir(parents=True)
        for fname, data in files.items():
            (root / name / fname).write_bytes(data)
    assert main(["watchlist", "import", str(root), "--workers", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3 subjects, 6 photos" in out
    assert "3 enrolled, 1 already enrolled, 2 failed" in out  # copy.png is front.png again
    assert "no face found" in out and "broken.jpg" in out and "photos/s" in out
    with Session(engine) as s:
        assert len(s.exec(select(Subject)).all()) == 3
        assert len(s.exec(select(ReferencePhoto)).all()) == 3
        assert len(s.exec(select(GalleryChange)).all()) == 3
    assert main(["watchlist", "import", str(root), "--workers", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "(0 new)" in out and "0 enrolled, 4 already enrolled, 2 failed" in out
    with Session(engine) as s:
        assert len(s.exec(select(ReferencePhoto)).all()) == 3
        assert len(s.exec(select(AuditEntry).where(AuditEntry.action == "watchlist.import")).all()) == 2


def test_csv_import_with_a_column_map(cli_env, engine, tmp_path: Path, face_pipeline, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(astronaut_png())
    (tmp_path / "img" / "h.jpg").write_bytes(grace_hopper_jpeg())
    (tmp_path / "ids.csv").write_text("file,identity\nimg/a.png,101\nimg/h.jpg,102\n")
    assert main(["watchlist", "import", str(tmp_path / "ids.csv"), "--csv", "--map", "photo=file",
                 "--map", "name=identity", "--workers", "0", "--quiet"]) == 0
    assert "2 enrolled" in capsys.readouterr().out
    with Session(engine) as s:
        assert sorted(x.name for x in s.exec(select(Subject)).all()) == ["101", "102"]


@pytest.mark.faces
def test_frmdb_mugshots_with_two_worker_processes(cli_env, engine, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    frmdb = require_faces() / "frmdb"
    root = tmp_path / "frmdb"
    for folder in ("001", "002", "040"):  # a few subjects; the full import is run by hand
        shutil.copytree(frmdb / folder, root / folder)
    assert main(["watchlist", "import", str(root), "--include", "mugshot_*", "--workers", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3 subjects, 9 photos" in out
    with Session(engine) as s:
        photos = s.exec(select(ReferencePhoto)).all()
        assert len(photos) >= 8 and all("mugshot" in p.view for p in photos)
    assert main(["watchlist", "import", str(root), "--include", "mugshot_*", "--workers", "2", "--quiet"]) == 0
    assert f"0 enrolled, {len(photos)} already enrolled" in capsys.readouterr().out
