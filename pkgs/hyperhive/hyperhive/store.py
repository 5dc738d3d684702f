"""The service's one SQLite database, through SQLAlchemy Core.

WAL mode, a busy timeout, foreign keys, and one writer: every write takes a process-wide lock and a
``BEGIN IMMEDIATE`` transaction, so readers never block and writers never deadlock on lock upgrades.
``synchronous=NORMAL`` in WAL mode keeps every committed transaction through a crash of the process
(``kill -9``); only a power loss can take the last few.

Migrations are explicit: ``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``. A database made by
an older schema is migrated on open; rows are never rewritten in a way that could lose what they held.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import (Column, Float, Index, Integer, MetaData, String, Table, Text, create_engine, event,
                        text)
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

metadata = MetaData()

# The current shape of every table, for queries. The DDL that creates them lives in MIGRATIONS, so that an
# old database and a new one end up identical.
messages = Table(
    "messages", metadata,
    Column("id", Integer, primary_key=True),
    Column("sender", String, nullable=False),
    Column("recipient", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("body", Text, nullable=False),
    Column("data", Text),  # JSON of an event's structured fields (v2)
    Column("reply_to", Integer),  # the id of the message this one answers (v3)
    Column("sent_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("acked_at", Float),
    Column("deliveries", Integer, nullable=False),
)

questions = Table(
    "questions", metadata,
    Column("id", Integer, primary_key=True),
    Column("asker", String, nullable=False),
    Column("question", Text, nullable=False),
    Column("options", Text),  # JSON list; older rows may hold NULL, '' or a bare string
    Column("multi", Integer),  # v2
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),  # v2
    Column("status", String, nullable=False),
    Column("answer", Text),
    Column("answered_at", Float),
)

approvals = Table(
    "approvals", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String, nullable=False),  # apply | spawn
    Column("agent", String, nullable=False),
    Column("requested_by", String, nullable=False),
    Column("ref", String),
    Column("sha", String),
    Column("base_sha", String),
    Column("status", String, nullable=False),
    Column("note", Text),
    Column("error", Text),
    Column("tag", String),
    Column("created_at", Float, nullable=False),
    Column("resolved_at", Float),
    Column("reason", Text),  # the manager's reason for the request (v3)
    Column("commit_info", Text),  # JSON: the proposed commit's subject, body, author and date (v3)
)

agents = Table(
    "agents", metadata,
    Column("name", String, primary_key=True),
    Column("state", String, nullable=False),  # draft | active | tombstone
    Column("origin", String, nullable=False),  # declared | spawned
    Column("policy", Text),  # JSON of the agent's own agent.nix options, for spawned agents
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

stats = Table(
    "stats", metadata,
    Column("id", Integer, primary_key=True),
    Column("agent", String, nullable=False),
    Column("ts", Float, nullable=False),
    Column("key", String, nullable=False),
    Column("value", Float, nullable=False),
)

Index("stats_agent_key_ts", stats.c.agent, stats.c.key, stats.c.ts)

# One row per Claude Code session the harness ran: a turn, or a notes compaction (kind), with what the CLI's
# ``result`` event reported and the agent's deployed tag and commit at that moment.
turns = Table(
    "turns", metadata,
    Column("id", Integer, primary_key=True),
    Column("agent", String, nullable=False),
    Column("kind", String, nullable=False),  # turn | compaction
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Column("status", String, nullable=False),  # ok | failed | timeout | too_long
    Column("exit_status", Integer),
    Column("model", String),
    Column("wake_kind", String),  # message | event | reminder | retry | operator
    Column("wake_from", String),
    Column("message_ids", Text),  # JSON list
    Column("tokens_input", Integer, nullable=False),
    Column("tokens_output", Integer, nullable=False),
    Column("tokens_cache_read", Integer, nullable=False),
    Column("tokens_cache_write", Integer, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("num_turns", Integer),
    Column("duration_api_ms", Float),
    Column("model_usage", Text),  # JSON {model: {...}} as the CLI reports it
    Column("tool_calls", Integer, nullable=False),
    Column("tools", Text),  # JSON {tool: count}
    Column("deployed_tag", String),
    Column("deployed_sha", String),
    Column("error", Text),  # why a session that did not end ok failed, as its harness said (schema 7)
)

reminders = Table(
    "reminders", metadata,
    Column("id", Integer, primary_key=True),
    Column("agent", String, nullable=False),
    Column("body", Text, nullable=False),
    Column("due_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("status", String, nullable=False),  # pending | delivered | cancelled
    Column("ended_at", Float),
    Column("message_id", Integer),
)

# What the operator set at run time for one agent: a model that replaces the configured one.
agent_overrides = Table(
    "agent_overrides", metadata,
    Column("agent", String, primary_key=True),
    Column("model", String),
    Column("updated_at", Float, nullable=False),
)

# Agents the operator or the manager killed: they stay stopped, across restarts of the service (and, under the
# nixos-container backend, boots of the host), until someone starts, restarts, rebuilds or deploys them.
stopped_agents = Table(
    "stopped_agents", metadata,
    Column("agent", String, primary_key=True),
    Column("by", String, nullable=False),
    Column("at", Float, nullable=False),
)

# A budget's day (UTC) for one agent, or for the whole hive (agent "*"): a limit raised by the operator, and the
# question that asked about it.
budget_days = Table(
    "budget_days", metadata,
    Column("agent", String, primary_key=True),
    Column("day", String, primary_key=True),
    Column("usd", Float),
    Column("tokens", Integer),
    Column("question_id", Integer),
    Column("decided", String),  # raised | kept
)


def _v0_to_v1(conn: Connection) -> None:
    for ddl in (
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT, sender TEXT NOT NULL, recipient TEXT NOT NULL,
            kind TEXT NOT NULL, body TEXT NOT NULL, sent_at REAL NOT NULL, lease_until REAL,
            acked_at REAL, deliveries INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX messages_inbox ON messages (recipient, id) WHERE acked_at IS NULL",
        "CREATE INDEX messages_recipient ON messages (recipient, id)",
        """CREATE TABLE questions (
            id INTEGER PRIMARY KEY AUTOINCREMENT, asker TEXT NOT NULL, question TEXT NOT NULL, options TEXT,
            created_at REAL NOT NULL, status TEXT NOT NULL, answer TEXT, answered_at REAL)""",
        """CREATE TABLE approvals (
            id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, agent TEXT NOT NULL,
            requested_by TEXT NOT NULL, ref TEXT, sha TEXT, status TEXT NOT NULL, note TEXT, error TEXT,
            tag TEXT, created_at REAL NOT NULL, resolved_at REAL)""",
        """CREATE TABLE stats (
            id INTEGER PRIMARY KEY AUTOINCREMENT, agent TEXT NOT NULL, ts REAL NOT NULL, key TEXT NOT NULL,
            value REAL NOT NULL)""",
        "CREATE INDEX stats_agent_key_ts ON stats (agent, key, ts)",
    ):
        conn.exec_driver_sql(ddl)


def _v1_to_v2(conn: Connection) -> None:
    for ddl in (
        "ALTER TABLE messages ADD COLUMN data TEXT",
        "ALTER TABLE questions ADD COLUMN multi INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE questions ADD COLUMN expires_at REAL",
        "CREATE INDEX questions_pending ON questions (status, id)",
        "ALTER TABLE approvals ADD COLUMN base_sha TEXT",
        "CREATE INDEX approvals_status ON approvals (status, id)",
        """CREATE TABLE agents (
            name TEXT PRIMARY KEY, state TEXT NOT NULL, origin TEXT NOT NULL, policy TEXT,
            created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
    ):
        conn.exec_driver_sql(ddl)


