"""`miatari watchlist …` commands: bulk enrolment.

    miatari watchlist import FOLDER [--include 'mugshot_*'] [--into FOLDER=SUBJECT_ID]
    miatari watchlist import FILE.csv --csv [--map name=identity --map photo=file]   (optional subject_id column)

Every import has a name (``--name``, generated if not given) and creates new
subjects keyed by it: a later import never adds photos to them, nor to any
subject enrolled before, unless that subject is named explicitly (``--into``
for a folder, a ``subject_id`` column in a CSV).  A preview of every planned
subject is printed first; ``--dry-run`` stops there, and without ``--yes`` the
command asks before enrolling.  An interrupted import is resumed by running it
again with the same ``--name``: it finds its own subjects, and a photo already
enrolled is recognised by its content hash and skipped.

The face analysis runs in ``--workers`` processes (each loads the model once);
the database writes stay in this process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import multiprocessing as mp
import re
import secrets
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from triage import watchlist
from triage.config import Settings

BATCH_PER_WORKER = 16
PREVIEW_LINES = 50
IMPORT_NAME = re.compile(r"[A-Za-z0-9._-]{1,60}")
_worker_pipeline: Any = None
_worker_settings: Settings | None = None
_worker_models: list[str] = []


def _init_worker(settings: Settings, models: list[str]) -> None:
    global _worker_pipeline, _worker_settings, _worker_models
    from matcher import ensure_models, get_pipeline

    ensure_models(settings.deepface_home)
    _worker_settings = settings
    _worker_models = models
    _worker_pipeline = get_pipeline(models_home=settings.deepface_home, model=settings.face_model)


def _analyze_in_worker(task: watchlist.AnalysisTask) -> tuple[watchlist.AnalysisTask, watchlist.FaceAnalysis | str]:
    assert _worker_settings is not None
    result = watchlist.analyze_task(task.data, _worker_settings, _worker_pipeline, _worker_models)
    # The bytes are sent back for storing; drop the copy in the task to halve the traffic.
    return watchlist.AnalysisTask(task.subject_id, task.label, b""), result


def analyze_in_pool(settings: Settings, workers: int, models: list[str]) -> watchlist.AnalyzeMany:
    """Analyse in ``workers`` processes; results come back as they finish."""

    def run(tasks: Iterable[watchlist.AnalysisTask]) -> Iterator[tuple[watchlist.AnalysisTask,
                                                                       watchlist.FaceAnalysis | str]]:
        ctx = mp.get_context("spawn")
        source = iter(tasks)
        size = BATCH_PER_WORKER * workers
        batch = list(itertools.islice(source, size))
        if not batch:
            return  # everything already enrolled: no need to load the model
        with ctx.Pool(workers, initializer=_init_worker, initargs=(settings, models)) as pool:
            # In batches: the pool would otherwise read every photo into its queue at once,
            # and the task list is then built in this thread (it touches the database).
            while batch:
                yield from pool.imap_unordered(_analyze_in_worker, batch, chunksize=1)
                batch = list(itertools.islice(source, size))

    return run


def _parse_map(items: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in items:
        field, sep, column = item.partition("=")
        if not sep or field not in (*watchlist.CSV_FIELDS, "photo"):
            raise SystemExit(f"--map expects FIELD=COLUMN with FIELD one of "
                             f"{', '.join((*watchlist.CSV_FIELDS, 'photo'))}; got {item!r}")
        mapping[field] = column
    return mapping


def _parse_into(items: list[str]) -> dict[str, int]:
    try:
        return watchlist.parse_targets("\n".join(items))
    except watchlist.WatchlistError as exc:
        raise SystemExit(f"--into expects FOLDER=SUBJECT_ID: {exc}") from None


def print_preview(rows: list[watchlist.PlannedSubject], name: str) -> None:
    new = [r for r in rows if r.action == "new"]
    print(f"import {name}: {len(new)} new subjects, "
          f"{sum(r.action == 'existing' for r in rows)} existing subjects named explicitly, "
          f"{sum(r.action == 'resumed' for r in rows)} continued from this import")
    shown = [r for r in rows if r.action != "new" or r.lookalikes] + [r for r in new if not r.lookalikes]
    for r in shown[:PREVIEW_LINES]:
        print(f"  {r.label}: {r.photos} photos, {r.describe()}")
    if len(shown) > PREVIEW_LINES:
        print(f"  … and {len(shown) - PREVIEW_LINES} more new subjects")


def _confirmed(args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("Nothing enrolled: pass --yes to enrol without being asked (or --dry-run to preview only).",
              file=sys.stderr)
        return False
    return input("Enrol as previewed? [y/N] ").strip().lower() in ("y", "yes")


def cmd_import(args: argparse.Namespace) -> int:
    from sqlmodel import Session, select
    from tqdm import tqdm

    from triage import migrate
    from triage.config import get_settings
    from triage.db import make_engine
    from triage.models import User
    from triage.storage import ImageStore

    settings = get_settings()
    engine = make_engine(settings.db_url)
    if not migrate.at_head(engine):
        print("The database is not at the latest migration: run `miatari migrate` first.", file=sys.stderr)
        return 2
    path = Path(args.path)
    include = [p for p in args.include or [] if p]
    plan = _read_plan(args, path, include)
    if plan is None:
        return 1
    if args.limit:
        plan = plan[: args.limit]
    name = args.name or f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    if not IMPORT_NAME.fullmatch(name):
        print("error: --name takes 1 to 60 letters, digits, '.', '_' or '-'", file=sys.stderr)
        return 1
    ref = f"cli-import:{name}"
    try:
        plan = watchlist.name_targets(plan, _parse_into(args.into or []))
        with Session(engine) as session:
            rows = watchlist.preview_import(session, plan, ref)
    except watchlist.WatchlistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    actor = None
    if args.as_user:
        with Session(engine, expire_on_commit=False) as session:
            actor = session.exec(select(User).where(User.username == args.as_user)).first()
        if actor is None:
            print(f"error: no user {args.as_user!r}", file=sys.stderr)
            return 1
    total = sum(len(item.photos) for item in plan)
    print(f"{len(plan)} subjects, {total} photos in {path}" + (f" (only {', '.join(include)})" if include else ""))
    print_preview(rows, name)
    if args.dry_run:
        print("dry run: nothing enrolled")
        return 0
    if not _confirmed(args):
        return 1
    print(f"to resume this import if it is interrupted: --name {name}")
    store = ImageStore(settings.images_dir)
    analyze = _analyzer(args, engine, settings, store)
    with tqdm(total=total, unit="photo", disable=args.quiet) as bar:
        summary = watchlist.run_import(engine, store, settings, plan, analyze, actor, bar.update, source=str(path),
                                       import_ref=ref)
    print_summary(summary)
    engine.dispose()
    return 0


def _analyzer(args: argparse.Namespace, engine: Any, settings: Any, store: Any) -> watchlist.AnalyzeMany:
    """Analysis in a pool of ``--workers`` processes, or in this one."""
    from triage import services
    from triage.gallery import enrolment_models

    models = enrolment_models(engine, settings.face_model)
    if args.workers > 0:
        return analyze_in_pool(settings, args.workers, models)
    return watchlist.analyze_serially(settings, services.pipeline(services.build(engine, settings, store)), models)


def _read_plan(args: argparse.Namespace, path: Path, include: list[str]) -> list[watchlist.ImportSubject] | None:
    """The import's plan from a CSV or a folder; None (the error printed) if it cannot be read."""
    try:
        as_csv = args.csv or path.suffix.lower() == ".csv"
        return watchlist.plan_csv(path, _parse_map(args.map or []), include) if as_csv \
            else watchlist.plan_folder(path, include)
    except (watchlist.WatchlistError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def print_summary(summary: watchlist.ImportSummary) -> None:
    print(f"subjects: {summary.subjects_seen} ({summary.subjects_created} new)")
    print(f"photos:   {summary.photos_enrolled} enrolled, {summary.photos_already} already enrolled, "
          f"{len(summary.failures)} failed")
    print(f"speed:    {summary.photos_analyzed} photos analysed in {summary.seconds:.1f} s "
          f"({summary.photos_per_second:.2f} photos/s)")
    if summary.failures:
        print("failed (by reason):")
        for reason, n in summary.failure_reasons().items():
            print(f"  {n:5d}  {reason}")
        for failure in summary.failures:
            print(f"  {failure.label}: {failure.reason}")


def register(sub: Any) -> None:
    """Add this area's sub-commands to the `miatari` parser."""
    p = sub.add_parser("watchlist", help="manage the watchlist")
    wl = p.add_subparsers(dest="watchlist_command", required=True)
    imp = wl.add_parser("import", help="enrol subjects in bulk from a folder (one sub-folder per subject) or a CSV")
    imp.add_argument("path", help="a folder of sub-folders, or a CSV file")
    imp.add_argument("--include", action="append", metavar="GLOB",
                     help="only photo files whose name matches (repeatable), e.g. 'mugshot_*'")
    imp.add_argument("--csv", action="store_true",
                     help="PATH is a CSV (name,case_ref,…,photo[,photo2…][,subject_id])")
    imp.add_argument("--into", action="append", metavar="FOLDER=SUBJECT_ID",
                     help="add this folder's photos to an existing subject (repeatable); every other folder "
                          "becomes a new subject")
    imp.add_argument("--name", help="this import's name; run again with the same name to resume it "
                                    "(generated and printed if omitted)")
    imp.add_argument("--dry-run", action="store_true", help="print the preview and enrol nothing")
    imp.add_argument("--yes", action="store_true", help="enrol as previewed without asking")
    imp.add_argument("--map", action="append", metavar="FIELD=COLUMN",
                     help="read FIELD from another CSV column, e.g. --map name=identity --map photo=file")
    imp.add_argument("--workers", type=int, default=2, help="face-analysis processes (0 = in this process)")
    imp.add_argument("--limit", type=int, default=0, help="only the first N subjects")
    imp.add_argument("--as-user", help="record the enrolments as this account (default: system)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=cmd_import)
