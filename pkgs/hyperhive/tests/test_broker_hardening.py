"""Hostile neighbours of the broker, through a real ``hyperhive serve``: other local users, an agent that plants
things at its socket path, one agent (or an HTTP client) trying to starve everyone else of connections."""

from __future__ import annotations

import json
import os
import resource
import socket
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from browser import http
from conftest import wait_for
from hyperhive.transport import Client


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def as_nobody(action) -> str:
    """Run ``action()`` in a child process with the uid and gid of ``nobody``; what it printed back."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                result = action()
            except OSError as e:
                result = f"{type(e).__name__}: {e.strerror}"
            os.write(write, str(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
def test_other_local_users_reach_no_socket_and_cannot_read_the_database(start_broker):
    hp = start_broker()
    hp.client("alice").call("send", to="bob", body="a secret")  # the WAL now exists
    config = hp.config
    db = config.db_path
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert mode(path) == 0o600, path
    for name in ("alice", "bob", "manager"):
        sock = config.agent_socket(name)
        assert mode(sock) == 0o600, sock
        assert mode(sock.parent) == 0o700, sock.parent
    assert mode(config.run_dir) == 0o700

    def connect(path):
        def attempt():
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(path))
                s.sendall(b'{"op": "whoami"}\n')
                return s.makefile("rb").readline().decode()
        return attempt

    for name in ("alice", "manager"):
        assert as_nobody(connect(config.agent_socket(name))).startswith("PermissionError"), name
    assert as_nobody(connect(config.host_socket)).startswith("PermissionError")
    assert as_nobody(lambda: open(db, "rb").read(16)).startswith("PermissionError")
    # the owner (root, like the service) still gets in
    assert hp.client("manager").call("whoami")["name"] == "manager"


def test_an_existing_world_readable_database_is_tightened(start_hive, hive_dir):
    state = hive_dir / "state"
    state.mkdir(parents=True)
    old = sqlite3.connect(state / "hive.db")
    old.execute("CREATE TABLE t (x)")
    old.close()
    os.chmod(state / "hive.db", 0o644)
    hp = start_hive(run_agents=False)
    assert mode(hp.config.db_path) == 0o600


def test_what_an_agent_plants_at_its_socket_path_costs_only_its_own_socket(start_hive, hive_dir):
    run = hive_dir / "run"
    # bob leaves a directory where his socket goes; carl a dangling link; dave a link to someone else's file
    (run / "agents" / "bob" / "mcp.sock").mkdir(parents=True)
    (run / "agents" / "carl").mkdir(parents=True)
    (run / "agents" / "carl" / "mcp.sock").symlink_to(hive_dir / "nowhere")
    victim = hive_dir / "victim"
    victim.write_text("not the broker's")
    os.chmod(victim, 0o640)
    (run / "agents" / "dave").mkdir(parents=True)
    (run / "agents" / "dave" / "mcp.sock").symlink_to(victim)
    hp = start_hive({"alice": {}, "bob": {}, "carl": {}, "dave": {}}, run_agents=False)
    # the service is up, and everyone else is served
    for name in ("alice", "carl", "dave", "manager"):
        assert hp.client(name).call("whoami")["name"] == name
    assert hp.host().call("whoami")["name"] == "operator"
    # no link was followed: nothing created or chmodded through them
    assert not (hive_dir / "nowhere").exists()
    assert mode(victim) == 0o640 and victim.read_text() == "not the broker's"
    assert stat.S_ISSOCK(os.lstat(run / "agents" / "carl" / "mcp.sock").st_mode)
    # bob's own socket is what it cost: logged and shown on the dashboard
    assert (run / "agents" / "bob" / "mcp.sock").is_dir()
    state = http(hp.dashboard_url, "GET", "/api/state").json()
    socket_errors = [e for e in state["errors"] if e.get("section") == "sockets"]
    assert [e["agent"] for e in socket_errors] == ["bob"]
    assert "mcp.sock" in socket_errors[0]["error"]
    assert next(r for r in state["agents"] if r["name"] == "bob")["socket_error"]
    assert "no socket for bob" in hp.log()


def test_the_open_files_soft_limit_is_raised_to_the_hard_one(start_broker):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))  # the service inherits it, as from systemd
    try:
        hp = start_broker()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert resource.prlimit(hp.proc.pid, resource.RLIMIT_NOFILE) == (hard, hard)


def _flood(path: str, count: int) -> list[socket.socket]:
    """``count`` connections, each waiting for room in the listen backlog as a patient attacker would."""
    conns = []
    deadline = time.monotonic() + 60
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            conns.append(s)
            while True:
                try:
                    s.connect(path)
                    break
                except BlockingIOError:  # backlog full: the service is not accepting
                    assert time.monotonic() < deadline, f"the service stopped accepting after {len(conns)}"
                    time.sleep(0.01)
            s.settimeout(10)
    except BaseException:
        for s in conns:
            s.close()
        raise
    return conns


def test_one_agent_holding_idle_connections_cannot_starve_the_others(start_broker):
    hp = start_broker()
    cap = getattr(hp.config.broker, "max_connections_per_agent", 32)  # broker.maxConnectionsPerAgent
    # a service with few descriptors to spare, so that an unbounded flood would exhaust them
    resource.prlimit(hp.proc.pid, resource.RLIMIT_NOFILE, (160, 160))
    flood = _flood(str(hp.config.agent_socket("alice")), 300)
    try:
        # the operator, another agent and the dashboard are still served, promptly
        assert hp.client("bob", timeout=10).call("whoami")["name"] == "bob"
        assert hp.host(timeout=10).call("whoami")["name"] == "operator"
        assert http(hp.dashboard_url, "GET", "/api/state", timeout=10).status == 200
        # alice got her share, and the rest were told why they were closed
        refused = 0
        for s in flood[cap:]:
            line = s.makefile("rb").readline()
            if line:
                response = json.loads(line)
                assert response["error"]["code"] == "conflict"
                assert "maxConnectionsPerAgent" in response["error"]["message"]
                refused += 1
        assert refused == 300 - cap
        # she is served again once she lets go
        for s in flood:
            s.close()
        flood = []
        assert wait_for(lambda: _whoami_or_none(hp, "alice"), timeout=10) == "alice"
    finally:
        for s in flood:
            s.close()


def _whoami_or_none(hp, name):
    try:
        with Client(hp.config.agent_socket(name), timeout=5) as c:
            return c.call("whoami")["name"]
    except Exception:
        return None


def test_idle_connections_are_closed_but_not_one_holding_a_lease(start_broker):
    hp = start_broker(broker={"idleTimeoutSeconds": 1})
    hp.client("alice").call("send", to="bob", body="a turn's work")
    idle = Client(hp.config.agent_socket("alice"), timeout=20)
    assert idle.call("whoami")["name"] == "alice"
    holder = Client(hp.config.agent_socket("bob"), timeout=20)
    msg = holder.call("recv")["messages"][0]
    started = time.monotonic()
    assert idle.rfile.readline() == b""  # the service closed it
    assert 0.5 < time.monotonic() - started < 15
    time.sleep(1.5)
    # the harness mid-turn keeps its connection and its lease, and acks on it
    assert holder.call("ack", ids=[msg["id"]]) == {"acked": 1}
    holder.close()
    idle.close()


def test_slow_http_clients_cannot_starve_the_dashboard_or_take_the_broker_down(start_broker):
    hp = start_broker()
    resource.prlimit(hp.proc.pid, resource.RLIMIT_NOFILE, (200, 200))
    host, port = hp.dashboard_url.removeprefix("http://").rsplit(":", 1)
    slow = []
    try:
        for _ in range(400):  # each starts a request and never finishes its headers
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"GET /api/state HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        assert http(hp.dashboard_url, "GET", "/api/state", timeout=20).status == 200
        assert hp.client("alice", timeout=10).call("whoami")["name"] == "alice"
        assert hp.host(timeout=10).call("whoami")["name"] == "operator"
    finally:
        for s in slow:
            s.close()
    assert hp.proc.poll() is None
