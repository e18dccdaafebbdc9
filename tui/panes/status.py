"""The Status pane: what the service is doing, when it last synced and syncs next, where to."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.text import Text
from textual.widgets import Static

from core.safe import safe_values

from .. import format as fmt

# State → (symbol, style). The word is always shown too: colour is never the only cue (NO_COLOR).
STATES: dict[str, tuple[str, str]] = {
    "idle": ("●", "bold green"),
    "syncing": ("⟳", "bold cyan"),
    "listening": ("●", "bold green"),
    "paused": ("‖", "bold yellow"),
    "disabled": ("○", "bold"),
    "standby": ("◌", "bold magenta"),
    "attached": ("◌", "bold magenta"),
    "error": ("✖", "bold red"),
    "reconnecting": ("⟳", "bold yellow"),
    "starting": ("…", "bold"),
    "stopping": ("…", "bold yellow"),
    "stopped": ("■", "bold"),
}
LABEL = "dim"
LABEL_WIDTH = 5  # every label fits: the values start in one column


class StatusPane(Static):
    """Rendered from ``service.snapshot()`` and the clock, once a second and on every status change."""

    DEFAULT_CSS = """
    StatusPane { height: auto; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Status"
        self.text = ""  # the plain text last shown, for tests and screen readers
        self._shown: Text | None = None
        self._lines: list[tuple[str, Text]] = []

    def show(self, snap: dict[str, Any], now: datetime, *, override: str | None = None) -> None:
        """``snap`` as ``shown`` makes it: this process's, or the live leader's it stands beside."""
        self.border_title = f"Status · {whose(snap)}"
        lines = rows(snap, override or effective_state(snap), now)
        self.text = "\n".join(f"{label} {value.plain}" for label, value in lines)
        self._lines = lines
        self._draw()

    def on_resize(self) -> None:
        self._draw()  # the values wrap at the new width

    def _draw(self) -> None:
        text = labelled(self._lines, self.content_size.width, self.app.console)
        if text != self._shown:  # once a second and at each batch, mostly the same: draw only a change
            self._shown = text
            self.update(text)


def labelled(lines: list[tuple[str, Text]], width: int, console: Console) -> Text:
    """One row a label, dim in its column, then the value, wrapped within the value's column.

    A rich ``Table`` laid this out before, but measuring and drawing it cost the
    event loop about 25 ms at each update, several times a second during a run:
    a key pressed meanwhile waited for it. A ``Text`` costs a fraction of that.
    """
    room = width - LABEL_WIDTH - 1
    indent = " " * (LABEL_WIDTH + 1)
    out = Text(overflow="fold")
    for i, (label, value) in enumerate(lines):
        if i:
            out.append("\n")
        out.append(label.ljust(LABEL_WIDTH), style=LABEL)
        out.append(" ")
        parts = value.wrap(console, room, overflow="fold") if room > 0 else [value]
        for j, part in enumerate(parts):
            if j:
                out.append("\n" + indent)
            out.append_text(part)
    return out


def shown(snap: Mapping[str, Any]) -> dict[str, Any]:
    """What a console shows: its own service's snapshot, or the live leader's view over it.

    While another process leads and its heartbeat is fresh, the live part
    (state, run, next runs, listener, interval, last result) is the leader's,
    as it published it; the database's figures are the same for both. ``shown``
    names whose view it is: "" for this process, else the leader's host:pid.
    """
    view = snap.get("leader_view") or {}
    published = view.get("snapshot")
    if snap.get("is_leader") or not view.get("fresh") or not isinstance(published, dict):
        return {**snap, "shown": ""}
    own = {k: snap.get(k) for k in ("service", "attached", "pending")}
    return {**snap, **published, **own, "is_leader": False, "leader": view.get("service"), "shown": view.get("service")}


def whose(snap: dict[str, Any]) -> str:
    """Which process the console shows, in words (the Status pane's title, the header)."""
    if snap.get("is_leader"):
        return "this console leads"
    role = "attached" if snap.get("attached") else "standby"
    if snap.get("shown"):
        return f"leader {fmt.clip(snap['shown'], 40)} · this console: {role}"
    return f"this console: {role} · no live leader"


def rows(snap: dict[str, Any], state: str, now: datetime) -> list[tuple[str, Text]]:
    snap = safe_values(snap)  # any string may come from outside (a last error quoting a document id)
    out: list[tuple[str, Text]] = [("State", state_text(snap, state))]
    error = _error_text(snap, state)
    if error is not None:
        out.append(("Error", error))

    last = fmt.parse_time(snap.get("last_sync_at"))
    line = Text()  # the last run that succeeded; a failure since then is the Error row
    if last is None:
        line.append("never")
    else:
        line.append(fmt.ago(last, now))
        line.append(f" · {fmt.absolute(last, now)}", style="dim")
    out.append(("Last", line))

    out.append(("Next", _next_text(snap, state, now)))

    interval, source = snap.get("interval"), snap.get("interval_source")
    every = Text(f"{fmt.number(interval)} s" if interval else "—")
    if source:
        every.append(f" ({source})", style="dim")
    force = snap.get("force_interval")
    if force:
        every.append(f" · force {fmt.number(force)} s")
    out.append(("Every", every))

    mode = Text(str(snap.get("mode") or "—"))
    mode.append(" · ")
    mode.append_text(_leader_text(snap))
    out.append(("Mode", mode))
    if snap.get("listen_state"):
        out.append(("Live", _listen_text(snap)))

    src = snap.get("source") or {}
    where = Text(f"{src.get('project') or '—'} / {src.get('collection') or '—'}")
    if src.get("database") not in (None, "", "(default)"):
        where.append(f" (database {src['database']})", style="dim")
    if src.get("emulator_host"):
        where.append(f" · emulator {src['emulator_host']}", style="dim")
    out.append(("From", where))

    target = Text(str(snap.get("target") or "—"))
    if snap.get("table"):
        target.append(f" · {snap['table']}", style="dim")
    out.append(("To", target))
    return out


def effective_state(snap: dict[str, Any]) -> str:
    """The service's state, except that a run in progress always reads as syncing.

    (Pausing during a run sets the service's state to paused at once; the run
    itself carries on to its end, and the operator should see that.)
    """
    state = snap.get("state") or "starting"
    if snap.get("current_run") and state in ("idle", "paused", "disabled"):
        return "syncing"
    return state


def state_text(snap: dict[str, Any], state: str) -> Text:
    symbol, style = STATES.get(state, ("●", "bold"))
    text = Text(f"{symbol} {state.upper()}", style=style)
    run = snap.get("current_run")
    if state == "syncing" and run:
        counts = run.get("counts") or {}
        text.append(f"  {run.get('kind', '')} run")
        if run.get("run_id"):
            text.append(f" #{run['run_id']}")
        fetched = counts.get("fetched")
        if fetched is not None:
            written = sum(int(counts.get(k) or 0) for k in ("inserted", "updated", "deleted"))
            text.append(f" · {fmt.number(fetched)} read, {fmt.number(written)} written", style="cyan")
        if snap.get("state") == "paused":
            text.append(" · then paused", style="yellow")
    elif snap.get("detail") and state not in ("error",):
        text.append(f"  {snap['detail']}", style="dim")
    return text


def _error_text(snap: dict[str, Any], state: str) -> Text | None:
    if state == "error":
        return Text(str(snap.get("detail") or snap.get("last_error") or "unknown error"), style="red")
    result = snap.get("last_result")
    if result is not None:
        if result.get("status") == "failed":
            return Text(f"last run failed: {result.get('reason') or 'no reason given'}", style="red")
        return None
    if snap.get("last_status") == "failed":  # before this console's first run: the database's word
        return Text(f"last run failed: {snap.get('last_error') or 'no reason given'}", style="red")
    return None


def _next_text(snap: dict[str, Any], state: str, now: datetime) -> Text:
    if "paused" in (state, snap.get("state")):
        return Text("paused: press p to resume", style="yellow")
    if state == "disabled":
        return Text("sync disabled ([sync] enabled = false)", style="dim")
    if state == "standby":
        return Text("another process syncs; this console waits", style="dim")
    if state == "attached":
        return Text("no live leader: f and s wait for one (5 min at most)", style="dim")
    retry = fmt.parse_time(snap.get("retry_at")) if snap.get("failures") else None
    if retry is not None:
        return Text(f"retry {fmt.countdown(retry, now)} (attempt {int(snap['failures']) + 1})", style="yellow")
    text = Text(fmt.countdown(fmt.parse_time(snap.get("next_sync_at")), now), style="bold")
    force = fmt.parse_time(snap.get("next_force_sync_at"))
    if force is not None:
        text.append(f" · force {fmt.countdown(force, now)}")
    return text


def _leader_text(snap: dict[str, Any]) -> Text:
    if snap.get("is_leader"):
        return Text("leader: this console", style="green")
    role = "attached" if snap.get("attached") else "standby"
    leader = snap.get("leader")
    if snap.get("shown"):
        return Text(f"leader {leader} · this console: {role}", style="magenta")
    if leader and leader != snap.get("service"):
        return Text(f"{role}, leader {leader} (not answering)", style="magenta")
    return Text("attached, no leader" if snap.get("attached") else "not leading", style="dim")


def _listen_text(snap: dict[str, Any]) -> Text:
    """The listener's health: its state, how far behind the commits it is, what waits to be applied."""
    lag = snap.get("lag_ms")
    text = Text(str(snap.get("listen_state")))
    text.append(f" · lag {'—' if lag is None else fmt.duration_ms(lag)}")
    text.append(f" · backlog {fmt.number(snap.get('listen_backlog') or 0)}")
    reconnects = snap.get("listen_reconnects") or 0
    if reconnects:
        text.append(f" · {fmt.number(reconnects)} reconnects", style="dim")
    return text
