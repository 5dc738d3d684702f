"""Broker benchmark: a real ``hyperhive serve --no-agents`` process on its Unix sockets.

    python pkgs/hyperhive/benchmarks/broker.py [--quick]

Every figure is a ratio measured in this one run, against a floor or a baseline measured next to it, and is
printed with its target and whether it was met (2 cores):

- floors: a bare SQLite commit (one row, one column), the **real-schema floor** (one row into the messages table
  with its indexes, in WAL with the service's pragmas, as the service's migrations made it) and a bare Unix-socket
  JSON round trip;
- durable sends/s, one client: >= 0.35 of the real-schema floor;
- durable sends/s, 8 clients: >= 3x one client;
- ``recv`` + ``ack`` of one message, and ``status``, with 10,000 messages waiting: within 1.5x of the same with
  none waiting;
- send -> parked ``recv`` wake: p50 < 2 ms, p99 < 10 ms;
- 100 parked receivers all woken while 8 clients send.

It also prints the service's CPU time per send with one client and with eight (from /proc): one loop thread answers
every send, so the second bounds what any number of clients can reach, and so the ratio to one client.
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


def bench_schema_floor(directory: Path, n: int) -> float:
    """Commits/s of one row into the real messages table (its indexes, WAL, the service's pragmas): the floor a
    durable send stands on. The schema is made by the service's own migrations."""
    from hyperhive.store import Store, _on_connect

    Store(directory / "schema.db").close()
    con = sqlite3.connect(directory / "schema.db", isolation_level=None)
    _on_connect(con, None)
    sql = ("INSERT INTO messages (sender, recipient, kind, body, data, sent_at, deliveries) "
           "VALUES (?, ?, 'message', ?, NULL, ?, 0)")
    started = time.perf_counter()
    for i in range(n):
        con.execute("BEGIN IMMEDIATE")
        con.execute(sql, ("s0", "sink", f"message {i} from s0", time.time()))
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


def bench_backlog(config, rounds: int, depth: int) -> dict[str, float]:
    """Median µs of ``recv`` + ``ack`` of one message and of ``status``, for an inbox with nothing else waiting and
    for one with ``depth`` messages waiting. The deep inbox is filled by the 100 agents p0..p99 (at most
    limits.maxUnackedPerSender each, the default quota), and each round puts back what it took, untimed, from
    the same sender, so the depths hold."""
    senders = [f"p{i}" for i in range(100)]
    per_sender = -(-depth // len(senders))

    def fill(group):
        for name in group:
            with Client(config.agent_socket(name)) as c:
                for j in range(per_sender):
                    c.call("send", to="deep", body=f"backlog {j} from {name}")

    threads = [threading.Thread(target=fill, args=(senders[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conns = {name: Client(config.agent_socket(name)) for name in senders}
    conns["p0"].call("send", to="shallow", body="the one message")
    clients = {name: Client(config.agent_socket(name)) for name in ("shallow", "deep")}
    times: dict[str, list[float]] = {f"{name}_{what}": [] for name in clients for what in ("recv_ack", "status")}
    for i in range(rounds):  # the two inboxes alternate, so that both see the same load on the machine
        for name, c in clients.items():
            started = time.perf_counter()
            got = c.call("recv")["messages"]
            c.call("ack", ids=[m["id"] for m in got])
            times[f"{name}_recv_ack"].append(time.perf_counter() - started)
            started = time.perf_counter()
            c.call("status")
            times[f"{name}_status"].append(time.perf_counter() - started)
            conns[got[0]["from"]].call("send", to=name, body=f"round {i}")
    out = {key: statistics.median(values) * 1e6 for key, values in times.items()}
    for name, c in clients.items():
        out[f"{name}_waiting"] = c.call("status")["unread"]
        c.close()
    for c in conns.values():
        c.close()
    return out


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


def service_cpu(pid: int) -> float:
    """CPU seconds (user and system) the service process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, figures less steady)")
    args = parser.parse_args()
    n = 1000 if args.quick else 5000
    rounds = 50 if args.quick else 500
    depth = 10_000
    directory = Path(tempfile.mkdtemp(prefix="hhb", dir="/tmp"))
    agents = {"waker": {}, "deep": {}, "shallow": {}, **{f"sink{i}": {} for i in range(SINKS)},
              **{f"s{i}": {} for i in range(8)},
              **{f"p{i}": {} for i in range(100)}}
    proc, path, _ = start_service(directory, agents)
    config = load_config(path)
    try:
        sqlite_rate = bench_bare_sqlite(directory, n)
        schema_rate = bench_schema_floor(directory, n)
        socket_rate = bench_bare_socket(directory, n)
        per_client = n // 8 * 2
        cpu_before = service_cpu(proc.pid)
        one = bench_sends(config, 1, n)
        cpu_after_one = service_cpu(proc.pid)
        eight = bench_sends(config, 8, per_client)
        cpu_one = (cpu_after_one - cpu_before) / n
        cpu_eight = (service_cpu(proc.pid) - cpu_after_one) / (per_client * 8)
        backlog = bench_backlog(config, 200 if args.quick else 1000, depth)
        wake = bench_wake(config, rounds)
        woken, expected, many_s = bench_many_parked(config, 100, 8)
    finally:
        stop_service(proc, 20)
        shutil.rmtree(directory, ignore_errors=True)
    p50, p99 = percentile(wake, 50), percentile(wake, 99)
    recv_ratio = backlog["deep_recv_ack"] / backlog["shallow_recv_ack"]
    status_ratio = backlog["deep_status"] / backlog["shallow_status"]
    checks = [
        ("durable sends/s, 1 client", f"{one:,.0f}",
         f"{one / schema_rate:.2f}x the real-schema floor (target >= 0.35)", one / schema_rate >= 0.35),
        ("durable sends/s, 8 clients", f"{eight:,.0f}",
         f"{eight / one:.2f}x one client (target >= 3)", eight / one >= 3),
        (f"recv+ack with {backlog['deep_waiting']:,} waiting (µs)", f"{backlog['deep_recv_ack']:.0f}",
         f"{recv_ratio:.2f}x with none waiting ({backlog['shallow_recv_ack']:.0f} µs; target <= 1.5)",
         recv_ratio <= 1.5),
        (f"status with {backlog['deep_waiting']:,} waiting (µs)", f"{backlog['deep_status']:.0f}",
         f"{status_ratio:.2f}x with none waiting ({backlog['shallow_status']:.0f} µs; target <= 1.5)",
         status_ratio <= 1.5),
        ("send -> parked recv wake p50 (ms)", f"{p50:.2f}", "target < 2", p50 < 2),
        ("send -> parked recv wake p99 (ms)", f"{p99:.2f}", "target < 10", p99 < 10),
        ("100 parked recvs woken while 8 send", f"{woken}/{expected}", f"in {many_s * 1000:.0f} ms",
         woken == expected),
    ]
    print(f"broker benchmark ({'quick' if args.quick else 'full'}; {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}, mean wake {statistics.mean(wake):.2f} ms)")
    print("  floors, measured in this run:")
    print(f"    {'bare sqlite commits/s':<44} {sqlite_rate:>10,.0f}")
    print(f"    {'real-schema sqlite commits/s (messages)':<44} {schema_rate:>10,.0f}  "
          f"{schema_rate / sqlite_rate:.2f}x bare")
    print(f"    {'bare socket round trips/s':<44} {socket_rate:>10,.0f}")
    commit_us, trip_us = 1e6 / schema_rate, 1e6 / socket_rate
    print(f"    one durable send = {1e6 / one:.0f} µs; floors: {commit_us:.0f} µs commit + {trip_us:.0f} µs round trip "
          f"(no send beats both: at most {commit_us / (commit_us + trip_us):.2f}x the real-schema floor here)")
    print(f"    service CPU per send: {cpu_one * 1e6:.0f} µs with 1 client, {cpu_eight * 1e6:.0f} µs with 8 "
          f"(one loop thread answers every send: 8 clients can reach at most ~{1 / cpu_eight:,.0f}/s, "
          f"{1 / cpu_eight / one:.2f}x one client)")
    print("  figures:")
    for name, value, note, ok in checks:
        print(f"    {name:<44} {value:>10}  {note}: {verdict(ok)}")
    met = sum(ok for *_, ok in checks)
    print(f"targets: {met}/{len(checks)} met" + ("" if met == len(checks) else
                                                   " (" + "; ".join(c[0] for c in checks if not c[3]) + " missed)"))
    return 0 if woken == expected else 1


if __name__ == "__main__":
    sys.exit(main())
