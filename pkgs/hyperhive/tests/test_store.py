"""The store: pragmas, explicit migrations, and old rows that still read back through the service."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from hyperhive import store as db
from hyperhive.store import MIGRATIONS, SCHEMA_VERSION, Store


def test_a_new_database_is_wal_with_the_current_schema(tmp_path):
    s = Store(tmp_path / "hive.db")
    assert s.version() == SCHEMA_VERSION == len(MIGRATIONS)
    with s.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
        tables = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"messages", "questions", "approvals", "stats", "agents", "schema_version"} <= tables
    s.close()


def test_every_migration_path_ends_in_the_same_schema(tmp_path):
    def schema(path):
        con = sqlite3.connect(path)
        try:
            return sorted(con.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
        finally:
            con.close()

    fresh = Store(tmp_path / "fresh.db")
    fresh.close()
    for start in range(SCHEMA_VERSION):
        old = Store(tmp_path / f"from{start}.db", target_version=start)
        old.close()
        Store(tmp_path / f"from{start}.db").close()
        assert schema(tmp_path / f"from{start}.db") == schema(tmp_path / "fresh.db")


def test_a_newer_database_is_refused_not_damaged(tmp_path):
    path = tmp_path / "hive.db"
    Store(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(RuntimeError, match="newer than this hyperhive"):
        Store(path)


def test_writes_are_serialized_and_all_land(tmp_path):
    s = Store(tmp_path / "hive.db")

    def writer(n):
        for i in range(50):
            with s.write() as conn:
                conn.execute(db.stats.insert().values(agent=f"w{n}", ts=i, key="k", value=i))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with s.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM stats").scalar() == 400
    s.close()


def test_a_failed_write_rolls_back_whole(tmp_path):
    s = Store(tmp_path / "hive.db")
    with pytest.raises(ZeroDivisionError):
        with s.write() as conn:
            conn.execute(db.stats.insert().values(agent="a", ts=1, key="k", value=1))
            1 / 0
    with s.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM stats").scalar() == 0
    s.close()


def test_an_old_database_opens_migrated_and_every_old_row_reads_back(start_broker, hive_dir):
    """A v1 database (before message data, question multi/expiry and the agents table) with odd rows."""
    path = hive_dir / "state" / "hive.db"
    Store(path, target_version=1).close()
    con = sqlite3.connect(path)
    con.executemany(
        "INSERT INTO messages (sender, recipient, kind, body, sent_at, lease_until, acked_at, deliveries) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [("alice", "bob", "message", "from the old days", 1_700_000_000.0, None, None, 0),
         ("bob", "operator", "message", "ünïcödé ✓ and a\nnewline", 1_700_000_001.5, None, None, 0),
         ("system", "bob", "event", "", 1_700_000_002.0, 1_700_000_100.0, None, 3)])
    con.execute("INSERT INTO questions (asker, question, options, created_at, status) VALUES "
                "('alice', 'old?', NULL, 1700000000, 'pending')")
    con.commit()
    con.close()

    hp = start_broker()
    got = hp.client("bob").call("recv", max=10)["messages"]
    assert [(m["from"], m["kind"], m["body"]) for m in got] == [
        ("alice", "message", "from the old days"), ("system", "event", "")]
    assert got[0]["sent_at"] == "2023-11-14T22:13:20.000Z"
    inbox = hp.client("bob").call("status")
    assert inbox == {"unread": 0, "leased": 2}
    operator_inbox = hp.host().call("inbox")["messages"]
    assert [m["body"] for m in operator_inbox] == ["ünïcödé ✓ and a\nnewline"]
    con = sqlite3.connect(path)
    assert con.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    assert con.execute("SELECT multi, expires_at FROM questions").fetchone() == (0, None)
    con.close()
