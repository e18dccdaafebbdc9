"""What the one-shot commands print: plain-text renderings, and the JSON forms as they are.

Every string a renderer shows may come from a document (ids, values, reasons
quoting them): each goes through ``safe_values`` first, so a control character
is printed escaped and a newline in a value never starts a line of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from .safe import json_safe, safe_values, terminal_safe
from .times import iso


def emit_json(data: Any) -> None:
    """A command's JSON result: exact values, but never a raw control character on the terminal."""
    print(json_safe(json.dumps(data, indent=2, default=str, ensure_ascii=False)))


def emit_text(text: str) -> None:
    """A command's text result; the renderers escape each value, this keeps the whole terminal-safe."""
    print(terminal_safe(text, multiline=True))


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: iso(v) if isinstance(v, datetime) else v.isoformat() if isinstance(v, date) else v for k, v in row.items()
    }


def sync_summary(result) -> str:
    c = result.counts
    if result.status == "skipped":
        return f"skipped: {safe_values(result.reason)}"
    head = {"force": "force sync", "ids": "sync of selected employees", "rollback": "rollback"}.get(result.kind, "sync")
    if result.dry_run:
        head = f"dry run ({head})"
    if result.kind == "rollback":
        line = (
            f"{head} {result.status}: {c.updated} rows put back, {c.inserted} re-inserted, {c.deleted} removed, "
            f"{c.restored} restored; {safe_values(result.reason)}"
        )
    else:
        line = (
            f"{head} {result.status}: {c.fetched} fetched, {c.inserted} inserted, {c.updated} updated, "
            f"{c.deleted} deleted, {c.unchanged} unchanged, {c.repaired} repaired, {c.rejected} rejected; "
            f"{c.firestore_reads} Firestore reads; {result.duration_ms} ms"
        )
    if result.dry_run and result.would_change:
        lines = [line, "would change:"]
        for item in safe_values(result.would_change[:200]):
            detail = ", ".join(item.get("fields", {})) or item.get("reason", "")
            lines.append(f"  {item['operation']:<8} {item['document_id'] or ''}  {detail}".rstrip())
        if len(result.would_change) > 200:
            lines.append(f"  ... and {len(result.would_change) - 200} more (--json lists all)")
        return "\n".join(lines)
    return line


def _pairs(pairs: Iterable[tuple[str, Any]]) -> str:
    pairs = list(pairs)
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k:<{width}}  {'-' if v is None else v}" for k, v in pairs)


def status_text(s: dict[str, Any]) -> str:
    s = safe_values(s)
    state = "disabled" if not s["enabled"] else "paused" if s["paused"] else (s.get("state") or "enabled")
    src = s["source"]
    last = s.get("last_run") or {}
    return _pairs(
        [
            ("state", state),
            ("mode", s["mode"]),
            ("interval", f"{s['interval']} s (from {s['interval_source']})"),
            ("force interval", f"{s['force_interval']} s"),
            ("last sync", s["last_sync_at"]),
            ("last force sync", s["last_force_sync_at"]),
            ("next sync", s["next_sync_at"]),
            (
                "last status",
                s["last_status"] + (f": {s['last_error']}" if s.get("last_error") else "")
                if s["last_status"]
                else None,
            ),
            ("last run", f"#{last['id']} {last['kind']} {last['status']} ({last['duration_ms']} ms)" if last else None),
            ("rows", f"{s['rows']} ({s['soft_deleted']} soft-deleted, {s['rejects']} rejected documents)"),
            ("documents", s["documents"]),
            ("leader", leader_text(s)),
            (
                "source",
                f"{src['project']}/{src['database']}/{src['collection']}"
                + (f" @ {src['emulator_host']}" if src["emulator_host"] else ""),
            ),
            ("target", f"{s['target']} table {s['table']}"),
            ("mass-delete guard", guard_text(s.get("mass_delete_guard"))),
            ("notifications", notify_text(s.get("notifications"))),
            ("last failed notice", notify_text(s.get("notifications"), "last_failure")),
        ]
    )


def leader_text(s: dict[str, Any]) -> str | None:
    """The leader, and whether it answers (its published view is its heartbeat)."""
    leader = s.get("leader")
    if not leader or s.get("leader_alive") is None:
        return leader
    if s["leader_alive"]:
        return f"{leader} ({s.get('leader_state') or 'alive'}, seen {s.get('leader_seen_at')})"
    return f"{leader} (not answering since {s.get('leader_seen_at')})"


