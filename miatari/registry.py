"""The jobs and sweeps a worker runs: one list, for the web app's embedded worker and ``miatari worker`` alike."""

from __future__ import annotations

from triage import matching, metrics_summary, planner_stats, reindex, retention, webhooks
from triage.review import pending, queue
from triage.sightings import MATCH_JOB
from triage.watchlist import bulk_import, subjects
from triage.worker import Registry


def worker_registry() -> Registry:
    return Registry(
        jobs={
            MATCH_JOB: matching.match_sighting,
            bulk_import.IMPORT_JOB: bulk_import.run_zip_import,
            reindex.REINDEX_JOB: reindex.run_reindex,
            webhooks.WEBHOOK_JOB: webhooks.deliver,
        },
        on_failed={MATCH_JOB: matching.matching_failed,
                   bulk_import.IMPORT_JOB: bulk_import.import_failed,
                   webhooks.WEBHOOK_JOB: webhooks.delivery_failed},
        backoff={webhooks.WEBHOOK_JOB: webhooks.backoff_seconds},
        sweeps={
            "expiry": subjects.expiry_sweep,
            "retention": retention.retention_sweep,
            "metrics.summarise": metrics_summary.metrics_sweep,
            "review.expire_leases": queue.sweep_expired_leases,
        },
        ticks={"review.settle_verdicts": pending.settle_sweep,
               "planner_stats": planner_stats.statistics_tick},
    )
