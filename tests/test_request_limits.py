"""Request bounds on a real server socket: oversize bodies and anonymous uploads are refused
before the body is read (the client has sent only its headers and a few bytes)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine
from sqlmodel import Session, select

from tests.conftest import add_user, make_settings
from triage.models import AuditEntry, Role, Sighting
from triage.security import create_api_token

BOUNDARY = "miatari-test-boundary"
MB = 1_000_000


class Server:
    def __init__(self, app: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def send(self, head: str, body: bytes = b"", *, chunks: Iterator[bytes] | None = None,
             read_timeout: float = 10.0) -> tuple[int, dict[str, str], bytes, int]:
        """Send the head, then the body (or chunks until the server answers); return status, headers,
        body and how many body bytes were sent before the answer came."""
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.settimeout(read_timeout)
        sent = 0
        try:
            sock.sendall(head.encode())
            if body:
                sock.sendall(body)
                sent += len(body)
            if chunks is not None:
                sock.setblocking(False)
                for chunk in chunks:
                    try:
                        if sock.recv(1, socket.MSG_PEEK):
                            break  # the answer is there: stop sending
                    except BlockingIOError:
                        pass
                    try:
                        sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        break
                    sent += len(chunk)
                sock.setblocking(True)
                sock.settimeout(read_timeout)
            data = b""
            while b"\r\n\r\n" not in data:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
            header_blob, _, rest = data.partition(b"\r\n\r\n")
            lines = header_blob.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                part = sock.recv(65536)
                if not part:
                    break
                rest += part
            return status, headers, rest, sent
        finally:
            sock.close()


def _multipart_head(path: str, length: int | None, *, token: str | None = None) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1",
             f"Content-Type: multipart/form-data; boundary={BOUNDARY}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return "\r\n".join(lines) + "\r\n\r\n"


def _part_start() -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()


@pytest.fixture
def app_and_engine(tmp_path: Path, db_url: str, engine: Engine) -> tuple[Any, Engine]:
    from miatari.app import create_app

    # 2 photos of 1 MB: multipart bodies over 3 MB are refused.
    app = create_app(make_settings(tmp_path, db_url, max_upload_bytes=MB, max_photos_per_sighting=2))
    return app, engine


def _token(engine: Engine, username: str = "officer1") -> str:
    user = add_user(engine, username, Role.officer)
    with Session(engine) as s:
        token, _ = create_api_token(s, user, "phone")
        s.commit()
    return token


def _audit(engine: Engine, action: str) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


def test_anonymous_upload_is_refused_before_its_body_is_read(app_and_engine) -> None:
    app, engine = app_and_engine
    with Server(app) as server:
        # 300 MB announced, only the first bytes sent: the 401 comes without waiting for the rest.
        status, headers, body, sent = server.send(_multipart_head("/api/sightings", 300 * MB), _part_start())
        assert status == 401 and json.loads(body) == {"detail": "Not authenticated"}
        assert headers["www-authenticate"] == "Bearer"
        # Even within the size limit, and on the web form (redirected to the login page).
        status, headers, _, _ = server.send(_multipart_head("/sightings", 1000), _part_start())
        assert status == 303 and headers["location"] == "/login?next=/sightings"
        # A forged token is no credential either.
        status, _, _, _ = server.send(_multipart_head("/api/sightings", 1000, token="mia_forged"), _part_start())
        assert status == 401
    entries = _audit(engine, "auth")
    assert [e.detail["reason"] for e in entries] == ["not logged in", "not logged in",
                                                     "unknown, revoked or expired credential"]
    assert all(e.detail["before_body"] and e.outcome == "denied" for e in entries)
    with Session(engine) as s:
        assert s.exec(select(Sighting)).all() == []


def test_oversize_body_is_refused_by_its_length_with_limit_and_size(app_and_engine) -> None:
    app, engine = app_and_engine
    token = _token(engine)
    with Server(app) as server:
        status, headers, body, sent = server.send(_multipart_head("/api/sightings", 300 * MB, token=token),
                                                  _part_start())
        assert status == 413 and sent < 1000
        answer = json.loads(body)
        assert answer["code"] == "request_too_large"
        assert answer["limit_bytes"] == 3 * MB and answer["size_bytes"] == 300 * MB
        assert answer["detail"] == "The request is 300.0 MB; the limit is 3.0 MB."
        assert headers["connection"] == "close"
        # A plain form or JSON body has a 1 MB limit.
        head = ("POST /api/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {2 * MB}\r\n\r\n")
        status, _, body, _ = server.send(head, b"{")
        assert status == 413 and json.loads(body)["limit_bytes"] == 1 * MB
    entries = _audit(engine, "request.too_large")
    assert len(entries) == 2
    with Session(engine) as s:
        assert s.exec(select(Sighting)).all() == []


def test_chunked_body_is_cut_off_once_it_passes_the_limit(app_and_engine) -> None:
    app, engine = app_and_engine
    token = _token(engine)

    def endless() -> Iterator[bytes]:
        yield _part_start()
        for _ in range(400):  # up to 400 MB if nobody stopped it
            yield b"\xff" * MB

    with Server(app) as server:
        status, _, body, sent = server.send(_multipart_head("/api/sightings", None, token=token), chunks=endless())
    assert status == 413
    answer = json.loads(body)
    assert answer["code"] == "request_too_large" and answer["limit_bytes"] == 3 * MB
    assert answer["size_bytes"] > 3 * MB and answer["detail"].startswith("The request is over ")
    assert sent < 50 * MB  # the server stopped it long before the 400 MB
    assert len(_audit(engine, "request.too_large")) == 1
    with Session(engine) as s:
        assert s.exec(select(Sighting)).all() == []


def test_a_photo_over_its_limit_is_told_its_real_size(make_client, engine) -> None:
    from tests.conftest import login

    client = make_client(max_upload_bytes=MB)
    add_user(engine, "officer1", Role.officer)
    login(client, "officer1")
    r = client.post("/api/sightings", files={"photos": ("big.jpg", b"\xff\xd8\xff" + b"\0" * (2 * MB), "image/jpeg")})
    assert r.status_code == 413
    assert r.json()["code"] == "image_too_large"
    assert "2.0 MB" in r.json()["detail"] and "limit is 1 MB" in r.json()["detail"]