def _v2_to_v3(conn: Connection) -> None:
    for ddl in (
        "ALTER TABLE approvals ADD COLUMN reason TEXT",
        "ALTER TABLE approvals ADD COLUMN commit_info TEXT",
        "ALTER TABLE messages ADD COLUMN reply_to INTEGER",
    ):
        conn.exec_driver_sql(ddl)


def _add_insight_tables(conn: Connection) -> None:
    for ddl in (
        """CREATE TABLE turns (
            id INTEGER PRIMARY KEY, agent TEXT NOT NULL, kind TEXT NOT NULL, started_at REAL NOT NULL,
            ended_at REAL NOT NULL, status TEXT NOT NULL, exit_status INTEGER, model TEXT, wake_kind TEXT,
            wake_from TEXT, message_ids TEXT, tokens_input INTEGER NOT NULL, tokens_output INTEGER NOT NULL,
            tokens_cache_read INTEGER NOT NULL, tokens_cache_write INTEGER NOT NULL, cost_usd REAL NOT NULL,
            num_turns INTEGER, duration_api_ms REAL, model_usage TEXT, tool_calls INTEGER NOT NULL, tools TEXT,
            deployed_tag TEXT, deployed_sha TEXT)""",
        "CREATE INDEX turns_agent_started ON turns (agent, started_at)",
        "CREATE INDEX turns_started ON turns (started_at)",
        """CREATE TABLE reminders (
            id INTEGER PRIMARY KEY, agent TEXT NOT NULL, body TEXT NOT NULL, due_at REAL NOT NULL,
            created_at REAL NOT NULL, status TEXT NOT NULL, ended_at REAL, message_id INTEGER)""",
        "CREATE INDEX reminders_pending ON reminders (status, due_at)",
        "CREATE INDEX reminders_agent ON reminders (agent, status)",
        """CREATE TABLE agent_overrides (
            agent TEXT PRIMARY KEY, model TEXT, updated_at REAL NOT NULL)""",
        """CREATE TABLE budget_days (
            agent TEXT NOT NULL, day TEXT NOT NULL, usd REAL, tokens INTEGER, question_id INTEGER, decided TEXT,
            PRIMARY KEY (agent, day))""",
    ):
        conn.exec_driver_sql(ddl)


