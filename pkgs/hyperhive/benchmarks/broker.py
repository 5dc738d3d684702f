"""Broker benchmark: a real ``hyperhive serve --no-agents`` process on its Unix sockets.

    python pkgs/hyperhive/benchmarks/broker.py [--quick]

Prints sends/s for one client and for 8 concurrent clients, the latency from a ``send`` to a parked ``recv``
returning (p50, p99), and, from the same run, a bare SQLite commit and a bare Unix-socket round trip as the
floors those figures are measured against. Then 100 agents each hold a parked ``recv`` while others send; every
one must get its message. Targets (2 cores): one client >= 5,000 durable sends/s; wake p50 < 2 ms, p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hyperhive.config import load_config  # noqa: E402
from hyperhive.transport import Client  # noqa: E402

from _common import percentile, start_service, stop_service  # noqa: E402


def bench_bare_sqlite(directory: Path, n: int) -> float:
    """Commits/s of one-row inserts with the store's pragmas: the floor under a durable send."""
    con = sqlite3.connect(directory / "bare.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    started = time.perf_counter()
    for i in range(n):
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t (body) VALUES (?)", (f"message {i}",))
        con.execute("COMMIT")
    elapsed = time.perf_counter() - started
    con.close()
    return n / elapsed


def bench_bare_socket(directory: Path, n: int) -> float:
    """Round trips/s of one JSON line each way over a Unix socket, echoed by a thread: the transport floor."""
    path = str(directory / "echo.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()

    def echo():
        conn, _ = server.accept()
        f = conn.makefile("rb")
        for line in f:
            conn.sendall(json.dumps({"ok": True, "result": json.loads(line)}).encode() + b"\n")
        conn.close()

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    f = c.makefile("rb")
    started = time.perf_counter()
    for i in range(n):
        c.sendall(json.dumps({"op": "send", "to": "bob", "body": f"message {i}"}).encode() + b"\n")
        json.loads(f.readline())
    elapsed = time.perf_counter() - started
    c.close()
    server.close()
    return n / elapsed


SINKS = 64  # recipients the sends are spread over (see bench_sends)


def bench_sends(config, clients: int, per_client: int) -> float:
    """Durable sends/s. Nobody acknowledges them, so they are spread over SINKS recipients: no sender has more than
    limits.maxUnackedPerSender (100) waiting for one recipient, and the quota's count (per sender and recipient)
    is part of what is measured, at the sizes a real hive allows."""
    barrier = threading.Barrier(clients + 1)
    errors = []

    def run(i):
        with Client(config.agent_socket(f"s{i}")) as c:
            barrier.wait()
            try:
                for j in range(per_client):
                    c.call("send", to=f"sink{j % SINKS}", body=f"message {j} from s{i}")
            except Exception as e:  # counted, not hidden
                errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} sends failed: {errors[0]}")
    return clients * per_client / elapsed


def bench_wake(config, rounds: int) -> list[float]:
    """Latency from the sender's send() to the parked receiver's recv() returning, in ms."""
    latencies = []
    receiver = Client(config.agent_socket("waker"))
    sender = Client(config.agent_socket("s0"))
    for i in range(rounds):
        ready = threading.Event()
        got = {}

        def park():
            ready.set()
            result = receiver.call("recv", wait_seconds=30)
            got["t"] = time.perf_counter()
            receiver.call("ack", ids=[m["id"] for m in result["messages"]])

        t = threading.Thread(target=park)
        t.start()
        ready.wait()
        time.sleep(0.003)  # let the request reach the service and park
        sent = time.perf_counter()
        sender.call("send", to="waker", body=f"wake {i}")
        t.join()
        latencies.append((got["t"] - sent) * 1000)
    receiver.close()
    sender.close()
    return latencies


def bench_many_parked(config, parked: int, senders: int) -> tuple[int, int, float]:
    """``parked`` agents hold a recv while ``senders`` agents send to them; returns (woken, expected, seconds)."""
    results = {}
    started_parking = threading.Barrier(parked + 1)

    def park(name):
        with Client(config.agent_socket(name), timeout=60) as c:
            started_parking.wait()
            results[name] = c.call("recv", wait_seconds=60)["messages"]

    threads = [threading.Thread(target=park, args=(f"p{i}",)) for i in range(parked)]
    for t in threads:
        t.start()
    started_parking.wait()
    time.sleep(0.5)
    started = time.perf_counter()

    def send_some(k):
        with Client(config.agent_socket(f"s{k}")) as c:
            for i in range(k, parked, senders):
                c.call("send", to=f"p{i}", body=f"for p{i}")

    send_threads = [threading.Thread(target=send_some, args=(k,)) for k in range(senders)]
    for t in send_threads:
        t.start()
    for t in send_threads + threads:
        t.join(60)
    elapsed = time.perf_counter() - started
    woken = sum(1 for name, msgs in results.items() if [m["body"] for m in msgs] == [f"for {name}"])
    return woken, parked, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, figures less steady)")
    args = parser.parse_args()
    n = 500 if args.quick else 5000
    rounds = 50 if args.quick else 500
    directory = Path(tempfile.mkdtemp(prefix="hhb", dir="/tmp"))
    agents = {"waker": {}, **{f"sink{i}": {} for i in range(SINKS)}, **{f"s{i}": {} for i in range(8)},
              **{f"p{i}": {} for i in range(100)}}
    proc, path, _ = start_service(directory, agents)
    config = load_config(path)
    try:
        sqlite_rate = bench_bare_sqlite(directory, n)
        socket_rate = bench_bare_socket(directory, n)
        one = bench_sends(config, 1, n)
        eight = bench_sends(config, 8, n // 8)
        wake = bench_wake(config, rounds)
        woken, expected, many_s = bench_many_parked(config, 100, 8)
    finally:
        stop_service(proc, 20)
        shutil.rmtree(directory, ignore_errors=True)
    p50, p99 = percentile(wake, 50), percentile(wake, 99)
    rows = [
        ("bare sqlite commits/s (floor)", f"{sqlite_rate:,.0f}", ""),
        ("bare socket round trips/s (floor)", f"{socket_rate:,.0f}", ""),
        ("durable sends/s, 1 client", f"{one:,.0f}",
         f"{one / sqlite_rate:.2f}x sqlite, {one / socket_rate:.2f}x socket; target >= 5,000"),
        ("durable sends/s, 8 clients", f"{eight:,.0f}", f"{eight / sqlite_rate:.2f}x sqlite"),
        ("send -> parked recv wake p50 (ms)", f"{p50:.2f}", "target < 2"),
        ("send -> parked recv wake p99 (ms)", f"{p99:.2f}", "target < 10"),
        ("100 parked recvs woken while 8 send", f"{woken}/{expected}", f"in {many_s * 1000:.0f} ms"),
    ]
    print(f"broker benchmark ({'quick' if args.quick else 'full'}; {os.cpu_count()} cores, "
          f"mean wake {statistics.mean(wake):.2f} ms)")
    for name, value, note in rows:
        print(f"  {name:<38} {value:>10}  {note}")
    ok = woken == expected
    if not args.quick:
        ok = ok and one >= 5000 and p50 < 2 and p99 < 10
    print("targets: " + ("met" if ok else "NOT met"))
    return 0 if woken == expected else 1


if __name__ == "__main__":
    sys.exit(main())
