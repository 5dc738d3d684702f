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


def newer_database(path):
    """A database as a newer hyperhive would leave it (a schema version above this one's)."""
    Store(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    return path


def test_a_newer_database_is_refused_not_damaged(tmp_path):
    path = newer_database(tmp_path / "hive.db")
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


INSERT = ("INSERT INTO messages (sender, recipient, kind, body, sent_at, deliveries) "
          "VALUES (?, ?, 'message', ?, 0, 0)")


def test_message_ids_stay_unique_and_increasing_after_deletes(tmp_path):
    s = Store(tmp_path / "hive.db")
    ids = [s.insert_raw(INSERT, ("a", "b", f"m{i}")) for i in range(10)]
    assert ids == sorted(set(ids))
    # a retention that drops old messages leaves the newest: new ids go on above every id ever given
    db.run_sql(s, "DELETE FROM messages WHERE id < ?", (ids[-1],))
    after = [s.insert_raw(INSERT, ("a", "b", f"n{i}")) for i in range(3)]
    assert after == [ids[-1] + 1, ids[-1] + 2, ids[-1] + 3]
    # deleting the newest would let its id be given again (no AUTOINCREMENT): refused, nothing deleted
    with pytest.raises(Exception, match="newest message is never deleted"):
        db.run_sql(s, "DELETE FROM messages WHERE id = ?", (after[-1],))
    with pytest.raises(Exception, match="newest message is never deleted"):
        db.run_sql(s, "DELETE FROM messages")
    assert db.run_sql(s, "SELECT count(*) FROM messages") == [(4,)]
    assert s.insert_raw(INSERT, ("a", "b", "last")) == after[-1] + 1
    with s.read() as conn:
        table = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'messages'").scalar()
    assert "AUTOINCREMENT" not in table.upper()
    s.close()


def test_an_autoincrement_database_is_migrated_with_its_rows_and_ids(tmp_path):
    path = tmp_path / "hive.db"
    old = Store(path, target_version=MIGRATIONS.index(db._lean_messages))
    ids = [old.insert_raw(INSERT, ("a", "b", f"m{i}")) for i in range(5)]
    db.run_sql(old, "UPDATE messages SET acked_at = 1 WHERE id = ?", (ids[0],))
    db.run_sql(old, "DELETE FROM messages WHERE id = ?", (ids[-1],))  # AUTOINCREMENT never gives this id again
    old.close()
    s = Store(path)
    assert db.run_sql(s, "SELECT id, body, acked_at FROM messages ORDER BY id") == [
        (ids[0], "m0", 1.0), (ids[1], "m1", None), (ids[2], "m2", None), (ids[3], "m3", None)]
    assert s.insert_raw(INSERT, ("a", "b", "new")) > ids[3]
    s.close()


def test_group_commit_answers_each_insert_with_its_own_row(tmp_path):
    s = Store(tmp_path / "hive.db")
    got: dict[int, list[int]] = {}

    def writer(k):
        got[k] = [s.insert_raw(INSERT, (f"w{k}", "b", f"{k}-{i}")) for i in range(200)]

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = dict(db.run_sql(s, "SELECT id, body FROM messages"))
    every = [i for ids in got.values() for i in ids]
    assert len(every) == len(set(every)) == len(rows) == 1600
    for k, ids in got.items():
        assert [rows[i] for i in ids] == [f"{k}-{i}" for i in range(200)]
        assert ids == sorted(ids)


def test_a_refused_insert_in_a_group_leaves_the_others_stored(tmp_path):
    s = Store(tmp_path / "hive.db")

    def refuse(raw):
        raise ValueError("over the quota")

    with pytest.raises(ValueError, match="over the quota"):
        s.insert_raw(INSERT, ("a", "b", "refused"), check=refuse)
    assert s.insert_raw(INSERT, ("a", "b", "kept")) == 1
    assert db.run_sql(s, "SELECT body FROM messages") == [("kept",)]
    s.close()


def _rows_in_the_database_file_alone(path, tmp_path) -> int:
    """Rows of messages in the main database file without its WAL: what a checkpoint has copied back."""
    alone = tmp_path / "alone.db"
    alone.write_bytes(path.read_bytes())
    con = sqlite3.connect(alone)
    try:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages'").fetchone():
            return 0  # not even the schema has been copied back yet
        return con.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        con.close()


def _store_whose_checkpoint_thread_waits(path, monkeypatch) -> Store:
    """A store whose checkpoint thread does nothing until ``monkeypatch.undo()``: the one its migrations started
    is stopped (it could copy pages back while the test looks), and its successor is not poked."""
    s = Store(path)
    s._checkpointer.stop()
    s._checkpointer = db._Checkpointer(path)
    monkeypatch.setattr(s._checkpointer, "poke", lambda: None)
    return s


def test_the_wal_is_copied_back_by_a_thread_of_its_own_not_by_the_thread_that_commits(tmp_path, monkeypatch):
    """A checkpoint stalled the committing thread (the socket loop) for milliseconds every ~1,000 WAL pages; the
    store's checkpoint thread does it instead, and the writer checkpoints itself only past a larger backstop."""
    path = tmp_path / "hive.db"
    s = _store_whose_checkpoint_thread_waits(path, monkeypatch)
    body = "x" * 20_000  # about 5 pages a row: 300 rows is past SQLite's default of 1,000 pages
    for i in range(300):
        s.insert_raw(INSERT, ("a", "b", f"{i} {body}"))
    assert _rows_in_the_database_file_alone(path, tmp_path) == 0  # the committing thread copied nothing back
    assert s.raw_reader().execute("SELECT count(*) FROM messages").fetchone()[0] == 300  # all committed (WAL)

    monkeypatch.undo()  # the thread may come now
    s.insert_raw(INSERT, ("a", "b", "one more"))
    for _ in range(100):
        if s._checkpointer.checkpoints:
            break
        threading.Event().wait(0.05)
    assert s._checkpointer.checkpoints >= 1
    assert _rows_in_the_database_file_alone(path, tmp_path) == 301
    thread = s._checkpointer._thread
    assert thread.name == "checkpoint" and thread.is_alive()
    s.close()
    assert not thread.is_alive()  # close stops it


def test_the_writer_still_checkpoints_past_the_backstop_when_the_thread_cannot(tmp_path, monkeypatch):
    """If the checkpoint thread never runs (or writes never pause for it), the WAL does not grow without bound."""
    path = tmp_path / "hive.db"
    s = _store_whose_checkpoint_thread_waits(path, monkeypatch)
    body = "x" * 20_000
    for i in range(db.WRITER_CHECKPOINT_PAGES // 5 + 200):
        s.insert_raw(INSERT, ("a", "b", f"{i} {body}"))
    assert _rows_in_the_database_file_alone(path, tmp_path) > 0
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size < 2 * db.WRITER_CHECKPOINT_PAGES * 4200
    s.close()


def test_a_checkpoint_thread_that_cannot_open_the_database_is_said_once_and_writes_go_on(tmp_path, caplog):
    path = tmp_path / "hive.db"
    s = Store(path)
    s._checkpointer.stop()  # the one the migrations started; its successor cannot open the database
    s._checkpointer = db._Checkpointer(tmp_path / "no" / "such" / "directory" / "hive.db")
    with caplog.at_level("WARNING", logger="hyperhive.store"):
        for i in range(20):
            s.insert_raw(INSERT, ("a", "b", f"m{i}"))
            thread = s._checkpointer._thread
            if thread is not None:
                thread.join(5)
    said = [r.getMessage() for r in caplog.records if "cannot checkpoint" in r.getMessage()]
    assert len(said) == 1 and "no/such/directory/hive.db" in said[0] and "trying again in 30 s" in said[0]
    assert not s._checkpointer._thread.is_alive()  # not started again at every commit
    assert s.raw_reader().execute("SELECT count(*) FROM messages").fetchone()[0] == 20
    s.close()


def test_only_the_operators_messages_are_indexed_by_recipient_and_an_old_database_keeps_them(tmp_path):
    """A send to an agent writes the table and ``messages_inbox`` (and the counts), no index by recipient
    besides: the operator's inbox, the one reader of every message to one recipient, has its own partial index.
    A database from before keeps every message and reads the same operator inbox."""
    path = tmp_path / "hive.db"
    old = Store(path, target_version=MIGRATIONS.index(db._operator_inbox_index))
    for i in range(30):
        old.insert_raw(INSERT, ("alice" if i % 3 else "bob", "operator" if i % 5 == 0 else f"a{i % 7}", f"m{i}"))
    old.close()
    s = Store(path)
    with s.read() as conn:
        indexes = {name: sql for name, sql in conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")}
        plan = " ".join(str(row) for row in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT * FROM messages WHERE recipient = ? ORDER BY id DESC LIMIT 50",
            ("operator",)))
    assert set(indexes) == {"messages_inbox", "messages_leased", "messages_operator"}
    assert "WHERE recipient = 'operator'" in indexes["messages_operator"]
    assert "messages_operator" in plan  # the operator's inbox reads its index, not every message
    assert db.run_sql(s, "SELECT count(*) FROM messages") == [(30,)]
    s.close()


def test_a_damaged_or_newer_database_stops_the_start_in_one_sentence_and_stays_as_it_was(tmp_path):
    """What is not a database this hyperhive can open (random bytes, a torn header, a newer schema) is named with
    what to do, and not a byte of it changes: it may be all that is left of the hive's history."""
    import os
    import subprocess
    import sys

    from conftest import write_config

    config = write_config(tmp_path)
    path = tmp_path / "state" / "hive.db"
    path.parent.mkdir(parents=True)
    newer = newer_database(tmp_path / "newer.db")
    for content, said in ((os.urandom(8192), "file is not a database"),
                          (b"SQLite format 3\0" + b"\xff" * 200, "is not a database"),
                          (newer.read_bytes(), "newer than this hyperhive")):
        path.write_bytes(content)
        run = subprocess.run([sys.executable, "-m", "hyperhive", "serve", "--no-agents", "--config", str(config)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert said in run.stderr and str(path) in run.stderr, run.stderr
        assert path.read_bytes() == content
