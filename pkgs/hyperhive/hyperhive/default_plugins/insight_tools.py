"""Built-in MCP tools of the insight ops: ``remind`` for every agent, ``get_logs`` for the manager.

A module of its own, importing only the MCP server's types, so that ``hyperhive mcp`` starts without loading the
service's plugins.
"""

from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl
def harness_tools(role):
    from ..mcp import Tool, schema

    def _remind(ctx, args):
        return ctx.call("remind", **{k: v for k, v in args.items() if v is not None})

    def _get_logs(ctx, args):
        return ctx.call("get_logs", agent=args["agent"], lines=int(args.get("lines") or 100))

    tools = [Tool(
        "remind",
        "Schedule a reminder to yourself: at its time you get an event from system with BODY (it survives "
        "restarts). Give in_seconds (from now) or at (ISO 8601 with zone, e.g. 2026-11-29T18:00:00Z).",
        schema({"body": {"type": "string", "description": "What to remind you of."},
                "in_seconds": {"type": "number", "minimum": 0, "description": "Seconds from now."},
                "at": {"type": "string", "description": "When, ISO 8601 with its zone."}}, ("body",)),
        _remind, title="Set a reminder", quick=True,
        annotations={"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False,
                     "openWorldHint": False},
        output_schema={"type": "object", "properties": {"id": {"type": "integer"}, "due_at": {"type": "string"}},
                       "required": ["id", "due_at"]})]
    if role == "manager":
        tools.append(Tool(
            "get_logs", "The last LINES lines of agent AGENT's service log (its harness and Claude Code runs).",
            schema({"agent": {"type": "string", "description": "An agent's name."},
                    "lines": {"type": "integer", "minimum": 1, "maximum": 1000,
                              "description": "How many lines (default 100)."}}, ("agent",)),
            _get_logs, frozenset({"manager"}), title="Read an agent's log", quick=True,
            annotations={"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True,
                         "openWorldHint": False},
            output_schema={"type": "object", "properties": {
                "agent": {"type": "string"}, "lines": {"type": "array", "items": {"type": "string"}},
                "cursor": {"type": ["string", "null"]}, "source": {"type": "string"}},
                "required": ["agent", "lines"]}))
    return tools
