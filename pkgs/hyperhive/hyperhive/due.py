"""A thread that sleeps until the next thing is due, does what is due, and sleeps again — never polling.

``DueThread(name, run_due, next_due)``: ``run_due()`` handles whatever is due now; ``next_due()`` says when (a Unix
time) the next is, or None. ``wake()`` makes it look again at once (something new was scheduled or cancelled). A
failure is logged and retried after ``retry_seconds``. Question expiry and reminders run on it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class DueThread:
    def __init__(self, name: str, run_due: Callable[[], object], next_due: Callable[[], float | None],
                 retry_seconds: float = 60.0, slack: float = 0.01):
        self.name = name
        self._run_due = run_due
        self._next_due = next_due
        self.retry_seconds = retry_seconds
        self.slack = slack
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "DueThread":
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            timeout = None
            try:
                self._run_due()
                due = self._next_due()
                if due is not None:
                    timeout = max(0.0, due - time.time()) + self.slack
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("%s failed; trying again in %gs", self.name, self.retry_seconds)
                timeout = self.retry_seconds
            self._wake.wait(timeout)
