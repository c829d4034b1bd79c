"""The ``miatari`` command."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from sqlmodel import Session, select

from triage import audit, migrate
from triage.config import Settings, get_settings
from triage.db import make_engine
from triage.models import AuditOutcome, Role, User
from triage.security import PasswordRejected, create_user

log = logging.getLogger("miatari")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _json_logs(settings: Settings, verbose: bool) -> None:
    """A server's log lines are JSON objects, one a line (docs/operations.md), unless turned off."""
    if settings.json_logs:
        from triage import logging_json

        logging_json.install(logging.DEBUG if verbose else logging.INFO)


def _place_models() -> None:
    from matcher import ensure_models

    settings = get_settings()
    placed = ensure_models(settings.deepface_home)
    log.info("model files ready in %s (%d files)", settings.deepface_home, len(placed))


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if args.revision.startswith("-") or args.downgrade:
        migrate.downgrade(settings.db_url, args.revision if args.downgrade else args.revision)
    else:
        migrate.upgrade(settings.db_url, args.revision)
    _place_models()
    print(f"database at revision {migrate.current_revision(make_engine(settings.db_url))}")
    return 0


def _bootstrap_admin() -> None:
    """On a fresh embedded install, create a first account and say how to log in."""
    settings = get_settings()
    engine = make_engine(settings.db_url)
    with Session(engine) as session:
        if session.exec(select(User)).first() is not None:
            return
        password = secrets.token_urlsafe(15)
        create_user(session, "admin", password, [Role.admin, Role.manager], full_name="First administrator",
                    check_policy=False)
        session.commit()
    print("\n" + "=" * 64)
    print(f" First run: log in at http://{settings.host}:{settings.port}/login")
    print("   username: admin")
    print(f"   password: {password}")
    print(" Create the other accounts under Accounts, or with `miatari create-user`.")
    print("=" * 64 + "\n", flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    """Migrate (embedded default), place the models, then serve: web processes and the embedded
    worker as processes of their own (``miatari.serving``), or the app in this process."""
    from miatari import serving

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.database_url or args.migrate:
        migrate.upgrade(settings.db_url)
    elif not migrate.at_head(make_engine(settings.db_url)):
        print("The database is not at the latest migration: run `miatari migrate` first.", file=sys.stderr)
        return 2
    _place_models()
    if not settings.database_url:
        _bootstrap_admin()
    _json_logs(settings, args.verbose)
    host, port = args.host or settings.host, args.port or settings.port
    processes = serving.web_process_count(settings.web_processes)
    if processes == 1 and not settings.embedded_worker:
        _run_web(settings, port=port, host=host)
        return 0
    sock = serving.bind(host, port)
    verbose = ["-v"] if args.verbose else []
    fd = sock.fileno()
    children = [serving.Child(f"web process {n + 1}", serving.cli_argv(*verbose, "serve-web", "--fd", str(fd)),
                              pass_fds=(fd,)) for n in range(processes)]
    if settings.embedded_worker:
        children.append(serving.Child("matching worker", serving.cli_argv(*verbose, "worker")))
    log.info("serving on http://%s:%d with %d web process(es)%s", host, port, processes,
             " and the matching worker" if settings.embedded_worker else "")
    return serving.Supervisor(children).run()


def cmd_serve_web(args: argparse.Namespace) -> int:
    """One web process of ``miatari serve``, on the listening socket it inherited."""
    settings = get_settings()
    _json_logs(settings, args.verbose)
    _run_web(settings, sock=socket.socket(fileno=args.fd))
    return 0


def _run_web(settings: Settings, *, host: str = "", port: int = 0, sock: socket.socket | None = None) -> None:
    import uvicorn

    from miatari import serving
    from miatari.app import create_app

    serving.tune_web_process()
    app = create_app(settings, start_background=False)
    # With JSON logs, miatari.access writes the one line per request (route template, no query string).
    logs: dict[str, Any] = {"log_config": None, "access_log": False} if settings.json_logs else {}
    config = uvicorn.Config(app, host=host or settings.host, port=port or settings.port, proxy_headers=True,
                            log_level="info", **logs)
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)


def _lower_priority(nice: int) -> None:
    """The matcher is CPU-bound: it takes what the web processes leave (MIATARI_WORKER_NICE)."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.nice(nice - current)
    log.info("worker CPU priority: nice %d", os.getpriority(os.PRIO_PROCESS, 0))


def cmd_worker(args: argparse.Namespace) -> int:
    from miatari.registry import worker_registry
    from triage import reindex, services
    from triage.storage import ImageStore
    from triage.worker import Worker

    settings = get_settings()
    engine = make_engine(settings.db_url)
    if not migrate.at_head(engine):
        print("The database is not at the latest migration: run `miatari migrate` first.", file=sys.stderr)
        return 2
    _place_models()
    _json_logs(settings, args.verbose)
    _lower_priority(settings.worker_nice)
    from triage import prom

    prom.setup_process(settings.data_dir)  # its gallery series join the web processes' scrape
    store = ImageStore(settings.images_dir)
    worker = Worker(services.build(engine, settings, store), worker_registry(), run_sweeps=not args.no_sweeps)
    reindex.ensure_started(engine, settings)

    def _stop(*_: object) -> None:
        log.info("stopping after the current job")
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("worker started")
    worker.loop()
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    settings = get_settings()
    password = args.password or (getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline().strip())
    engine = make_engine(settings.db_url)
    with Session(engine) as session:
        try:
            user = create_user(session, args.username, password, args.role, full_name=args.full_name or "")
        except (ValueError, PasswordRejected) as exc:
            session.rollback()
            audit.record(session, "user.create", outcome=AuditOutcome.denied, object_type="user",
                         object_id=args.username[:64], detail={"reason": str(exc), "roles": args.role, "via": "cli"})
            session.commit()
            print(f"error: {exc}", file=sys.stderr)
            return 1
        session.commit()
        print(f"created user {user.username} (id {user.id}) with roles: {user.roles}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miatari", description="Two-person face-match triage queue.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the web app (with the embedded worker by default)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--migrate", action="store_true", help="apply migrations first (always done on SQLite)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("serve-web", help=argparse.SUPPRESS)  # one web process, started by `serve`
    p.add_argument("--fd", type=int, required=True)
    p.set_defaults(func=cmd_serve_web)

    p = sub.add_parser("migrate", help="apply database migrations and place the model files")
    p.add_argument("revision", nargs="?", default="head")
    p.add_argument("--downgrade", action="store_true", help="downgrade to REVISION instead")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("worker", help="run a matching worker process (any number of them on PostgreSQL)")
    p.add_argument("--no-sweeps", action="store_true", help="leave the periodic sweeps to other processes")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("create-user", help="create an account")
    p.add_argument("username")
    p.add_argument("--role", action="append", required=True, choices=[r.value for r in Role],
                   help="repeatable; a recognizer cannot also be manager or admin (separation of duties)")
    p.add_argument("--full-name")
    p.add_argument("--password", help="read from the terminal or standard input if omitted")
    p.set_defaults(func=cmd_create_user)

    from miatari import commands_audit, commands_reindex, commands_watchlist

    commands_audit.register(sub)
    commands_reindex.register(sub)
    commands_watchlist.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