def _lean_messages(conn: Connection) -> None:
    """Messages without AUTOINCREMENT, and inbox costs that do not grow with the backlog.

    - No ``AUTOINCREMENT``: SQLite then gives a new row ``max(id) + 1`` without the ``sqlite_sequence`` write
      each insert paid for. Ids stay unique and increasing as long as the newest row is never deleted, so a
      trigger refuses exactly that (deleting older rows, as a retention would, is fine).
    - ``messages_inbox`` covers the lease check (``lease_until`` in the index): finding what a ``recv`` may
      lease reads no table rows.
    - ``messages_leased`` holds only leased, unacknowledged rows: counting what is leased costs what is leased,
      not the backlog.
    - ``inbox_counts`` holds how many messages each sender has unacknowledged at each recipient, kept by
      triggers whoever writes (quotas, ``recv``'s unread, ``status`` and the dashboard read it instead of
      counting rows).

    The table is rebuilt from its own current definition (whatever columns earlier versions added), rows and
    ids unchanged; its other indexes and triggers are made again.
    """
    import re

    table_sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'").scalar()
    extras = [sql for (sql,) in conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'messages' AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL AND name NOT IN ('messages_inbox', 'messages_recipient')")]
    columns = ", ".join(f'"{row[1]}"' for row in conn.exec_driver_sql("PRAGMA table_info(messages)"))
    lean_sql = re.sub(r"\s+AUTOINCREMENT\b", "", table_sql, flags=re.I)
    lean_sql = re.sub(r"^CREATE TABLE\s+\"?messages\"?", "CREATE TABLE messages_lean", lean_sql, flags=re.I)
    for ddl in (
        lean_sql,
        f"INSERT INTO messages_lean ({columns}) SELECT {columns} FROM messages ORDER BY id",
        "DROP TABLE messages",
        "ALTER TABLE messages_lean RENAME TO messages",
        "DELETE FROM sqlite_sequence WHERE name = 'messages'",
        "CREATE INDEX messages_inbox ON messages (recipient, id, lease_until) WHERE acked_at IS NULL",
        "CREATE INDEX messages_recipient ON messages (recipient, id)",
        "CREATE INDEX messages_leased ON messages (recipient, lease_until) "
        "WHERE acked_at IS NULL AND lease_until IS NOT NULL",
        """CREATE TRIGGER messages_keep_newest BEFORE DELETE ON messages
            WHEN OLD.id >= (SELECT max(id) FROM messages)
            BEGIN SELECT RAISE(ABORT, 'the newest message is never deleted: it keeps message ids increasing'); END""",
        """CREATE TABLE inbox_counts (
            recipient TEXT NOT NULL, sender TEXT NOT NULL, unacked INTEGER NOT NULL,
            PRIMARY KEY (recipient, sender)) WITHOUT ROWID""",
        "INSERT INTO inbox_counts (recipient, sender, unacked) "
        "SELECT recipient, sender, count(*) FROM messages WHERE acked_at IS NULL GROUP BY recipient, sender",
        """CREATE TRIGGER inbox_counts_insert AFTER INSERT ON messages WHEN NEW.acked_at IS NULL BEGIN
            INSERT INTO inbox_counts (recipient, sender, unacked) VALUES (NEW.recipient, NEW.sender, 1)
            ON CONFLICT (recipient, sender) DO UPDATE SET unacked = unacked + 1; END""",
        """CREATE TRIGGER inbox_counts_ack AFTER UPDATE OF acked_at ON messages
            WHEN OLD.acked_at IS NULL AND NEW.acked_at IS NOT NULL BEGIN
            UPDATE inbox_counts SET unacked = unacked - 1 WHERE recipient = OLD.recipient AND sender = OLD.sender;
            END""",
        """CREATE TRIGGER inbox_counts_unack AFTER UPDATE OF acked_at ON messages
            WHEN OLD.acked_at IS NOT NULL AND NEW.acked_at IS NULL BEGIN
            INSERT INTO inbox_counts (recipient, sender, unacked) VALUES (NEW.recipient, NEW.sender, 1)
            ON CONFLICT (recipient, sender) DO UPDATE SET unacked = unacked + 1; END""",
        """CREATE TRIGGER inbox_counts_delete AFTER DELETE ON messages WHEN OLD.acked_at IS NULL BEGIN
            UPDATE inbox_counts SET unacked = unacked - 1 WHERE recipient = OLD.recipient AND sender = OLD.sender;
            END""",
        *extras,
    ):
        conn.exec_driver_sql(ddl)


def _operator_inbox_index(conn: Connection) -> None:
    """Index by recipient only what the operator's inbox reads: the messages to ``operator``.

    ``messages_recipient`` indexed every message by recipient, but only the operator's inbox (every message to
    ``operator``, read or not, newest first) read it; an agent's inbox is ``messages_inbox``. Each send paid for it:
    a commit of sends to several recipients wrote one more index page per recipient (in a benchmark of seven
    sends to seven of 64 recipients, 19 pages a commit instead of 11). ``messages_operator`` holds only the
    operator's messages.
    """
    conn.exec_driver_sql("DROP INDEX IF EXISTS messages_recipient")
    conn.exec_driver_sql("CREATE INDEX messages_operator ON messages (id) WHERE recipient = 'operator'")


def _turn_errors(conn: Connection) -> None:
    """Keep why a session failed with it (``turns.error``, as its harness said): the dashboard's "stuck" reason
    and ``hyperhive turns`` read it, across restarts of the service."""
    conn.exec_driver_sql("ALTER TABLE turns ADD COLUMN error TEXT")


def _stopped_agents(conn: Connection) -> None:
    """Keep a kill: an agent the operator or the manager killed is not started again by the next start of the
    service (it was, as every agent is at a start, so a kill lasted only until a restart)."""
    conn.exec_driver_sql("CREATE TABLE stopped_agents (agent TEXT PRIMARY KEY, by TEXT NOT NULL, at REAL NOT NULL)")


MIGRATIONS: list[Callable[[Connection], None]] = [_v0_to_v1, _v1_to_v2, _v2_to_v3, _add_insight_tables,
                                                  _lean_messages, _operator_inbox_index, _turn_errors,
                                                  _stopped_agents]
SCHEMA_VERSION = len(MIGRATIONS)


# The WAL is copied back into the database file (a checkpoint) by a thread of its own, not by the thread that
# commits. SQLite's default is the committing connection, every 1,000 pages: with sends spread over many recipients
# that is every ~60 group commits, and each stalled the socket loop for 5-7 ms of copying and fsync (on a 2-core VM,
# 8 clients: 110-160 ms of every second, and the p99 of a commit was 5.5 ms). The thread copies what has been
# committed, at most every CHECKPOINT_SECONDS while writes come ("PASSIVE": it never blocks a writer, and a reader
# keeps its snapshot); the writer checkpoints itself only past WRITER_CHECKPOINT_PAGES, for when writes never pause
# long enough for the copy to catch up (the WAL then restarts from its start) or the thread has fallen behind.
CHECKPOINT_SECONDS = 0.1
WRITER_CHECKPOINT_PAGES = 4000


class _Checkpointer:
    """The thread that checkpoints the WAL of one store after it was written (``poke``)."""

    RETRY_SECONDS = 30

    def __init__(self, path: Path):
        self.path = path
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.checkpoints = 0  # done so far (for tests and the curious)
        self._retry_at = 0.0  # the thread could not open the database: not started again before then

    def poke(self) -> None:
        """Something was committed: checkpoint soon. Starts the thread at the first commit."""
        self._due.set()
        thread = self._thread
        if thread is None or not thread.is_alive():
            with self._start_lock:
                if (not self._stopping.is_set() and (self._thread is None or not self._thread.is_alive())
                        and time.monotonic() >= self._retry_at):
                    self._thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA journal_mode").fetchone()  # opens the file (connect alone does not)
        except sqlite3.Error as e:  # the writer's own checkpoint past WRITER_CHECKPOINT_PAGES keeps the WAL bounded
            log.warning("cannot checkpoint %s on a thread of its own (%s); trying again in %d s", self.path, e,
                        self.RETRY_SECONDS)
            self._retry_at = time.monotonic() + self.RETRY_SECONDS
            return
        warn_after = 0.0
        try:
            while not self._stopping.is_set():
                self._due.wait()
                if self._stopping.wait(CHECKPOINT_SECONDS):  # writes that come meanwhile share this copy
                    return
                self._due.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as e:  # the writer's own checkpoint past WRITER_CHECKPOINT_PAGES covers it
                    if time.monotonic() >= warn_after:  # said once a minute, not at every try
                        log.warning("checkpoint of %s failed: %s", self.path, e)
                        warn_after = time.monotonic() + 60
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self._due.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)


