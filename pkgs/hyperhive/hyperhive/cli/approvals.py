"""Operator verbs for approvals, spawning, the agents' life cycle and tag retention (over host.sock)."""

from __future__ import annotations

import time

import click

from .common import echo, echo_json, host_call, host_options, one_line, safe, when

TERMINAL = ("deployed", "failed", "denied")


def _line(a: dict) -> str:
    """One approval on one line; every field the manager chose (a ref, ...) is escaped (cli.common.one_line)."""
    what = f"spawn {a['agent']}" if a["kind"] == "spawn" else f"apply {a['agent']}"
    ref = f" {a['ref']}" if a.get("ref") and a["ref"] != a.get("sha") else ""
    sha = f" {a['sha'][:12]}" if a.get("sha") else ""
    tag = f" [{a['tag']}]" if a.get("tag") else ""
    return one_line(f"#{a['id']:<4} {a['status']:<9} {what}{ref}{sha} by {a['requested_by']} at "
                    f"{when(a['created_at'])}{tag}")


def _said(a: dict) -> list[str]:
    """What the manager said about a proposal: the commit's subject, body and author, and its reason."""
    out = []
    commit = a.get("commit") or {}
    if commit:
        out.append(f"      commit: {one_line(commit.get('subject') or '(no subject)')}")
        for line in (commit.get("body") or "").split("\n"):
            out.append(safe(f"        {line}"))
        out.append(f"      author: {one_line(commit.get('author') or '?')}, {one_line(when(commit.get('date')))}")
    if a.get("reason"):
        lines = a["reason"].split("\n")
        out.append(f"      reason: {one_line(lines[0])}")
        out.extend(safe(f"        {line}") for line in lines[1:])
    elif a.get("status") == "pending":
        out.append(f"      reason: (none given by {a['requested_by']})")
    return out


@click.command("pending")
@click.option("--all", "show_all", is_flag=True, help="Every approval, not only the pending ones.")
@click.option("--status", type=click.Choice(["pending", "approved", "building", "deployed", "failed", "denied"]),
              default=None, help="Only approvals in this state.")
@click.option("--diff", "show_diff", is_flag=True, help="Show each approval's diff against what is deployed.")
@host_options
def pending(show_all, status, show_diff, config_path, as_json):
    """List pending approvals (what the manager asks to deploy or spawn)."""
    # --status narrows whatever --all widened: `--all --status denied` is the denied ones
    result = host_call(config_path, "pending", status=status or ("all" if show_all else "pending"))
    items = result["approvals"]
    if show_diff:
        items = [host_call(config_path, "approval", id=a["id"]) for a in items]
    if as_json:
        return echo_json({"approvals": items})
    if not items:
        click.echo("no approvals" if show_all or status else "nothing pending")
    for a in items:
        click.echo(_line(a))
        for line in _said(a):
            click.echo(line)
        for f in a.get("flags") or []:  # what deserves a second look, loudly, each on its one line
            click.echo(f"      !! {one_line(f['kind']).upper()}: {one_line(f['detail'])}")
        if a.get("note"):
            click.echo(f"      note: {one_line(a['note'])}")
        if a.get("error"):
            click.echo("      error: " + one_line(a["error"].strip().splitlines()[0]) if a["error"].strip() else "")
        if show_diff:
            if a.get("diff_base") and a["status"] == "pending":
                click.echo(f"      diff against {one_line(a['diff_base'][:12])} (approve {a['id']} --base "
                           f"{one_line(a['diff_base'][:12])} approves this diff)")
            echo(a.get("diff", ""))


wait_option = click.option("--wait/--no-wait", default=True, show_default=True,
                           help="Wait until the deploy is done (deployed or failed).")
timeout_option = click.option("--timeout", type=click.FloatRange(min=1), default=3600, show_default=True,
                              help="Seconds to wait for the deploy.")


