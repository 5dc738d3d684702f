"""MCP benchmark: ``send`` tool calls through ``hyperhive mcp`` against raw socket sends, on one real service.

    python pkgs/hyperhive/benchmarks/mcp.py [--quick]

One client each, one call at a time (as Claude Code calls a tool and waits for its result): raw ``send`` requests
on one Unix-socket connection to a ``hyperhive serve --no-agents``, then ``tools/call send`` JSON-RPC lines to a
``hyperhive mcp`` process on the same socket. Target (2 cores): MCP calls/s >= 0.5 of raw sends/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hyperhive.config import load_config  # noqa: E402
from hyperhive.transport import Client  # noqa: E402

from _common import PACKAGE, start_service, stop_service  # noqa: E402

TARGET_RATIO = 0.5


class McpProcess:
    def __init__(self, socket_path: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "hyperhive", "mcp", "--socket", socket_path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(PACKAGE)})
        self.next_id = 0

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                                          "params": params}).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            answer = json.loads(self.proc.stdout.readline())
            if answer.get("id") == self.next_id:
                if "error" in answer or answer["result"].get("isError"):
                    raise SystemExit(f"{method} failed: {answer}")
                return answer["result"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def rate(call, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        call(i)
    return n / (time.perf_counter() - started)


SINKS = [f"sink{i}" for i in range(16)]


def drain(sinks: list[Client]) -> None:
    """Acknowledge everything the sinks got, between timed blocks: the default flood quota
    (``limits.maxUnackedPerSender``) bounds what one sender may have waiting in one inbox."""
    for sink in sinks:
        while True:
            got = sink.call("recv", max=1000)["messages"]
            if not got:
                break
            sink.call("ack", ids=[m["id"] for m in got])


def bench(config, n: int, rounds: int) -> tuple[float, float, float]:
    """Raw and MCP in alternating blocks (the machine is shared: load that comes and goes hits both alike); the
    best block of each, and the median of the per-round ratios. Sends go round the sinks, which are drained
    between blocks, so that the service's default quotas stay in force."""
    socket_path = str(config.agent_socket("alice"))
    client = Client(socket_path, timeout=30)
    sinks = [Client(config.agent_socket(name), timeout=30) for name in SINKS]
    mcp = McpProcess(socket_path)
    try:
        mcp.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                   "clientInfo": {"name": "bench", "version": "1"}})
        mcp.request("tools/list", {})

        def raw_send(i):
            client.call("send", to=SINKS[i % len(SINKS)], body=f"raw {i}")

        def mcp_send(i):
            mcp.request("tools/call", {"name": "send", "arguments": {"to": SINKS[i % len(SINKS)], "body": f"mcp {i}"}})

        rate(raw_send, 50)  # warm up
        drain(sinks)
        rate(mcp_send, 50)
        drain(sinks)
        raws, mcps = [], []
        for _ in range(rounds):
            raws.append(rate(raw_send, n))
            drain(sinks)
            mcps.append(rate(mcp_send, n))
            drain(sinks)
        ratios = sorted(m / r for m, r in zip(mcps, raws))
        return max(raws), max(mcps), ratios[len(ratios) // 2]
    finally:
        client.close()
        for sink in sinks:
            sink.close()
        mcp.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls: a smoke run")
    args = parser.parse_args()
    n, rounds = (100, 3) if args.quick else (300, 7)
    directory = Path(tempfile.mkdtemp(prefix="hhbm", dir="/tmp"))
    proc = None
    try:
        proc, config_path, _ = start_service(directory, {"alice": {}, **{name: {} for name in SINKS}})
        raw, via_mcp, ratio = bench(load_config(config_path), n, rounds)
    finally:
        if proc is not None:
            stop_service(proc, 10)
        shutil.rmtree(directory, ignore_errors=True)
    ok = ratio >= TARGET_RATIO
    print(f"mcp benchmark ({'quick' if args.quick else 'full'}; {os.cpu_count()} cores, {rounds} rounds of {n} calls each, alternating)")
    print(f"  {'raw socket sends/s (one client, best)':<40} {raw:>10,.0f}")
    print(f"  {'MCP send tool calls/s (best)':<40} {via_mcp:>10,.0f}")
    print(f"  {'MCP / raw (median of rounds)':<40} {ratio:>10.2f}  target >= {TARGET_RATIO}: "
          f"{'met' if ok else 'NOT met'}")
    print("targets: " + ("met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