class _Group:
    """The transaction of one ``Store.group()``, begun at its first write."""

    __slots__ = ("store", "raw", "after")

    def __init__(self, store: "Store"):
        self.store = store
        self.raw: sqlite3.Connection | None = None  # set once begun (the write lock is then held)
        self.after: list[Callable[[], None]] = []

    def __enter__(self) -> "_Group":
        local = self.store._local
        if getattr(local, "group", None) is not None:
            raise RuntimeError("store groups do not nest")
        local.group = self
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.store._local.group = None
        if kind is not None:
            self.rollback()
            return
        self.commit()
        for fn in self.after:
            try:
                fn()
            except Exception:
                log.exception("a callback after a group commit failed")

    def begin(self) -> sqlite3.Connection:
        if self.raw is None:
            self.store._write_lock.acquire()
            try:
                raw = self.store._writer_connection().connection.dbapi_connection
                raw.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._write_lock.release()
                raise
            self.raw = raw
        return self.raw

    def insert(self, sql: str, params: tuple, check) -> int:
        raw = self.begin()
        if check is not None:
            check(raw)
        return raw.execute(sql, params).lastrowid

    def commit(self) -> None:
        raw, self.raw = self.raw, None
        if raw is None:
            return
        try:
            raw.commit()
        except BaseException:
            self._rolled_back(raw)
            raise
        finally:
            self.store._write_lock.release()
        self.store._checkpointer.poke()

    def rollback(self) -> None:
        raw, self.raw = self.raw, None
        if raw is None:
            return
        try:
            self._rolled_back(raw)
        finally:
            self.store._write_lock.release()

    def _rolled_back(self, raw: sqlite3.Connection) -> None:
        self.after.clear()
        if raw.in_transaction:
            raw.rollback()