def notify_text(n: dict[str, Any] | None, which: str = "last") -> str | None:
    """What became of the last notification, or (``which="last_failure"``) of the last that failed."""
    entry = n.get(which) if isinstance(n, dict) else None
    if not isinstance(entry, dict) or (which == "last_failure" and entry == n.get("last")):
        return None
    verdict = "sent" if entry.get("ok") else f"FAILED ({entry.get('detail')})"
    text = f"{entry.get('at')} {entry.get('title')!r} to {entry.get('receiver')}: {verdict}"
    if which == "last":
        counts = n.get("counts") or {}
        text += f"; {counts.get('sent', 0)} sent, {counts.get('failed', 0)} failed, {counts.get('dropped', 0)} dropped"
    return text


def guard_text(guard: dict[str, Any] | None) -> str | None:
    """A tripped mass-delete guard in words (None while it is not tripped)."""
    if not guard:
        return None
    return (
        f"TRIPPED: run #{guard.get('run_id')} held back {guard.get('deleting')} of {guard.get('live_rows')} rows "
        f"at {guard.get('at')}; empsync sync --force --allow-mass-delete lets them go"
    )


def stats_text(s: dict[str, Any]) -> str:
    s = safe_values(s)
    saved = (
        f" ({s['reads_saved_pct']}% saved against full reads: {s['naive_reads']})"
        if s["reads_saved_pct"] is not None
        else ""
    )
    return _pairs(
        [
            ("runs", f"{s['runs']} " + " ".join(f"{k}={v}" for k, v in sorted(s["runs_by_status"].items()))),
            ("fetched", s["fetched"]),
            ("inserted", s["inserted"]),
            ("updated", f"{s['updated']} ({s['restored']} restored)"),
            ("deleted", s["deleted"]),
            ("unchanged", s["unchanged"]),
            ("repaired", s["repaired"]),
            ("rejected", f"{s['rejected']} ({s['rejects_open']} open)"),
            ("firestore reads", f"{s['firestore_reads']}{saved}"),
            ("rows", s["rows"]),
            ("last duration", f"{s['last_duration_ms']} ms" if s["last_duration_ms"] is not None else None),
            ("avg duration", f"{s['avg_duration_ms']} ms" if s["avg_duration_ms"] is not None else None),
            (
                "last 24 h",
                "{runs} runs, {failed} failed, {written} rows written, {firestore_reads} reads".format(**s["last_24h"]),
            ),
        ]
    )


def changes_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no changes recorded yet"
    lines = []
    for r in safe_values(rows):
        what = f"{r['field']}: {r['old_value']!s} -> {r['new_value']!s}" if r["field"] else ""
        name = f" ({r['name']})" if r.get("name") else ""
        lines.append(f"{iso(r['changed_at'])}  {r['operation']:<8} {r['document_id']}{name}  {what}".rstrip())
    return "\n".join(lines)


def rejects_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no rejected documents"
    return "\n".join(f"{iso(r['rejected_at'])}  {r['document_id']}  {r['reason']}" for r in safe_values(rows))


RUN_COLUMNS = ("fetched", "inserted", "updated", "deleted", "repaired", "rejected")


def runs_text(rows: list[dict[str, Any]]) -> str:
    """The run history, newest first: one line a run, its error on a line of its own."""
    if not rows:
        return "no runs recorded yet"
    lines = [
        f"{'run':>6}  {'kind':<8} {'trigger':<10} {'started':<20} {'took':>8}  "
        + " ".join(f"{c[:8]:>8}" for c in RUN_COLUMNS)
        + f" {'reads':>14}  status"
    ]
    for r in safe_values(rows):
        took = "-" if r["duration_ms"] is None else f"{r['duration_ms'] / 1000:.1f} s"
        reads = f"{r['firestore_reads']}/{r['naive_reads']}"
        lines.append(
            f"{r['id']:>6}  {r['kind']:<8} {(r['trigger'] or '')[:10]:<10} {iso(r['started_at']) or '':<20} {took:>8}  "
            + " ".join(f"{r.get(c) or 0:>8}" for c in RUN_COLUMNS)
            + f" {reads:>14}  {r['status']}"
        )
        if r.get("message") and r["status"] != "ok":
            lines.append(f"        {r['message'][:300]}")
    lines.append("reads: Firestore reads the run caused / what reading every document would have cost")
    return "\n".join(lines)
