"""Operator verbs for what the swarm costs and does: stats, turns, model, budget, reminders, logs."""

from __future__ import annotations

import math
import time

import click

from ..times import when
from .common import echo_json, host_call, host_options, one_line, safe

WINDOWS = ("24h", "7d", "30d")


def _usd(value) -> str:
    return "-" if value is None else f"${value:,.4f}"


def _tokens(totals: dict) -> int:
    return sum(totals.get(f"tokens_{f}", 0) for f in ("input", "output", "cache_read", "cache_write"))


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _secs(value) -> str:
    return "-" if value is None else f"{value:.1f}s"


@click.command("stats")
@click.argument("name", required=False)
@click.option("--window", type=click.Choice(WINDOWS), default="24h", show_default=True,
              help="How far back to look.")
@host_options
def stats(name, window, config_path, as_json):
    """Cost, tokens and turns of agent NAME, or of the whole hive, over a window."""
    r = host_call(config_path, "report", agent=name, window=window)
    if as_json:
        return echo_json(r)
    t = r["totals"]
    click.echo(f"{name or 'the hive'}, last {window} ({when(r['since'])} to {when(r['until'])})")
    click.echo(f"  cost       {_usd(t['cost_usd'])}")
    click.echo(f"  tokens     {_tokens(t):,} (input {t['tokens_input']:,}, output {t['tokens_output']:,}, "
               f"cache read {t['tokens_cache_read']:,}, cache write {t['tokens_cache_write']:,})")
    click.echo(f"  turns      {t['turns']:,} (and {_count(t['compactions'], 'compaction')}); duration p50 "
               f"{_secs(r['duration_s']['p50'])}, p95 {_secs(r['duration_s']['p95'])}")
    if r["models"]:
        click.echo(one_line("  models     " + ", ".join(f"{m} ({_count(v['turns'], 'turn')}, {_usd(v['cost_usd'])})"
                                                       for m, v in r["models"].items())))
    if r["top_tools"]:
        click.echo(one_line("  top tools  " + ", ".join(f"{x['tool']} {x['calls']}" for x in r["top_tools"])))
    if r["wakes"]:
        click.echo("  woken by   " + ", ".join(f"{k} {v}" for k, v in sorted(r["wakes"].items())))
    if r["results"]:
        click.echo("  results    " + ", ".join(f"{k} {v}" for k, v in sorted(r["results"].items())))
    for d in r["deploys"]:
        click.echo(f"  deployed   {d['agent']} {d['tag']} at {when(d['at'])}")
    busy = [b for b in r["buckets"] if b["turns"] or b["cost_usd"]]
    if busy:
        click.echo(f"  per {'hour' if r['bucket_seconds'] < 86400 else 'day'}:")
        for b in busy:
            click.echo(f"    {when(b['start'])}  {_count(b['turns'], 'turn'):>10}  {_usd(b['cost_usd']):>12}  "
                       f"{_tokens(b):>10,} tokens")


@click.command("turns")
@click.argument("name", required=False)
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@host_options
def turns(name, limit, config_path, as_json):
    """The latest turns (of agent NAME) with their model, tokens, cost and deployed tag."""
    r = host_call(config_path, "turns", agent=name, limit=limit)
    if as_json:
        return echo_json(r)
    if not r["turns"]:
        click.echo("(no turns yet)")
    for t in r["turns"]:
        tokens = sum(t["tokens"].values())
        wake = t["wake"]["kind"] or "?"
        click.echo(one_line(f"#{t['id']} {when(t['started_at'])} {t['agent']:<9} {t['kind']:<10} {t['status']:<8} "
                   f"{t['duration_s']:>7.1f}s {tokens:>9,} tok {_usd(t['cost_usd']):>10}  {t['model'] or '-'}  "
                   f"woken by {wake}  {t['deployed_tag'] or '-'}" + (f"  ({t['error']})" if t.get("error") else "")))


