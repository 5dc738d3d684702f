"""The socket loop: one thread serves every socket, quick ops share a transaction per turn, the rest run on
workers; answers keep the order of requests on each connection."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time

import pytest

from conftest import wait_for
from hyperhive.store import Store
from hyperhive.transport import Client, Identity, SocketServer


def _lines(sock: socket.socket, count: int, timeout: float = 20) -> list[dict]:
    """``count`` answer lines from a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_pipelined_requests_are_answered_in_order_and_a_parked_one_holds_up_only_its_own_connection(start_broker):
    hp = start_broker()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(hp.config.agent_socket("bob")))
        # three requests in one write: an inline send, a recv that parks (a worker), another send behind it
        s.sendall(b'{"op": "send", "to": "alice", "body": "one"}\n'
                  b'{"op": "recv", "wait_seconds": 30}\n'
                  b'{"op": "send", "to": "alice", "body": "two"}\n')
        first = _lines(s, 1)
        assert first[0]["ok"] and first[0]["result"]["id"]
        # bob's connection is parked in recv; alice's sends are answered meanwhile, and wake it
        alice = hp.client("alice")
        got = alice.call("recv", max=10)["messages"]
        assert [m["body"] for m in got] == ["one"]  # "two" waits behind bob's recv, as bob wrote it
        alice.call("send", to="bob", body="wake up")
        rest = _lines(s, 2)
    assert [m["body"] for m in rest[0]["result"]["messages"]] == ["wake up"]
    assert rest[1]["ok"] and rest[1]["result"]["id"] > first[0]["result"]["id"]
    assert [m["body"] for m in alice.call("recv", max=10)["messages"]] == ["two"]