def _finish(config_path, result: dict, wait: bool, timeout: float, as_json: bool) -> None:
    """Follow an approved approval to its end (unless --no-wait), print it, exit 1 when it failed."""
    deadline = time.monotonic() + timeout
    while wait and result["status"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.2)
        result = host_call(config_path, "approval", id=result["id"])
        result.pop("diff", None)
    if as_json:
        echo_json(result)
    else:
        click.echo(_line(result))
    if result["status"] == "failed":
        echo(result.get("error") or "", err=True)
        raise SystemExit(1)
    if wait and result["status"] not in TERMINAL:
        raise click.ClickException(f"approval #{result['id']} is still {result['status']} after {timeout:g}s")


@click.command("approve")
@click.argument("approval_id", metavar="ID", type=int)
@click.option("--base", default=None, metavar="SHA",
              help="The commit the diff you approve was taken against (pending --diff shows it): refused when what "
                   "is deployed changed since and the commit does not contain it. Default: what was deployed when "
                   "it was proposed.")
@wait_option
@timeout_option
@host_options
def approve(approval_id, base, wait, timeout, config_path, as_json):
    """Approve approval ID: build and deploy it."""
    _finish(config_path, host_call(config_path, "approve", id=approval_id, **({"base": base} if base else {})),
            wait, timeout, as_json)


@click.command("deny")
@click.argument("approval_id", metavar="ID", type=int)
@click.option("--note", required=True, help="Why (required, not empty): the manager reads it.")
@host_options
def deny(approval_id, note, config_path, as_json):
    """Deny approval ID with a note."""
    result = host_call(config_path, "deny", id=approval_id, note=note)
    if as_json:
        return echo_json(result)
    click.echo(_line(result))


@click.command("spawn")
@click.argument("name")
@wait_option
@timeout_option
@host_options
def spawn(name, wait, timeout, config_path, as_json):
    """Spawn a new agent NAME from the agent template (recorded as an approval and approved at once)."""
    _finish(config_path, host_call(config_path, "spawn", name=name), wait, timeout, as_json)


def _agent_verb(verb: str, op: str, doc: str):
    @click.command(verb, help=doc)
    @click.argument("name")
    @host_options
    def command(name, config_path, as_json):
        result = host_call(config_path, op, name=name)
        if as_json:
            return echo_json(result)
        extra = f" (approval #{result['approval_id']} queued)" if "approval_id" in result else ""
        click.echo(f"{result['name']}: {result['state']}{extra}")
    return command


kill = _agent_verb("kill", "kill", "Stop agent NAME.")
start = _agent_verb("start", "start", "Start agent NAME.")
restart = _agent_verb("restart", "restart", "Restart agent NAME.")
rebuild = _agent_verb("rebuild", "rebuild", "Build agent NAME's deployed config again and restart it on it.")
revive = _agent_verb("revive", "revive", "Queue the spawn of destroyed agent NAME (approve it to bring it back).")


@click.command("destroy")
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also delete its config repos and state (otherwise they are kept).")
@host_options
def destroy(name, purge, config_path, as_json):
    """Destroy spawned agent NAME; its config and state are kept as a tombstone unless --purge."""
    result = host_call(config_path, "destroy", name=name, purge=purge)
    if as_json:
        return echo_json(result)
    click.echo(f"{result['name']}: {result['state']}")


@click.command("retention")
@click.option("--dry-run", is_flag=True, help="Only list what would be dropped.")
@host_options
def retention(dry_run, config_path, as_json):
    """Drop old failed/ and denied/ tags and intermediate tags of finished approvals; keep every deployed/."""
    result = host_call(config_path, "retention", dry_run=dry_run)
    if as_json:
        return echo_json(result)
    verb = "would drop" if dry_run else "dropped"
    for t in result["dropped"]:
        click.echo(f"{verb:<10} {t['agent']:<10} {t['tag']:<16} ({t['reason']})")
    for t in result["kept"]:
        click.echo(f"{'kept':<10} {t['agent']:<10} {t['tag']}")
    click.echo(f"{len(result['kept'])} kept, {len(result['dropped'])} {verb}")


COMMANDS = [pending, approve, deny, spawn, kill, start, restart, rebuild, destroy, revive, retention]
