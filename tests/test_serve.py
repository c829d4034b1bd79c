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


def _children(pid: int) -> dict[int, tuple[str, int]]:
    """pid -> (command line, nice) of the processes whose parent is ``pid``."""
    found: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found[int(entry.name)] = (cmdline, int(fields[16]))
    return found


def _listening(port: int) -> bool:
    """Whether any socket on this machine listens on the TCP ``port`` (``/proc/net/tcp``, state 0A)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def _wait(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_serve_runs_web_processes_and_a_lower_priority_worker(tmp_path: Path) -> None:
    """The embedded default: two web processes on one port and the matching worker at nice 10;
    a dead child is started again; kill -9 of `miatari serve` takes its children with it."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIATARI_")}
    env.update({"MIATARI_DATA_DIR": str(tmp_path / "data"), "MIATARI_PORT": str(port),
                "MIATARI_WEB_PROCESSES": "2", "MIATARI_JSON_LOGS": "false", "HOME": str(tmp_path)})
    out = tmp_path / "serve.log"
    with out.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "miatari.cli", "serve"], cwd=tmp_path, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: proc.poll() is not None or _ready(port), 120, "the server to be ready")
        assert proc.poll() is None, out.read_text()
        _wait(lambda: len(_children(proc.pid)) == 3, 30, "three child processes")
        kids = _children(proc.pid)
        webs = {pid: nice for pid, (cmd, nice) in kids.items() if " serve-web " in cmd}
        workers = {pid: nice for pid, (cmd, nice) in kids.items() if cmd.rstrip().endswith(" worker")}
        assert len(webs) == 2 and set(webs.values()) == {0}, kids
        assert len(workers) == 1 and set(workers.values()) == {10}, kids
        # The web processes answer on the one port (the kernel spreads connections).
        for _ in range(20):
            with httpx.Client() as c:  # a new connection each time
                assert c.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        _wait(lambda: "face pipeline loaded" in out.read_text() or "worker started" in out.read_text(), 120,
              "the worker to start")
        # A web process that dies is started again, and the server keeps answering meanwhile.
        victim = next(iter(webs))
        os.kill(victim, 9)
        _wait(lambda: _ready(port), 60, "the other web process to answer")
        _wait(lambda: len([p for p, (c, _) in _children(proc.pid).items() if " serve-web " in c and p != victim]) == 2,
              30, "the web process to be restarted")
        assert "restarting in" in out.read_text()
        # kill -9 of the parent: the kernel ends its children, the port is free for a new server.
        children = list(_children(proc.pid))
        assert _listening(port)
        os.kill(proc.pid, 9)
        proc.wait(10)
        _wait(lambda: not any(_alive(p) for p in children), 15, "the children to end with their parent")
        # (Read from the kernel's table, not by binding: a connection another test opens meanwhile may
        # be given this number as its own local port, and that is not an orphan holding it.)
        _wait(lambda: not _listening(port), 15, f"nothing to listen on port {port}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)


def test_a_web_process_hands_the_interpreter_lock_on_quickly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread whose query returned waits at most the switch interval for the lock; a web process
    shortens it from CPython's 5 ms, and does so before it serves."""
    import uvicorn

    from miatari import cli, serving
    from tests.conftest import make_settings

    seen: list[float] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.append(sys.getswitchinterval()))
    default = sys.getswitchinterval()
    try:
        cli._run_web(make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}"), port=_free_port())
    finally:
        sys.setswitchinterval(default)
    assert seen == [pytest.approx(serving.WEB_SWITCH_INTERVAL_SECONDS)]
    assert serving.WEB_SWITCH_INTERVAL_SECONDS < default
