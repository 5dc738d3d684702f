"""Times as the operator reads them, in one format everywhere (the CLI, the pages, the script's tooltips):
``2026-11-29 07:12:03 UTC``, with a relative form ("5 min ago") where that reads better."""

from __future__ import annotations

from datetime import datetime, timezone


def when(iso: str | None, *, relative: bool = False) -> str:
    """A stored time (ISO 8601, UTC) as the CLI and the dashboard show times: ``2026-11-29 07:12:03 UTC``, with
    ``(5 min ago)`` after it when ``relative``."""
    if not iso:
        return "-"
    try:
        ts = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    text = ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if relative:
        text += f" ({ago((datetime.now(timezone.utc) - ts).total_seconds())})"
    return text


def ago(seconds: float) -> str:
    future = seconds < 0
    s = abs(int(seconds))
    if s < 5:
        return "in a moment" if future else "just now"
    if s < 90:
        v = f"{s} s"
    elif s < 5400:
        v = f"{round(s / 60)} min"
    elif s < 172800:
        v = f"{round(s / 3600)} h"
    else:
        v = f"{round(s / 86400)} days"
    return f"in {v}" if future else f"{v} ago"
