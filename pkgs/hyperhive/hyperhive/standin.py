"""The scripted stand-in model: what answers when no Claude Code is installed, so a fresh hive still lives.

``python -m hyperhive.standin`` takes Claude Code's command line (``--print --verbose --output-format
stream-json --settings ... --system-prompt-file ... --mcp-config ... --allowedTools ...``), reads the wake prompt
from stdin, starts the MCP servers of ``--mcp-config`` over stdio as Claude Code does, and acts through the real
hive tools, printing stream-json like Claude Code. It is deterministic and says what it is in everything it
writes: every message it sends starts with ``[stand-in``.

What it does with each message of the prompt (and with those a ``recv`` peek finds):
- a reply of another stand-in (``[stand-in reply]``) is never answered, so every exchange ends; the manager passes
  an agent's reply on to the operator;
- the manager, written to by the operator: passes the message on to the agents it names and tells the operator,
  or answers with who is in the hive;
- the manager, told by the system that an agent was spawned: welcomes the new agent;
- anyone else, written to by anyone: answers the sender with a short acknowledgement.
It keeps a line per turn in its notes, and answers a notes compaction ("compact this") by keeping the headings
and the most recent lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

LABEL = "[stand-in]"
REPLY_LABEL = "[stand-in reply]"
MODEL = "hyperhive-stand-in"
HEADER = re.compile(r"^--- (message|event) #(\d+) from (\S+) at (\S+) ---$", re.M)
DETAILS = re.compile(r"^\(details: (\{.*\})\)$", re.M)
PENDING = re.compile(r"\((\d+) more pending")
SESSION = str(uuid.uuid4())


def emit(event: dict) -> None:
    event.setdefault("session_id", SESSION)
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hyperhive.standin", allow_abbrev=False,
                                description="Scripted stand-in for `claude` (hyperhive).")
    p.add_argument("-p", "--print", action="store_true")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--output-format", choices=("text", "json", "stream-json"), default="text")
    p.add_argument("--model")
    p.add_argument("-c", "--continue", dest="continue_", action="store_true")
    p.add_argument("--settings")
    p.add_argument("--system-prompt-file")
    p.add_argument("--system-prompt")
    p.add_argument("--mcp-config", nargs="+", default=[])
    p.add_argument("--strict-mcp-config", action="store_true")
    p.add_argument("--setting-sources")  # it reads no settings files whatever this names
    p.add_argument("--allowedTools", "--allowed-tools", nargs="+", default=[])
    p.add_argument("--disallowedTools", "--disallowed-tools", nargs="+", default=[])
    p.add_argument("--permission-mode")
    p.add_argument("prompt", nargs="?")
    args = p.parse_args(argv)
    if not args.print:
        p.error("the stand-in runs in --print mode only")
    if args.output_format == "stream-json" and not args.verbose:
        p.error("--output-format=stream-json requires --verbose")
    return args


class McpClient:
    """One MCP server over stdio, as Claude Code starts it: ``command`` + ``args``, ``env`` over ours."""

    def __init__(self, spec: dict):
        env = {**os.environ, **(spec.get("env") or {})}
        self.proc = subprocess.Popen([spec["command"], *spec.get("args", [])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, encoding="utf-8", env=env, bufsize=1)
        self.next_id = 0
        init = self.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                           "clientInfo": {"name": "hyperhive-stand-in", "version": "1"}})
        if "error" in init:
            raise RuntimeError(init["error"]["message"])
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.tools = [t["name"] for t in self.request("tools/list", {}).get("result", {}).get("tools", [])]

    def _send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the MCP server went away")
            message = json.loads(line)
            if message.get("id") == self.next_id:
                return message

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


class Turn:
    def __init__(self, hive: McpClient, prompt: str):
        self.hive = hive
        self.prompt = prompt
        self.role = "manager" if "request_spawn" in hive.tools else "agent"
        self.name = os.environ.get("HYPERHIVE_AGENT", "this agent")
        self.done: list[str] = []
        self.agents: list[str] | None = None

    def call(self, tool: str, **args) -> tuple[bool, str]:
        use_id = f"toolu_{uuid.uuid4().hex[:24]}"
        emit({"type": "assistant", "message": {"role": "assistant", "model": MODEL, "content": [
            {"type": "tool_use", "id": use_id, "name": f"mcp__hyperhive__{tool}", "input": args}]}})
        answer = self.hive.request("tools/call", {"name": tool, "arguments": args})
        if "error" in answer:
            ok, text = False, answer["error"]["message"]
        else:
            result = answer["result"]
            ok = not result.get("isError")
            text = "\n".join(c.get("text", "") for c in result.get("content", []))
        block = {"type": "tool_result", "tool_use_id": use_id, "content": [{"type": "text", "text": text}]}
        if not ok:
            block["is_error"] = True
        emit({"type": "user", "message": {"role": "user", "content": [block]}})
        return ok, text

    def send(self, to: str, body: str) -> None:
        ok, text = self.call("send", to=to, body=body)
        self.done.append(f"wrote to {to}" if ok else f"could not write to {to}: {text}")

    def known_agents(self) -> list[str]:
        if self.agents is None:
            ok, text = self.call("list_agents")
            try:
                self.agents = [a["name"] for a in json.loads(text)["agents"]] if ok else []
            except (ValueError, KeyError, TypeError):
                self.agents = []
        return self.agents

    def handle(self, kind: str, sender: str, body: str, data: dict) -> None:
        if body.startswith(REPLY_LABEL):
            # A reply is never answered, so every exchange ends; the manager passes agents' answers on to the
            # operator (who has no harness to answer back).
            if self.role == "manager" and sender not in ("operator", "system", self.name):
                self.send("operator", f"{REPLY_LABEL} {sender} answered: {body[len(REPLY_LABEL):].strip()}")
            else:
                self.done.append(f"read {sender}'s reply")
            return
        if kind == "event":
            agent = data.get("agent")
            if self.role == "manager" and "spawn" in body.lower() and agent and agent != self.name:
                self.send(agent, f"{LABEL} Welcome to the hive, {agent}! I am the manager's scripted stand-in "
                                 "(no Claude account on this machine); write to me when you need something.")
            else:
                self.done.append(f"noted an event ({body[:60]})")
            return
        quoted = body[len(LABEL):].strip() if body.startswith(LABEL) else body
        preview = quoted if len(quoted) <= 120 else quoted[:117] + "..."
        if self.role == "manager" and sender == "operator":
            named = [a for a in self.known_agents() if a != self.name and re.search(rf"\b{re.escape(a)}\b", body)]
            for agent in named:
                self.send(agent, f"{LABEL} The operator asks you: {body}")
            if named:
                self.send("operator", f"{REPLY_LABEL} Passed your message on to {', '.join(named)}; their "
                                      "answers will come to you.")
            else:
                others = ", ".join(a for a in self.known_agents() if a != self.name) or "none yet"
                self.send("operator", f"{REPLY_LABEL} Hello! I am the manager's scripted stand-in (no Claude "
                                      f"account on this machine). Agents: {others}. Name one in your message and "
                                      "I will pass it on.")
            return
        self.send(sender, f"{REPLY_LABEL} {self.name} got your message (\u201c{preview}\u201d). I am a scripted "
                          "stand-in model: install and log in to Claude Code for real answers.")

    def run(self) -> None:
        for kind, sender, body, data in parse_messages(self.prompt):
            self.handle(kind, sender, body, data)
        pending = PENDING.search(self.prompt)
        if pending:
            ok, text = self.call("recv", max=int(pending.group(1)))
            if ok:
                for m in json.loads(text).get("messages", []):
                    self.handle(m.get("kind", "message"), m["from"], m["body"], m.get("data") or {})


def parse_messages(prompt: str) -> list[tuple[str, str, str, dict]]:
    """The messages of a wake prompt: (kind, sender, body, details)."""
    out = []
    headers = list(HEADER.finditer(prompt))
    for i, h in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(prompt)
        chunk = prompt[h.end():end].strip("\n")
        data = {}
        details = DETAILS.search(chunk)
        if details:
            try:
                data = json.loads(details.group(1))
            except ValueError:
                pass
            chunk = chunk[:details.start()]
        chunk = chunk.split("\n\nAct on this now.")[0]
        out.append((h.group(1), h.group(3), chunk.strip(), data))
    return out


def compact(prompt: str) -> str:
    """Keep the headings and the most recent lines, within half the limit the prompt names."""
    notes = prompt.split("<notes>\n", 1)[-1].rsplit("\n</notes>", 1)[0]
    limit = re.search(r"limit of (\d+) bytes", prompt)
    budget = int(limit.group(1)) // 2 if limit else max(len(notes) // 2, 1)
    lines = notes.splitlines()
    headings = [line for line in lines if line.startswith("#")][:10]
    kept: list[str] = []
    size = sum(len(h) + 1 for h in headings) + 60
    for line in reversed([line for line in lines if line.strip() and not line.startswith("#")]):
        if size + len(line) + 1 > budget:
            break
        kept.insert(0, line)
        size += len(line) + 1
    return "\n".join([*headings, f"(compacted by the stand-in model: {len(kept)} most recent line(s) kept)",
                      *kept]) + "\n"


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    prompt = args.prompt or sys.stdin.read()
    servers: dict = {}
    for source in args.mcp_config:
        config = json.loads(source) if source.lstrip().startswith("{") else json.loads(Path(source).read_text())
        servers.update(config.get("mcpServers", {}))
    emit({"type": "system", "subtype": "init", "cwd": os.getcwd(), "model": MODEL, "stand_in": True,
          "tools": [], "mcp_servers": [{"name": n, "status": "pending"} for n in servers]})
    if prompt.startswith("compact this"):
        text = compact(prompt)
        emit({"type": "assistant", "message": {"role": "assistant", "model": MODEL,
                                               "content": [{"type": "text", "text": text}]}})
        emit({"type": "result", "subtype": "success", "is_error": False, "result": text, "num_turns": 1,
              "duration_ms": int((time.time() - started) * 1000), "stand_in": True})
        return 0
    if "hyperhive" not in servers:
        print("stand-in: --mcp-config has no \"hyperhive\" server", file=sys.stderr)
        return 1
    hive = McpClient(servers["hyperhive"])
    try:
        turn = Turn(hive, prompt)
        turn.run()
    finally:
        threading.Thread(target=hive.close, daemon=True).start()
    summary = "; ".join(turn.done) or "nothing to do"
    notes = Path("notes.md")
    try:
        with notes.open("a", encoding="utf-8") as f:
            if notes.stat().st_size == 0:
                f.write(f"# Notes of {turn.name}\n\n")
            f.write(f"- {time.strftime('%Y-%m-%d %H:%M:%S')} {LABEL} {summary}\n")
    except OSError as e:
        print(f"stand-in: cannot write notes.md: {e}", file=sys.stderr)
    text = f"{LABEL} Turn done: {summary}."
    emit({"type": "assistant", "message": {"role": "assistant", "model": MODEL,
                                           "content": [{"type": "text", "text": text}]}})
    emit({"type": "result", "subtype": "success", "is_error": False, "result": text, "num_turns": 1,
          "duration_ms": int((time.time() - started) * 1000), "stand_in": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