def test_sends_from_many_connections_each_get_their_own_durable_id(start_broker):
    """Sends of one turn share a commit; each is answered with its own id, and every answered id is stored."""
    hp = start_broker({"alice": {}, "bob": {}, "carol": {}})
    ids: list[int] = []
    lock = threading.Lock()

    def sender(name):
        with Client(hp.config.agent_socket(name), timeout=30) as c:
            for i in range(40):
                got = c.call("send", to="carol", body=f"{name} {i}")["id"]
                with lock:
                    ids.append(got)

    threads = [threading.Thread(target=sender, args=(n,)) for n in ("alice", "bob", "manager")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(ids) == len(set(ids)) == 120, "a send failed (see the warnings) or two got one id"
    carol = hp.client("carol")
    stored = []
    while True:
        batch = carol.call("recv", max=100)["messages"]
        if not batch:
            break
        stored += batch
        carol.call("ack", ids=[m["id"] for m in batch])
    assert sorted(m["id"] for m in stored) == sorted(ids)
    for name in ("alice", "bob", "manager"):  # each sender's messages in the order it sent them
        assert [m["body"] for m in stored if m["from"] == name] == [f"{name} {i}" for i in range(40)]


class _Refusing:
    """A batch whose commit fails, as a full disk makes it: the store's group, with the commit refused."""

    def __init__(self, store: Store):
        self.group = store.group()

    def __enter__(self):
        return self.group.__enter__()

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.group.__exit__(sqlite3.OperationalError, sqlite3.OperationalError("database or disk is full"),
                                None)
            raise sqlite3.OperationalError("database or disk is full")
        return self.group.__exit__(kind, value, tb)


def test_when_a_turns_commit_fails_no_send_of_it_says_ok_and_nothing_is_stored(tmp_path):
    store = Store(tmp_path / "hive.db")
    fail = threading.Event()

    def handler(identity, request):
        rowid = store.insert_raw("INSERT INTO schema_version (version) VALUES (?)", (request["n"],))
        return {"ok": True, "result": {"id": rowid}}

    server = SocketServer(tmp_path / "s.sock", Identity("alice", "agent"), handler, lambda: 65536,
                          batch=lambda: _Refusing(store) if fail.is_set() else store.group(),
                          inline=lambda who, request: True).start()
    try:
        with Client(tmp_path / "s.sock", timeout=10) as c:
            assert c.request({"op": "x", "n": 1007})["ok"]
            fail.set()
            answer = c.request({"op": "x", "n": 1008})
            assert not answer["ok"] and answer["error"]["code"] == "internal"
            assert "disk is full" in answer["error"]["message"]
            fail.clear()
            assert c.request({"op": "x", "n": 1009})["ok"]  # the loop goes on
        with store.read() as conn:
            stored = [r[0] for r in conn.exec_driver_sql("SELECT version FROM schema_version ORDER BY rowid")]
        # (numbers no schema version takes: the migrations store theirs in the same table)
        assert 1007 in stored and 1009 in stored and 1008 not in stored
    finally:
        server.close()
        store.close()


def test_a_store_group_commits_once_refuses_one_insert_alone_and_tells_only_after_commit(tmp_path):
    store = Store(tmp_path / "hive.db")
    told: list[str] = []
    sql = "INSERT INTO schema_version (version) VALUES (?)"

    def refuse(raw):
        raise ValueError("over quota")

    try:
        with store.group():
            store.insert_raw(sql, (101,))
            store.after_commit(lambda: told.append("101"))
            with pytest.raises(ValueError):
                store.insert_raw(sql, (102,), check=refuse)
            store.insert_raw(sql, (103,))
            assert told == []  # nothing is told before the commit
            with sqlite3.connect(tmp_path / "hive.db") as other:  # nor visible to anyone else
                assert other.execute("SELECT count(*) FROM schema_version WHERE version > 100").fetchone()[0] == 0
        assert told == ["101"]
        with pytest.raises(RuntimeError):
            with store.group():
                store.insert_raw(sql, (104,))
                store.after_commit(lambda: told.append("104"))
                raise RuntimeError("the turn failed")
        with store.read() as conn:
            stored = {r[0] for r in conn.exec_driver_sql("SELECT version FROM schema_version WHERE version > 100")}
        assert stored == {101, 103} and told == ["101"]
        # the write lock is free again: an ordinary write goes through at once
        started = time.monotonic()
        with store.write() as conn:
            conn.exec_driver_sql(sql, (105,))
        assert time.monotonic() - started < 5
    finally:
        store.close()


def test_a_socket_of_the_loop_closes_its_connections_and_file(tmp_path):
    server = SocketServer(tmp_path / "s.sock", Identity("alice", "agent"),
                          lambda who, request: {"ok": True, "result": who.name}, lambda: 65536).start()
    c = Client(tmp_path / "s.sock", timeout=10)
    assert c.call("x") == "alice"
    wait_for(lambda: server.active_connections() == 1, message="the connection counted")
    server.close()
    assert not (tmp_path / "s.sock").exists()
    with pytest.raises(ConnectionError):
        c.call("x")
    c.close()


def test_a_large_answer_to_a_slow_reader_arrives_whole_and_others_are_served_meanwhile(tmp_path):
    big = "x" * (6 << 20)
    server = SocketServer(tmp_path / "s.sock", Identity("alice", "agent"),
                          lambda who, request: {"ok": True, "result": big if request["op"] == "big" else "small"},
                          lambda: 65536).start()
    try:
        with socket.socket(socket.AF_UNIX) as slow, Client(tmp_path / "s.sock", timeout=10) as quick:
            slow.connect(str(tmp_path / "s.sock"))
            slow.sendall(b'{"op": "big"}\n{"op": "small"}\n')
            time.sleep(0.2)  # the socket's buffer is full; the loop waits for it to drain, serving others
            assert quick.call("x") == "small"
            answers = _lines(slow, 2)
        assert answers[0]["result"] == big and answers[1]["result"] == "small"
    finally:
        server.close()


def test_a_forked_child_serves_its_own_sockets(tmp_path):
    import os

    first = SocketServer(tmp_path / "a.sock", Identity("alice", "agent"),
                         lambda who, request: {"ok": True, "result": "parent"}, lambda: 65536).start()
    try:
        pid = os.fork()
        if pid == 0:  # the child: the parent's loop thread did not come along
            code = 1
            try:
                child = SocketServer(tmp_path / "b.sock", Identity("bob", "agent"),
                                     lambda who, request: {"ok": True, "result": "child"}, lambda: 65536).start()
                with Client(tmp_path / "b.sock", timeout=5) as c:
                    code = 0 if c.call("x") == "child" else 2
                child.close()
            finally:
                os._exit(code)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child's socket never started: it waited for the parent's loop thread")
        assert os.waitstatus_to_exitcode(done[1]) == 0
        with Client(tmp_path / "a.sock", timeout=5) as c:
            assert c.call("x") == "parent"
    finally:
        first.close()
