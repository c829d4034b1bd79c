"""``miatari reindex``: re-embed the reference photos with the configured face model.

Without options the run is worked in the foreground, with a progress bar; it holds
the ``reindex`` job's lease as a worker would, so a worker never works it at the
same time. If a worker already holds it, the bar follows that worker's progress
instead. Interrupted (Ctrl-C, kill -9), it resumes where it stopped: run the
command again, or let a worker take the job once its lease has run out.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

POLL_SECONDS = 0.5
BATCH_SIZE_DEFAULT = 16  # triage.reindex.BATCH_SIZE (not imported here: the parser stays light)


def _print_status(st: Any) -> None:
    print(f"active model:     {st.active_model_id} (since {st.switched_at:%Y-%m-%d %H:%M} UTC)")
    if st.active_unavailable:
        print(f"                  NOT AVAILABLE in this build: {st.active_unavailable}")
    print(f"configured model: {st.configured_model_id or st.configured_error}")
    if st.run is None:
        print("re-embedding:     never run")
    else:
        run = st.run
        state = "switched the gallery" if run.switched_at else run.status
        if st.job_failed:
            state = f"failed: {st.error}"
        print(f"re-embedding:     run {run.id} to {run.target_model_id}: {state}")
    print(f"photos:           {st.photos_done} of {st.photos_total} hold an embedding of that model ({st.percent}%)")
    if st.run is not None and st.run.failures:
        print(f"not re-embedded:  {len(st.run.failures)}")
        for f in st.run.failures[:20]:
            print(f"  photo {f.get('photo_id')}: {f.get('reason')}")


def cmd_reindex(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from triage import migrate, reindex
    from triage.config import get_settings
    from triage.db import make_engine

    settings = get_settings()
    engine = make_engine(settings.db_url)
    if not migrate.at_head(engine):
        print("The database is not at the latest migration: run `miatari migrate` first.", file=sys.stderr)
        return 2
    if args.status:
        with Session(engine) as session:
            _print_status(reindex.status(session, settings))
        return 0
    if args.purge_old:
        return _purge_old(engine, settings)
    started = _start(engine, settings)
    if isinstance(started, int):
        return started
    run, job = started
    print(f"re-embedding run {run.id}: {run.from_model_id} -> {run.target_model_id}")
    if args.queue:
        print("queued for the workers; follow it with `miatari reindex --status` or on /admin/reindex")
        return 0
    return _run_in_foreground(args, engine, settings, run, job)


def _purge_old(engine: Any, settings: Any) -> int:
    from sqlmodel import Session

    from triage import reindex

    with Session(engine) as session:
        try:
            removed = reindex.purge_old(session, settings)
        except reindex.ReindexRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        session.commit()
    print(f"deleted {removed} embeddings of models other than the active one")
    return 0


def _start(engine: Any, settings: Any) -> tuple[Any, Any] | int:
    """The run started (or resumed) and its job; or the exit status when there is nothing to run."""
    from sqlmodel import Session

    from triage import reindex
    from triage.transaction import unit_of_work

    with Session(engine, expire_on_commit=False) as session:
        try:
            with unit_of_work(session):  # a refusal keeps only its audit entry
                run = reindex.start_run(session, settings, None)
        except reindex.ReindexRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if run is None:
            st = reindex.status(session, settings)
            print(f"nothing to do: the gallery searches with {st.active_model_id}, the configured model, "
                  f"and all {st.photos_total} reference photos hold an embedding of it")
            return 0
        job = reindex.job_of(session, run.pk)
        assert job is not None
    return run, job


def _run_in_foreground(args: argparse.Namespace, engine: Any, settings: Any, run: Any, job: Any) -> int:
    """Claim the run's job and work it here with a progress bar (unless a worker holds it already)."""
    from sqlmodel import Session
    from tqdm import tqdm

    from miatari.registry import worker_registry
    from triage import jobs, reindex, services
    from triage.models import JobStatus, ReindexRun
    from triage.storage import ImageStore
    from triage.worker import default_owner, run_claimed

    store = ImageStore(settings.images_dir)
    svc = services.build(engine, settings, store)
    if args.batch_size > 0:
        svc.reindex_batch_size = args.batch_size
    owner = default_owner()
    worker: threading.Thread | None = None
    bar = tqdm(total=run.photos_total, initial=run.photos_done, unit="photo", desc="re-embedding",
               disable=args.quiet, file=sys.stderr)
    try:
        while True:
            with Session(engine, expire_on_commit=False) as session:
                current = session.get(ReindexRun, run.id)
                job_now = session.get(type(job), job.id)
            assert current is not None and job_now is not None
            bar.total = current.photos_total
            bar.n = current.photos_done
            bar.refresh()
            if worker is None and job_now.status in (JobStatus.queued.value, JobStatus.running.value):
                with Session(engine, expire_on_commit=False) as session:
                    claimed = jobs.claim(session, owner, settings.job_lease_seconds, (reindex.REINDEX_JOB,),
                                         job_id=job.id)
                if claimed is not None:
                    worker = threading.Thread(target=run_claimed, args=(svc, owner, claimed, worker_registry()),
                                              name="miatari-reindex", daemon=True)
                    worker.start()
                elif job_now.status == JobStatus.running.value:
                    bar.set_postfix_str(f"worked by {job_now.lease_owner}")
            if worker is not None and not worker.is_alive():
                break
            if worker is None and job_now.status in (JobStatus.done.value, JobStatus.failed.value):
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        bar.close()
        print("\ninterrupted: the batches committed so far are kept; run `miatari reindex` again to go on",
              file=sys.stderr)
        return 130
    finally:
        services.stop(svc)
    with Session(engine, expire_on_commit=False) as session:
        final = session.get(ReindexRun, run.id)
        job_end = session.get(type(job), job.id)
    assert final is not None and job_end is not None
    bar.total, bar.n = final.photos_total, final.photos_done
    bar.refresh()
    bar.close()
    return _report(engine, settings, final, job_end)


def _report(engine: Any, settings: Any, final: Any, job_end: Any) -> int:
    from sqlmodel import Session

    from triage import reindex
    from triage.models import JobStatus

    print(f"photos: {final.photos_done} of {final.photos_total} hold an embedding of {final.target_model_id}"
          f"; {len(final.failures)} could not be re-embedded")
    if final.switched_at is not None:
        print(f"the gallery now searches with {final.target_model_id}")
        return 0
    if job_end.status == JobStatus.done.value and final.status == JobStatus.done.value:
        with Session(engine) as session:
            active = reindex.status(session, settings).active_model_id
        if active == final.target_model_id:
            print(f"the gallery searches with {active}; every photo holds an embedding of it")
            return 0
        print("not switched: searchable photos could not be re-embedded (see `miatari reindex --status`)",
              file=sys.stderr)
        return 1
    error = job_end.last_error.splitlines()[0] if job_end.last_error else final.status
    print(f"the run stopped: {error}", file=sys.stderr)
    return 1


def register(sub: Any) -> None:
    """Add ``reindex`` to the `miatari` parser."""
    p = sub.add_parser("reindex", help="re-embed the reference photos with the configured face model "
                                       "(resumable; the gallery switches once all are done)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--queue", action="store_true", help="queue the run for the workers instead")
    group.add_argument("--status", action="store_true", help="show the active and configured models and progress")
    group.add_argument("--purge-old", action="store_true",
                       help="delete the embeddings of every model but the active one")
    p.add_argument("--batch-size", type=int, default=0, metavar="N",
                   help=f"photos committed together (default: the worker's, {BATCH_SIZE_DEFAULT})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reindex)