class NewerSchema(RuntimeError):
    """The database was made by a newer hyperhive; it is left untouched."""


class Store:
    """The database of one hive. Thread-safe; create one per process."""

    def __init__(self, path: str | Path, *, target_version: int = SCHEMA_VERSION):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner_only(self.path)
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._writer: Connection | None = None
        self._checkpointer = _Checkpointer(self.path)
        self.engine: Engine = create_engine(f"sqlite:///{self.path}", pool_size=20, max_overflow=200)
        event.listen(self.engine, "connect", _on_connect)
        event.listen(self.engine, "begin", _on_begin)
        self.migrate(target_version)

    def close(self) -> None:
        self._checkpointer.stop()
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One serialized write transaction (``BEGIN IMMEDIATE``), committed on leaving the block."""
        with self._write_lock:
            writer = self._writer_connection()
            with writer.begin():
                yield writer
        self._checkpointer.poke()

    def _writer_connection(self) -> Connection:
        """One writer, one long-lived connection: no pool checkout on the hot path of every send.
        Call with the write lock held."""
        if self._writer is None or self._writer.closed or self._writer.invalidated:
            self._writer = self.engine.connect().execution_options(immediate=True)
            self._writer.connection.dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
        return self._writer

    def insert_raw(self, sql: str, params: tuple, check: Callable[[Any], Any] | None = None) -> int:
        """One INSERT, durable when this returns (inside ``group()``, when the group commits); the new rowid.
        For the hottest path (every send), where SQLAlchemy's per-statement machinery costs more than SQLite's
        commit. ``check(raw)`` runs in the same transaction just before the insert (e.g. a quota count); raising
        from it refuses this insert alone. Sends share commits through the socket loop's group of each turn.
        """
        group = getattr(self._local, "group", None)
        if group is not None:
            return group.insert(sql, params, check)
        with self.group() as group:
            return group.insert(sql, params, check)

    def group(self) -> "_Group":
        """One transaction for every ``insert_raw`` (and ``raw_write``) this thread makes in the ``with`` block,
        committed when it ends; ``after_commit`` callbacks run only once it has. The socket loop answers the sends
        of one turn inside a group, and answers them only after it: one commit for many senders, each answered
        only once its row is durable. The write lock is taken at the first write, not before. Raises on leaving
        when the commit fails (then nothing of the group is stored)."""
        return _Group(self)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once what this thread wrote is committed: at the end of its group, or now outside one."""
        group = getattr(self._local, "group", None)
        if group is None:
            fn()
        else:
            group.after.append(fn)

    @contextmanager
    def raw_write(self) -> Iterator[sqlite3.Connection]:
        """A serialized write transaction on the writer's DB-API connection, for the broker's hot paths (inside a
        ``group()``, the group's own transaction)."""
        group = getattr(self._local, "group", None)
        if group is not None:  # a savepoint: what fails here is undone, the rest of the group stays
            raw = group.begin()
            raw.execute("SAVEPOINT raw_write")
            try:
                yield raw
            except BaseException:
                raw.execute("ROLLBACK TO raw_write")
                raw.execute("RELEASE raw_write")
                raise
            raw.execute("RELEASE raw_write")
            return
        with self.group() as group:
            yield group.begin()

    def raw_reader(self) -> sqlite3.Connection:
        """This thread's own DB-API connection for reads (autocommit: each statement sees the last commit), for
        the broker's hot paths: no pool checkout, no SQLAlchemy on every recv, ack and status."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            _on_connect(conn, None)
            self._local.conn = conn
        return conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A consistent read snapshot; never blocks on writers (WAL)."""
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def version(self) -> int:
        with self.read() as conn:
            exists = conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").first()
            if not exists:
                return 0
            row = conn.exec_driver_sql("SELECT version FROM schema_version").first()
            return row[0] if row else 0

    def migrate(self, target: int = SCHEMA_VERSION) -> None:
        with self.write() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.exec_driver_sql("SELECT version FROM schema_version").first()
            current = row[0] if row else 0
            if row is None:
                conn.exec_driver_sql("INSERT INTO schema_version (version) VALUES (0)")
            if current > SCHEMA_VERSION:
                raise NewerSchema(
                    f"{self.path} has schema version {current}, newer than this hyperhive "
                    f"({SCHEMA_VERSION}); upgrade hyperhive")
            for version in range(current, target):
                log.info("migrating %s from schema %d to %d", self.path, version, version + 1)
                MIGRATIONS[version](conn)
                conn.exec_driver_sql("UPDATE schema_version SET version = ?", (version + 1,))


