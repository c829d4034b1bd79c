"""`miatari serve` on a fresh data folder: migrates, places models, prints the first login,
answers /healthz and /readyz — with every non-loopback connection blocked and recorded."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
NETBLOCK = ROOT / "tests" / "support" / "netblock"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fresh_start_is_ready_and_offline(tmp_path: Path) -> None:
    port = _free_port()
    netlog = tmp_path / "net.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIATARI_")}
    env.update({
        "MIATARI_DATA_DIR": str(tmp_path / "data"),
        "MIATARI_PORT": str(port),
        "PYTHONPATH": str(NETBLOCK),
        "MIATARI_NETBLOCK_LOG": str(netlog),
        "HOME": str(tmp_path),  # nothing cached from earlier runs
        "MIATARI_METRICS_TOKEN": "scrape-token-" + "z" * 24,
    })
    out = tmp_path / "serve.log"
    with out.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "miatari.cli", "serve"], cwd=tmp_path, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"serve exited early:\n{out.read_text()}")
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, (ready and ready.text, out.read_text())
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        log = out.read_text()
        assert "username: admin" in log and "password: " in log
        login = httpx.get(f"http://127.0.0.1:{port}/login", headers={"X-Request-ID": "probe-1"})
        assert login.status_code == 200 and "Log in" in login.text and login.headers["x-request-id"] == "probe-1"
        # Prometheus, from the running server: guarded, and its own requests timed by route template.
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 401
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics",
                            headers={"Authorization": "Bearer scrape-token-" + "z" * 24})
        assert scraped.status_code == 200 and "\nmiatari_queue_depth 0.0\n" in scraped.text
        assert 'miatari_http_request_duration_seconds_count{method="GET",route="/login",status="200"} 1.0' \
            in scraped.text
        assert list((tmp_path / "data" / "prometheus").glob("histogram_*.db"))
        # One JSON line per request, with the caller's request id.
        lines = [json.loads(x) for x in out.read_text().splitlines() if x.startswith("{")]
        access = [x for x in lines if x.get("logger") == "miatari.access" and x.get("request_id") == "probe-1"]
        assert len(access) == 1 and access[0]["route"] == "/login" and access[0]["status"] == 200
    finally:
        proc.terminate()
        proc.wait(30)
    assert not netlog.exists() or netlog.read_text() == "", f"network access attempted: {netlog.read_text()}"
    assert (tmp_path / "data" / "miatari.db").exists()
