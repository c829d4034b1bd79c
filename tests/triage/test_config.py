import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from triage.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^MIATARI_([A-Z_]+)=", text, re.M))
    assert listed == {name.upper() for name in Settings.model_fields}


def test_env_example_defaults_parse() -> None:
    values = dict(re.findall(r"^MIATARI_([A-Z_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    s = Settings(_env_file=None, **{k.lower(): v for k, v in values.items() if v != ""})
    assert s.environment == "development"


def test_production_refuses_placeholder_secret() -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(_env_file=None, environment="production", secret_key="change-me",
                 database_url="postgresql+psycopg://x@y/z")
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        Settings(_env_file=None, environment="production", secret_key="x" * 40)


def test_secret_key_generated_once_and_kept(tmp_path: Path) -> None:
    a = Settings(_env_file=None, data_dir=tmp_path)
    key = a.ensure_secret_key()
    b = Settings(_env_file=None, data_dir=tmp_path)
    assert len(key) >= 32 and b.ensure_secret_key() == key
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIATARI_TOP_K", "7")
    assert Settings(_env_file=None).top_k == 7
    monkeypatch.setenv("MIATARI_TOP_K", "0")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_lead_threshold_default_is_the_matchers_measured_one() -> None:
    from matcher import DEFAULT_LEAD_THRESHOLD

    values = dict(re.findall(r"^MIATARI_([A-Z_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    assert Settings(_env_file=None).lead_threshold == DEFAULT_LEAD_THRESHOLD
    assert float(values["LEAD_THRESHOLD"]) == DEFAULT_LEAD_THRESHOLD


def test_probe_size_gate_default_is_the_matchers_measured_one() -> None:
    from matcher import PROBE_MIN_IOD_PX

    values = dict(re.findall(r"^MIATARI_([A-Z_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    assert PROBE_MIN_IOD_PX > 0
    assert Settings(_env_file=None).min_face_iod_px == PROBE_MIN_IOD_PX
    assert float(values["MIN_FACE_IOD_PX"]) == PROBE_MIN_IOD_PX
