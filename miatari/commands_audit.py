"""`miatari audit verify|anchor|export` and `miatari retention run`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sqlmodel import Session


def _engine() -> Any:
    from triage.config import get_settings
    from triage.db import make_engine

    return make_engine(get_settings().db_url)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from triage import audit

    anchors: list[audit.Anchor] = []
    for path in args.anchors or []:
        try:
            with open(path, encoding="utf-8") as fh:
                anchors += audit.parse_anchors(fh.read())
        except (OSError, audit.BadAnchor) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
    with Session(_engine()) as session:
        result = audit.verify(session)
        anchored = audit.check_anchors(session, anchors) if anchors else None
    if not result.ok:
        print(f"audit chain BROKEN at entry {result.bad_id}: {result.reason} "
              f"({result.checked} entries checked before it)", file=sys.stderr)
        return 1
    if anchored is not None and not anchored.ok:
        for problem in anchored.problems:
            print(f"audit log REWRITTEN: {problem}", file=sys.stderr)
        return 1
    print(f"audit chain intact: {result.checked} entries checked")
    if anchored is not None:
        print(f"anchors: {anchored.checked} match"
              + (f", {anchored.pruned} before the retention boundary" if anchored.pruned else ""))
    return 0


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    from triage import audit

    with Session(_engine()) as session:
        anchor = audit.take_anchor(session)
        session.commit()
    if args.output in (None, "-"):
        print(anchor.line())
    else:
        with open(args.output, "a", encoding="utf-8") as fh:
            fh.write(anchor.line() + "\n")
        print(f"anchor for entry {anchor.entry_id} appended to {args.output}", file=sys.stderr)
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    import datetime as dt

    from triage import audit

    def day(value: str | None) -> dt.datetime | None:
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC) if value else None

    try:
        f = audit.AuditFilter(actor=args.actor or "", action=args.action or "", outcome=args.outcome or "",
                              since=day(args.since), until=day(args.until))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with Session(_engine()) as session:
        body = audit.export_csv(audit.iter_entries(session, f))
        audit.record(session, "audit.export", detail={"filters": f.__dict__, "via": "cli"})
        session.commit()
    if args.output in (None, "-"):
        sys.stdout.write(body)
    else:
        with open(args.output, "w", encoding="utf-8", newline="") as fh:
            fh.write(body)
        print(f"wrote {body.count(chr(10)) - 1} entries to {args.output}", file=sys.stderr)
    return 0


def cmd_retention_run(args: argparse.Namespace) -> int:
    from triage import retention
    from triage.config import get_settings
    from triage.storage import ImageStore

    settings = get_settings()
    result = retention.run(_engine(), settings, ImageStore(settings.images_dir))
    print(f"deleted {len(result.sighting_ids)} sightings ({result.photos} photos, {result.probes} faces, "
          f"{result.candidates} candidates), {len(result.images)} images, "
          f"{result.audit_pruned} audit entries older than {settings.retention_days_audit} days")
    return 0


def register(sub: Any) -> None:
    """Add this area's sub-commands to the `miatari` parser."""
    p = sub.add_parser("audit", help="the audit log: verify the hash chain, export")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    v = audit_sub.add_parser("verify", help="check the hash chain; exit 1 and name the first bad entry")
    v.add_argument("--anchors", action="append", metavar="FILE",
                   help="also check the anchors in FILE (from `audit anchor`); may be repeated")
    v.set_defaults(func=cmd_audit_verify)
    a = audit_sub.add_parser("anchor", help="write the chain's head down, to keep outside the database")
    a.add_argument("-o", "--output", help="file to append the anchor line to (default: standard output)")
    a.set_defaults(func=cmd_audit_anchor)
    e = audit_sub.add_parser("export", help="write entries as CSV")
    e.add_argument("-o", "--output", help="file to write (default: standard output)")
    e.add_argument("--actor")
    e.add_argument("--action", help="an action or a prefix such as 'user'")
    e.add_argument("--outcome", choices=["ok", "denied", "error"])
    e.add_argument("--since", help="YYYY-MM-DD (UTC)")
    e.add_argument("--until", help="YYYY-MM-DD (UTC), exclusive")
    e.set_defaults(func=cmd_audit_export)

    p = sub.add_parser("retention", help="delete what has outlived its retention period")
    r_sub = p.add_subparsers(dest="retention_command", required=True)
    r = r_sub.add_parser("run", help="run the retention sweep now")
    r.set_defaults(func=cmd_retention_run)
