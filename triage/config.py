"""Settings: one ``Settings`` object, read from ``MIATARI_*`` variables and ``.env``."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from matcher.embedders import DEFAULT_MODEL, available_models
from matcher.pipeline import PROBE_MIN_IOD_PX
from matcher.score import DEFAULT_LEAD_THRESHOLD

PLACEHOLDER_SECRET = "change-me"
SECRET_FILE_NAME = "secret_key"
WEBHOOK_SECRET_MIN = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MIATARI_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Deployment
    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("data")
    # Empty means: a SQLite file inside data_dir.
    database_url: str = ""
    # Empty means: generated once and kept in data_dir (development only).
    secret_key: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # `miatari serve` also runs one matching worker, as a process of its own (the embedded default).
    embedded_worker: bool = True
    # Before serving, a web process builds its routes, compiles its templates and reads the metrics once,
    # so its first requests are as quick as the rest (about 0.3 s at start).
    warm_up: bool = True
    # Web processes `miatari serve` starts on its port; 0 = one per core, at most four.
    web_processes: int = Field(default=0, ge=0, le=32)
    # The CPU priority (nice) of matching workers: the matcher takes what the web processes leave.
    worker_nice: int = Field(default=10, ge=0, le=19)
    worker_poll_seconds: float = 1.0
    job_lease_seconds: int = 300
    job_max_attempts: int = 3
    gallery_sync_seconds: float = 2.0
    # Where deepface looks for its weights ($DEEPFACE_HOME/.deepface/weights).
    models_dir: Path | None = None

    # Matcher
    # The face descriptor new embeddings are made with (docs/matcher.md). When it differs from
    # the model the gallery searches with, reference photos are re-embedded (`miatari reindex`).
    face_model: str = DEFAULT_MODEL
    # Default measured on the reference photos; see docs/matcher.md.
    lead_threshold: float = Field(default=DEFAULT_LEAD_THRESHOLD, ge=0.0, le=1.0)
    top_k: int = Field(default=5, ge=1, le=50)
    # Faces found in sightings with fewer pixels between the eyes are stored and shown but
    # not searched (at that size the ranking is at chance; docs/matcher.md).
    min_face_iod_px: float = Field(default=PROBE_MIN_IOD_PX, ge=0.0)

    # Uploads
    max_upload_bytes: int = Field(default=25_000_000, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    max_photos_per_sighting: int = Field(default=10, ge=1)
    # Largest multipart request body; 0 = photos per sighting x photo limit + 1 MB.
    max_request_bytes: int = Field(default=0, ge=0)
    # Photos decoded at once per process (each holds its decoded pixels meanwhile; docs/sightings.md).
    max_concurrent_decodes: int = Field(default=2, ge=1, le=64)

    # Review queue
    lease_seconds: int = Field(default=300, ge=10)
    # While the task page sees the person at work it renews the lease, up to this long on one task in all.
    lease_max_seconds: int = Field(default=1200, ge=10)
    # A verdict given on the task page can be undone this long before it counts (0 = it counts at once).
    verdict_undo_seconds: float = Field(default=5.0, ge=0, le=60)
    known_answer_share: float = Field(default=0.05, ge=0.0, le=0.5)
    # Recognizers on probation (new, or reinstated) get known-answer tasks at this higher share; at 1 they
    # take no live task until qualified, so no flag ever rests on an unqualified account's word.
    probation_known_answer_share: float = Field(default=1.0, ge=0.0, le=1.0)
    # The bar of triage.qualification: suspended below it (95% upper bound), qualified above (lower bound).
    qualification_min_accuracy: float = Field(default=0.6, ge=0.5, le=0.99)
    fresh_sighting_hours: float = Field(default=6.0, gt=0)
    # Managers' metrics are recomputed at most this often per period (0 = on every view).
    metrics_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    # Sessions and accounts
    session_idle_minutes: int = Field(default=30, ge=1)
    session_absolute_hours: int = Field(default=12, ge=1)
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_minutes: int = Field(default=10, ge=1)
    # Failed logins from one address (any usernames) before that address is throttled too.
    login_max_failures_per_address: int = Field(default=20, ge=1)
    require_totp_for_privileged: bool = False
    # Forced true in production.
    secure_cookies: bool = False

    # Operations (docs/operations.md)
    # Bearer token a Prometheus scraper sends to /metrics; empty (and no allow-list) = /metrics answers 404.
    metrics_token: str = ""
    # Addresses or networks (comma-separated, e.g. "10.0.0.0/8,127.0.0.1") allowed to scrape without the token.
    metrics_allow: str = ""
    # Notification events are POSTed here as signed JSON; empty = not sent (recorded as skipped).
    webhook_url: str = ""
    webhook_secret: str = ""
    # One JSON line per request and per job on the "miatari.access" / "miatari.jobs" loggers.
    json_logs: bool = True

    # Retention
    retention_days_unflagged: int = Field(default=30, ge=1)
    retention_days_audit: int = Field(default=400, ge=365)
    sweep_interval_seconds: int = Field(default=300, ge=5)
    # PostgreSQL: how often the worker looks for tables whose planner statistics are stale (0: never;
    # triage.planner_stats).
    analyze_interval_seconds: int = Field(default=15, ge=0)

    @field_validator("face_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in available_models():
            raise ValueError(f"unknown face model {value!r}; this build has: {', '.join(available_models())}")
        return value

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"MIATARI_METRICS_ALLOW: {part!r} is not an address or network") from None
        return value

    @model_validator(mode="after")
    def _check_webhook(self) -> Settings:
        if self.webhook_url:
            if not self.webhook_url.startswith(("https://", "http://")):
                raise ValueError("MIATARI_WEBHOOK_URL must be an http(s) URL")
            if len(self.webhook_secret) < WEBHOOK_SECRET_MIN:
                raise ValueError(f"MIATARI_WEBHOOK_SECRET must be set ({WEBHOOK_SECRET_MIN}+ characters) "
                                 "when MIATARI_WEBHOOK_URL is")
        return self

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.environment == "production":
            if not self.secret_key or self.secret_key == PLACEHOLDER_SECRET or len(self.secret_key) < 32:
                raise ValueError(
                    "MIATARI_SECRET_KEY must be set to a random value of 32+ characters in production"
                )
            if not self.database_url:
                raise ValueError("MIATARI_DATABASE_URL must be set in production")
            # Production is served over HTTPS (the app also sends HSTS): cookies are always Secure.
            self.secure_cookies = True
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'miatari.db').resolve()}"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def deepface_home(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    def ensure_secret_key(self) -> str:
        """Return the secret key, generating and keeping one in development."""
        if self.secret_key:
            return self.secret_key
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / SECRET_FILE_NAME
        if path.exists():
            self.secret_key = path.read_text().strip()
        else:
            self.secret_key = secrets.token_urlsafe(48)
            path.write_text(self.secret_key)
            path.chmod(0o600)
        return self.secret_key


@lru_cache
def get_settings() -> Settings:
    return Settings()