def owner_only(path: Path) -> None:
    """The database holds every message: only its owner may read it. Create it 0600 (SQLite gives its -wal and
    -shm files the database's mode) and take back the group and other bits of an older, wider one; never
    through a link."""
    for suffix, create in (("", True), ("-wal", False), ("-shm", False)):
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(f"{path}{suffix}", flags, 0o600)
        except FileNotFoundError:
            continue
        try:
            st = os.fstat(fd)
            if st.st_uid == os.geteuid() and st.st_mode & 0o077:
                os.fchmod(fd, st.st_mode & 0o700)
        finally:
            os.close(fd)


def _on_connect(dbapi_conn, _record) -> None:
    # Let SQLAlchemy's begin event emit BEGIN itself, so that writes can ask for BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


def loads_json(raw: Any, default: Any = None) -> Any:
    """Decode a JSON column without ever raising: a row an older version wrote oddly still reads."""
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


_iso_second: tuple[int, str] = (-1, "")  # the last whole second formatted (every send formats its time)


def iso(ts: float | None) -> str | None:
    global _iso_second
    if ts is None:
        return None
    second = int(ts // 1)
    cached = _iso_second
    if cached[0] != second:
        cached = _iso_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int(ts * 1000) % 1000:03d}Z"


def run_sql(store: Store, sql: str, params: tuple = ()) -> list[Any]:
    """For tests and the benchmark: run one statement as a write and return its rows."""
    with store.write() as conn:
        result = conn.exec_driver_sql(sql, params)
        return list(result) if result.returns_rows else []


__all__ = ["Store", "messages", "questions", "approvals", "agents", "stats", "turns", "reminders",
           "agent_overrides", "stopped_agents", "budget_days", "SCHEMA_VERSION", "MIGRATIONS",
           "loads_json", "iso", "text"]
