"""Fuzz the JSON API against its own OpenAPI document with schemathesis.

Starts the real server (``miatari serve``, loopback, a fresh data folder and
SQLite database), seeds accounts with API tokens, and runs schemathesis on
``/openapi.json`` as each of them. Every answer must be documented (status,
content type, body schema) and none may be a server error::

    .venv/bin/python scripts/fuzz.py            # full run (make fuzz)
    .venv/bin/python scripts/fuzz.py --quick    # a short run (CI)

Exits non-zero when schemathesis found a failure.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSWORD = "fuzzing is a long password 42"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# Who the fuzzer is: each role's routes answer beyond 401/403 only to an account that holds it.
# (A recognizer never holds manager or admin rights: separation of duties.) The admin goes last:
# it may reset its own password or revoke its own token, after which it gets 401/403 answers.
ACCOUNTS = {"fuzz-chief": ["officer", "manager"], "fuzz-recognizer": ["recognizer"], "fuzz-admin": ["admin"]}
DECOYS = 5  # accounts and tokens made first, so the fuzzer's own ids are not the smallest ones tried


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(env: dict[str, str]) -> dict[str, str]:
    """Migrate the database and create the accounts; return a token per account."""
    for key, value in env.items():
        os.environ[key] = value
    from sqlmodel import Session

    from triage import migrate
    from triage.config import Settings
    from triage.db import make_engine
    from triage.security import create_api_token, create_user

    settings = Settings(_env_file=None)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    tokens: dict[str, str] = {}
    with Session(engine, expire_on_commit=False) as session:
        for n in range(DECOYS):
            decoy = create_user(session, f"decoy{n}", PASSWORD, ["officer"])
            session.flush()
            create_api_token(session, decoy, "decoy")
        for name, roles in ACCOUNTS.items():
            user = create_user(session, name, PASSWORD, roles)
            session.flush()
            tokens[name], _ = create_api_token(session, user, "fuzzer")
        session.commit()
    engine.dispose()
    return tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz the JSON API with schemathesis.")
    parser.add_argument("--quick", action="store_true", help="a short run: few examples per operation")
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    examples = args.max_examples or (8 if args.quick else 100)
    max_time = 45 if args.quick else 900

    work = Path(tempfile.mkdtemp(prefix="miatari-fuzz-"))
    port = _free_port()
    env = {"MIATARI_DATA_DIR": str(work / "data"), "MIATARI_DATABASE_URL": f"sqlite:///{work / 'data' / 'f.db'}",
           "MIATARI_SECRET_KEY": "f" * 40, "MIATARI_EMBEDDED_WORKER": "false", "MIATARI_PORT": str(port)}
    tokens = seed(env)
    server_env = {**{k: v for k, v in os.environ.items() if not k.startswith("MIATARI_")}, **env}
    log = (work / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "miatari.cli", "serve"], cwd=work, env=server_env,
                              stdout=log, stderr=subprocess.STDOUT)
    failed = False
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print((work / "serve.log").read_text(), file=sys.stderr)
                return 2
            time.sleep(0.3)
        for name, token in tokens.items():
            print(f"== schemathesis as {name} ({', '.join(ACCOUNTS[name])}), {examples} examples per operation ==",
                  flush=True)
            cmd = [str(Path(sys.executable).parent / "schemathesis"), "run", f"http://127.0.0.1:{port}/openapi.json",
                   "--checks", CHECKS, "--max-examples", str(examples), "--max-time", str(max_time),
                   "--header", f"Authorization: Bearer {token}", "--workers", "1", "--no-color",
                   # The first reference photo loads the face model in the web process (20-40 s on a busy machine).
                   "--request-timeout", "120", "--generation-database", "none",
                   "--suppress-health-check", "all", "--warnings", "off"]
            if args.seed is not None:
                cmd += ["--seed", str(args.seed)]
            result = subprocess.run(cmd, cwd=work)
            failed = failed or result.returncode != 0
    finally:
        server.terminate()
        server.wait(20)
        log.close()
    if failed:
        print(f"schemathesis found failures; server log: {work / 'serve.log'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
