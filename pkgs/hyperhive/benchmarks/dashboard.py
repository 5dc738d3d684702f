"""Dashboard benchmark: ``GET /api/state`` of a real ``hyperhive serve --no-agents`` process over HTTP.

    python pkgs/hyperhive/benchmarks/dashboard.py [--quick] [--agents 100] [--questions 200] [--messages 1000000]

The database is seeded directly (executemany, in a temporary directory) with the stored history of a busy hive:
``--messages`` messages between the agents, the manager and the operator, nearly all acknowledged, a few
hundred still waiting; ``--questions`` pending operator questions; telemetry for every agent. The service then
starts on it (giving each of the ``--agents`` declared agents its config repos, as it does on a real host), and
``--requests`` sequential requests measure p50 and p99 of ``GET /api/state`` (and of ``GET /`` for the page).
Target: p50 under 25 ms with 100 agents, 200 pending questions and 1,000,000 stored messages.

The agent rows (deployed tag, stale marker) come from git; the dashboard keeps them between requests and reads
them again when something changes (see ``hyperhive.dashboard.state.OverviewCache``). The first request, which
reads every agent's repos, is printed on its own as the cold figure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hyperhive.dashboard.state import PAGE_SIZES  # noqa: E402
from hyperhive.store import Store  # noqa: E402

from _common import percentile, start_service, stop_service  # noqa: E402

TARGET_P50_MS = 25.0
TARGET_READY_S = 5.0
TARGET_FIRST_MS = 300.0


def bench_startup(n: int) -> tuple[float, float]:
    """A hive of ``n`` declared agents: seconds until a (re)start of the service is ready, and ms of the first
    ``GET /api/state`` right after. The first start of a new hive also creates every agent's config repos (git
    init, commit, tag, the meta flake: work done once per agent, printed as context); the figure is the start
    of the service on a hive whose agents exist, as after a reboot or an upgrade."""
    directory = Path(tempfile.mkdtemp(prefix="hhstart", dir="/tmp"))
    agents = {name: {} for name in agent_names(n)}
    try:
        started = time.perf_counter()
        proc, _, _ = start_service(directory, agents)
        seeded_s = time.perf_counter() - started
        stop_service(proc, 60)
        started = time.perf_counter()
        proc, _, ready = start_service(directory, agents)
        ready_s = time.perf_counter() - started
        try:
            first, body = measure(ready["dashboard"], "/api/state", 1)
            rows = len(json.loads(body)["agents"])
        finally:
            stop_service(proc, 60)
        print(f"start-up: {n} agents: first start (creates their config repos) {seeded_s:.1f} s; restart ready in "
              f"{ready_s:.2f} s; first /api/state {first[0]:.0f} ms ({rows} agent rows)")
        return ready_s, first[0]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def agent_names(n: int) -> list[str]:
    return [f"a{i:03d}" for i in range(1, n + 1)]


def seed(db_path: Path, agents: list[str], questions: int, messages: int, unacked: int = 300) -> float:
    """Fill a fresh database the way months of use would; returns the seconds it took."""
    started = time.perf_counter()
    Store(db_path).close()  # the current schema, through the real migrations
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    rng = random.Random(7)
    parties = agents + ["manager", "operator"]
    now = time.time()
    span = 90 * 86400.0
    waiting = min(messages, unacked)  # still unacknowledged, spread over the agents
    batch = []

    def flush():
        con.executemany("INSERT INTO messages (sender, recipient, kind, body, data, sent_at, lease_until, "
                        "acked_at, deliveries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
        batch.clear()

    for i in range(messages):
        sender, recipient = rng.sample(parties, 2)
        sent_at = now - span + span * i / max(1, messages)
        unacked = i >= messages - waiting
        if rng.random() < 0.1:
            batch.append(("system", recipient, "event", f"{recipient} was restarted by operator",
                          json.dumps({"agent": recipient, "event": "restarted"}), sent_at, None,
                          None if unacked else sent_at + 5, 1))
        else:
            batch.append((sender, recipient, "message", f"message {i}: " + "lorem ipsum " * rng.randint(1, 20),
                          None, sent_at, None, None if unacked else sent_at + 5, 0 if unacked else 1))
        if len(batch) >= 50_000:
            flush()
    flush()
    con.executemany(
        "INSERT INTO questions (asker, question, options, multi, created_at, expires_at, status) "
        "VALUES (?, ?, ?, ?, ?, ?, 'pending')",
        [(rng.choice(agents), f"question {i}: shall I go ahead with step {i}?",
          json.dumps(["yes", "no", "later"] if i % 3 else []), int(i % 7 == 0), now - 3600 + i,
          now + 86400 if i % 5 == 0 else None) for i in range(questions)])
    con.executemany("INSERT INTO questions (asker, question, options, multi, created_at, status, answer, "
                    "answered_at) VALUES (?, ?, '[]', 0, ?, 'answered', 'ok', ?)",
                    [(rng.choice(agents), f"old question {i}", now - span + i, now - span + i + 60)
                     for i in range(questions * 10)])
    stats = []
    for name in agents:
        for k in range(50):
            ts = now - 86400 + k * 1700
            stats += [(name, ts, "turn.duration_s", rng.uniform(2, 60)), (name, ts, "turn.tool_calls", k % 9),
                      (name, ts, "inbox.depth", k % 4)]
    con.executemany("INSERT INTO stats (agent, ts, key, value) VALUES (?, ?, ?, ?)", stats)
    con.commit()
    con.execute("ANALYZE")
    con.close()
    return time.perf_counter() - started


def measure(url: str, path: str, requests: int) -> tuple[list[float], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    times, body = [], b""
    for _ in range(requests):
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
    conn.close()
    return times, body


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100, help="declared agents (default 100)")
    parser.add_argument("--questions", type=int, default=200, help="pending questions (default 200)")
    parser.add_argument("--messages", type=int, default=1_000_000, help="stored messages (default 1,000,000)")
    parser.add_argument("--unacked", type=int, default=50_000,
                        help="of those, still unacknowledged (default 50,000)")
    parser.add_argument("--start-agents", type=int, default=300,
                        help="agents of the start-up figure: service ready and first /api/state (default 300)")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per route (default 300)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 20 agents, 50 questions, 50,000 messages, 100 requests")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.questions = min(args.agents, 20), min(args.questions, 50)
        args.messages, args.requests = min(args.messages, 50_000), min(args.requests, 100)
        args.unacked, args.start_agents = min(args.unacked, 5_000), min(args.start_agents, 100)

    startup = bench_startup(args.start_agents)
    directory = Path(tempfile.mkdtemp(prefix="hhbench", dir="/tmp"))
    try:
        agents = agent_names(args.agents)
        seeded = seed(directory / "state" / "hive.db", agents, args.questions, args.messages, args.unacked)
        print(f"seeded {args.messages:,} messages ({args.unacked:,} unacknowledged), {args.questions} pending "
              f"questions, {args.agents} agents in {seeded:.1f} s")
        started = time.perf_counter()
        proc, _, ready = start_service(directory, {name: {} for name in agents})
        url = ready["dashboard"]
        print(f"service up in {time.perf_counter() - started:.1f} s (config repos for {args.agents + 1} agents)")
        try:
            cold, _ = measure(url, "/api/state", 1)  # the first: git reads for every agent
            measure(url, "/api/state", 5)  # warm: connections and caches
            state_times, body = measure(url, "/api/state", args.requests)
            state = json.loads(body)
            page_times, page = measure(url, "/", max(20, args.requests // 5))
        finally:
            stop_service(proc, 30)
        assert len(state["agents"]) == args.agents + 1, len(state["agents"])
        # the page and /api/state show a page of the pending questions, and count them all
        assert state["counts"]["questions"] == args.questions, state["counts"]
        assert len(state["questions"]) == min(args.questions, PAGE_SIZES["questions"]), len(state["questions"])
        assert state["errors"] == [], state["errors"]
        p50, p99 = percentile(state_times, 50), percentile(state_times, 99)
        figures = {
            "agents": args.agents, "pending_questions": args.questions, "messages": args.messages,
            "state_p50_ms": round(p50, 2), "state_p99_ms": round(p99, 2),
            "state_mean_ms": round(statistics.mean(state_times), 2), "state_bytes": len(body),
            "state_cold_ms": round(cold[0], 2),
            "page_p50_ms": round(percentile(page_times, 50), 2), "page_p99_ms": round(percentile(page_times, 99), 2),
            "page_bytes": len(page),
        }
        print(f"GET /api/state  p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   mean {figures['state_mean_ms']:7.2f} ms   "
              f"({len(body):,} bytes, {args.requests} requests)")
        print(f"GET /api/state  first request (cold): {cold[0]:.1f} ms")
        print(f"GET /           p50 {figures['page_p50_ms']:7.2f} ms   p99 {figures['page_p99_ms']:7.2f} ms   "
              f"({len(page):,} bytes)")
        full = (args.agents >= 100 and args.questions >= 200 and args.messages >= 1_000_000
                and args.unacked >= 50_000 and args.start_agents >= 300)
        note = "" if full else " (on this smaller run; run without options for the target's size)"
        ready_s, first_ms = startup
        checks = [
            (f"/api/state p50 < {TARGET_P50_MS:.0f} ms ({args.agents} agents, {args.messages:,} stored, "
             f"{args.unacked:,} unacked)", f"{p50:.1f} ms", p50 < TARGET_P50_MS),
            (f"{args.start_agents} agents: service (re)start ready < {TARGET_READY_S:.0f} s", f"{ready_s:.2f} s",
             ready_s < TARGET_READY_S),
            (f"{args.start_agents} agents: first /api/state < {TARGET_FIRST_MS:.0f} ms", f"{first_ms:.0f} ms",
             first_ms < TARGET_FIRST_MS),
        ]
        for name, value, ok in checks:
            print(f"target: {name}: {value}: {'met' if ok else 'NOT MET'}{note}")
        figures.update(ready_s=round(ready_s, 2), first_state_ms=round(first_ms, 1))
        if args.json:
            print(json.dumps(figures))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
