"""Helpers for the harness, MCP and telemetry tests: the processes under a harness, the database, the live turn
stream and the MCP server as a raw JSON-RPC peer. (A hive running the real Claude Code CLI is conftest's
``claude_hive`` with the ``model_api`` stand-in.)"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from conftest import HiveProcess, wait_for, write_config

@contextlib.contextmanager
def broker_only():
    """A ``serve --no-agents`` service of its own, for a module's tests that change nothing in it."""
    directory = Path(tempfile.mkdtemp(prefix="hh", dir="/tmp"))
    hp = HiveProcess(write_config(directory), args=("--no-agents",)).start()
    try:
        yield hp
    finally:
        hp.stop()
        shutil.rmtree(directory, ignore_errors=True)


def claude_children(pid: int) -> list[int]:
    """The pids of the processes ``pid`` started (the harness's running ``claude``)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); it is gone for our purposes once it has exited
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def db_rows(hp, sql: str, params: tuple = ()) -> list[tuple]:
    db = sqlite3.connect(hp.config.db_path, timeout=10)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def stats(hp, agent: str, key: str | None = None) -> list[tuple]:
    sql = "SELECT key, value FROM stats WHERE agent = ?" + (" AND key = ?" if key else "") + " ORDER BY ts, id"
    return db_rows(hp, sql, (agent, key) if key else (agent,))


def agent_state_dir(hp, name: str) -> Path:
    base = hp.config.state_dir
    return base / "manager" / "state" if name == hp.config.manager else base / "agents" / name / "state"


def get_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class TurnStream:
    """The dashboard's server-sent live turn stream of one agent, collected on a thread."""

    def __init__(self, base_url: str, agent: str):
        import http.client
        from urllib.parse import urlsplit

        self.items: list[dict] = []
        url = urlsplit(base_url)
        self._conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        self._conn.request("GET", f"/api/agents/{agent}/turns/stream")
        self._sock = self._conn.sock  # the connection forgets it once the response owns it
        self._response = self._conn.getresponse()
        assert self._response.status == 200, self._response.read()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._response:
                line = raw.decode("utf-8").rstrip("\n")
                if line.startswith("data: "):
                    self.items.append(json.loads(line[6:]))
        except (OSError, ValueError, AttributeError):  # closed under our feet
            pass

    def types(self) -> list[str]:
        return [i["type"] for i in self.items]

    def wait_type(self, kind: str, count: int = 1, timeout: float = 20) -> list[dict]:
        return wait_for(lambda: len([i for i in self.items if i["type"] == kind]) >= count and
                        [i for i in self.items if i["type"] == kind], timeout, message=f"{count} {kind} event(s)")

    def close(self) -> None:
        import socket

        try:  # a reader blocked in the response wakes up at once
            self._sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self._thread.join(5)
        self._conn.close()


class McpPeer:
    """``hyperhive mcp`` as a child process, spoken to in raw JSON-RPC lines."""

    def __init__(self, socket_path, env: dict | None = None):
        import os

        self.proc = subprocess.Popen([sys.executable, "-m", "hyperhive", "mcp", "--socket", str(socket_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, **(env or {})})
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.next_id = 100

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.put(json.loads(raw))
        self.lines.put(None)

    def write(self, data) -> None:
        line = data if isinstance(data, (str, bytes)) else json.dumps(data)
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.proc.stdin.write(line.rstrip(b"\n") + b"\n")
        self.proc.stdin.flush()

    def read(self, timeout: float = 10) -> dict:
        item = self.lines.get(timeout=timeout)
        if item is None:
            raise EOFError("hyperhive mcp closed its stdout")
        return item

    def quiet(self, seconds: float = 0.3) -> bool:
        """True when nothing at all comes out for ``seconds``."""
        try:
            item = self.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        self.lines.put(item)
        return False

    def request(self, method: str, params=None, *, rid=None, timeout: float = 10) -> dict:
        """Send a request and return its response; notifications that come first are kept in ``notes``."""
        if rid is None:
            self.next_id += 1
            rid = self.next_id
        message = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        self.write(message)
        return self.response(rid, timeout)

    def response(self, rid, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        self.notes = []
        while True:
            item = self.read(max(0.01, deadline - time.monotonic()))
            if item.get("id") == rid and "method" not in item:
                return item
            self.notes.append(item)

    def notify(self, method: str, params=None) -> None:
        message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.write(message)

    def initialize(self, version: str = "2025-06-18") -> dict:
        answer = self.request("initialize", {"protocolVersion": version, "capabilities": {},
                                             "clientInfo": {"name": "test", "version": "1"}})
        self.notify("notifications/initialized")
        return answer

    def call(self, tool: str, arguments: dict | None = None, **params) -> dict:
        return self.request("tools/call", {"name": tool, "arguments": arguments or {}, **params})

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
