"""Service side of the harness: the live turn stream, giving back a failed turn's messages, host-wide telemetry.

- op ``turn_event``: a harness reports what its turn does; published on bus channel ``turn:<agent>`` as
  ``{agent, type, data, ts}`` for the dashboard's live view. An ``error`` also tells the manager (as an event,
  at most once a minute per agent, so a harness whose ``claude`` keeps crashing does not flood it).
- op ``lease``: ``{ids, seconds}`` keeps messages the caller's connection received leased for that much longer
  (the harness's heartbeat during a turn), or gives them back at once with 0; a failed turn's messages come again
  after a backoff this way. What nobody holds now (the service requeued it when it restarted mid-turn) is taken
  back; what another connection was handed meanwhile is answered in ``lost``. A lease belongs to the connection
  that took it, so a harness that dies loses its hold at once.
- telemetry ``approvals.queue`` (agent ``hive``): the number of pending approvals, sampled in the background.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from .. import approvals
from .. import store as db
from ..broker import ROLES_AGENTS, Op, arg, no_extra_args
from ..errors import bad_request
from ..hookspecs import hookimpl
from ..transport import current_connection

log = logging.getLogger(__name__)

TURN_EVENT_TYPES = ("turn_start", "event", "turn_end", "error")
ERROR_NOTIFY_INTERVAL = 60.0
SAMPLE_SECONDS = float(os.environ.get("HYPERHIVE_TELEMETRY_INTERVAL", "60"))
SAMPLE_UNCHANGED_EVERY = 600.0  # a flat series still gets a point now and then, so charts reach "now"


def _state(hive) -> dict:
    return hive.extensions.setdefault("harness_ops", {"last_error_notice": {}, "lock": threading.Lock()})


def turn_event(hive, who, args):
    no_extra_args(args, ("event",))
    event = arg(args, "event", dict)
    kind = event.get("type")
    if kind not in TURN_EVENT_TYPES:
        raise bad_request(f'event.type must be one of {", ".join(TURN_EVENT_TYPES)}, not {json.dumps(kind)}')
    data = event.get("data", {})
    if not isinstance(data, dict):
        raise bad_request("event.data must be an object")
    extra = sorted(set(event) - {"type", "data"})
    if extra:
        raise bad_request(f"unknown event field(s) {', '.join(extra)} (an event has: type, data)")
    item = {"agent": who.name, "type": kind, "data": data, "ts": db.iso(time.time())}
    hive.bus.publish(f"turn:{who.name}", item)
    if kind == "error":
        _notify_manager(hive, who.name, data)
    return {"published": True}


def _notify_manager(hive, agent: str, data: dict) -> None:
    if agent == hive.config.manager:
        return  # the manager's own failures wake nobody: its harness would only fail on them again
    state = _state(hive)
    now = time.monotonic()
    with state["lock"]:
        last = state["last_error_notice"].get(agent)
        if last is not None and now - last < ERROR_NOTIFY_INTERVAL:
            return
        state["last_error_notice"][agent] = now
    reason = str(data.get("reason") or "unknown cause")[:500]
    body = f"{agent}: a turn failed ({reason}); its message(s) will be retried."
    # To the manager only: an event to the failing agent would just start another failing turn.
    hive.broker.event(hive.config.manager, body, agent=agent, what="turn_failed", reason=reason,
                      exit_status=data.get("exit_status"))


def lease(hive, who, args):
    no_extra_args(args, ("ids", "seconds"))
    ids = arg(args, "ids", list)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise bad_request('"ids" must be a list of message ids (integers)')
    seconds = arg(args, "seconds", (int, float))
    limit = hive.config.broker.lease_seconds
    if not 0 <= seconds <= limit:
        raise bad_request(f'"seconds" must be from 0 to {limit:g} (leaseSeconds)')
    return hive.broker.lease(who.name, ids, seconds, current_connection())


@hookimpl
def broker_ops(hive):
    return {
        "turn_event": Op(turn_event, ROLES_AGENTS, "report a turn's progress to the live view"),
        "lease": Op(lease, ROLES_AGENTS, "keep received messages leased for N more seconds (0: give them back)"),
    }


# --- host-wide telemetry ------------------------------------------------------------------------------------

def _sampler(hive, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            approvals.record_queue(hive, refresh_after=SAMPLE_UNCHANGED_EVERY)
        except Exception:  # the store closing under us at shutdown, or a transient lock: try again later
            if stop.is_set():
                return
            log.debug("sampling approvals.queue failed", exc_info=True)
        stop.wait(SAMPLE_SECONDS)


@hookimpl
def hive_started(hive):
    stop = _state(hive)["stop_sampler"] = threading.Event()
    threading.Thread(target=_sampler, args=(hive, stop), name="telemetry-sampler", daemon=True).start()


@hookimpl
def hive_stopping(hive):
    stop = _state(hive).get("stop_sampler")
    if stop is not None:
        stop.set()