@click.command("model")
@click.argument("name")
@click.argument("model", required=False)
@click.option("--reset", is_flag=True, help="Go back to the model the config gives.")
@host_options
def model(name, model, reset, config_path, as_json):
    """Show agent NAME's model, or set it to MODEL from its next turn on (kept across restarts)."""
    if reset and model:
        raise click.UsageError("give MODEL or --reset, not both")
    args = {"name": name}
    if reset:
        args["reset"] = True
    elif model:
        args["model"] = model
    r = host_call(config_path, "model", **args)
    if as_json:
        return echo_json(r)
    configured = r["configured"] or "the CLI's default"
    if r["override"]:
        click.echo(f"{name}: {r['override']} (set by the operator; configured: {configured})")
    else:
        click.echo(f"{name}: {configured} (as configured)")


def _finite(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of dollars")
    return value


@click.command("budget")
@click.argument("name", required=False)
@click.option("--usd", type=click.FloatRange(min=0), callback=_finite, help="Today's limit in dollars.")
@click.option("--tokens", type=click.IntRange(min=0), help="Today's limit in tokens.")
@host_options
def budget(name, usd, tokens, config_path, as_json):
    """Set today's (UTC) budget of agent NAME, or of the whole hive; the configured one comes back tomorrow."""
    if usd is None and tokens is None:
        raise click.UsageError("give --usd and/or --tokens")
    r = host_call(config_path, "budget", agent=name, usd=usd, tokens=tokens)
    if as_json:
        return echo_json(r)
    limit = r["limit"]  # the whole limit in force now: what was not given stays as it was
    click.echo(f"{name or 'the hive'}: today's ({r['day']}) limit is now "
               + (" and ".join(x for x in (None if limit["dailyUsd"] is None else f"${limit['dailyUsd']:,.2f}",
                                           None if limit["dailyTokens"] is None else f"{limit['dailyTokens']:,} tokens")
                               if x) or "none"))


@click.command("reminders")
@click.argument("name", required=False)
@click.option("--status", type=click.Choice(["pending", "delivered", "cancelled", "all"]), default="pending",
              show_default=True)
@click.option("--cancel", "cancel_id", type=int, metavar="ID", help="Cancel pending reminder ID.")
@host_options
def reminders(name, status, cancel_id, config_path, as_json):
    """List the reminders agents set for themselves (of agent NAME), or cancel one."""
    if cancel_id is not None:
        r = host_call(config_path, "cancel_reminder", id=cancel_id)
        if as_json:
            return echo_json(r)
        return click.echo(f"cancelled reminder #{r['id']} of {r['agent']}")
    r = host_call(config_path, "reminders", agent=name, status=status)
    if as_json:
        return echo_json(r)
    if not r["reminders"]:
        click.echo(f"(no {status} reminders)" if status != "all" else "(no reminders)")
    for x in r["reminders"]:
        click.echo(one_line(f"#{x['id']} {x['agent']:<9} due {when(x['due_at'], relative=True)} [{x['status']}] "
                            f"{x['body'][:200]}"))


@click.command("logs")
@click.argument("name")
@click.option("-n", "--lines", type=click.IntRange(1, 5000), default=50, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--search", help="Only lines holding this text (case-insensitive).")
@host_options
def logs(name, lines, follow, search, config_path, as_json):
    """Agent NAME's service log (its harness and Claude Code runs)."""
    r = host_call(config_path, "logs", name=name, lines=lines, search=search)
    if as_json and not follow:
        return echo_json(r)
    for line in r["lines"]:
        click.echo(safe(line))
    cursor = r.get("cursor")
    try:
        while follow:
            time.sleep(1.0)
            r = host_call(config_path, "logs", name=name, lines=5000, cursor=cursor, search=search)
            for line in r["lines"]:
                click.echo(safe(line))
            cursor = r.get("cursor") or cursor
    except KeyboardInterrupt:
        pass


COMMANDS = [stats, turns, model, budget, reminders, logs]
