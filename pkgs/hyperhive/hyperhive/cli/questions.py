"""Operator verbs for questions over ``host.sock``: questions, answer, cancel."""

from __future__ import annotations

import click

from .common import echo, echo_json, host_call, host_options, one_line, when


def _echo_question(q: dict) -> None:
    head = f"#{q['id']} {one_line(when(q.get('created_at'), relative=True))} from {one_line(q.get('asker') or '?')} " \
           f"[{one_line(q.get('status'))}]"
    if q.get("expires_at") and q.get("status") == "pending":
        head += f" expires {one_line(when(q['expires_at'], relative=True))}"
    click.echo(head)
    for line in (q.get("question") or "").split("\n"):
        echo(f"    {line}")
    if q.get("options"):
        kind = "choose any of" if q.get("multi") else "options"
        click.echo(f"    {kind}: " + " | ".join(one_line(o) for o in q["options"]))
    if q.get("decode_error"):
        click.echo(f"    (stored options could not be read: {one_line(q['decode_error'])}: "
                   f"{one_line(repr(q.get('options_raw')))})")
    if q.get("answer") is not None and q.get("status") != "pending":
        click.echo(f"    answer: {one_line(q['answer'])}")


@click.command("questions")
@click.option("--status", type=click.Choice(["pending", "answered", "cancelled", "expired", "all"]),
              default="pending", show_default=True, help="Which questions to list.")
@host_options
def list_questions(status, config_path, as_json):
    """List the questions agents asked the operator."""
    result = host_call(config_path, "questions", status=status)
    if as_json:
        return echo_json(result)
    if not result["questions"]:
        click.echo(f"(no {status} questions)" if status != "all" else "(no questions)")
    for q in result["questions"]:
        _echo_question(q)


@click.command("answer")
@click.argument("question_id", metavar="ID", type=int)
@click.argument("text", nargs=-1, required=True)
@host_options
def answer(question_id, text, config_path, as_json):
    """Answer question ID with TEXT; the asking agent gets it as an event."""
    result = host_call(config_path, "answer", id=question_id, answer=" ".join(text))
    if as_json:
        return echo_json(result)
    click.echo(f"answered #{result['id']} ({one_line(result['asker'])}): {one_line(result['answer'])}")


@click.command("cancel")
@click.argument("question_id", metavar="ID", type=int, required=False)
@click.option("--all", "cancel_all", is_flag=True, help="Cancel every pending question (a flood of them).")
@click.option("--asker", default=None, help="With --all: only the questions of this agent.")
@host_options
def cancel(question_id, cancel_all, asker, config_path, as_json):
    """Cancel question ID (or, with --all, every pending one); the asking agent hears [cancelled]."""
    if cancel_all == (question_id is not None):
        raise click.UsageError("give a question ID, or --all (with --asker NAME for one agent's questions)")
    if asker is not None and not cancel_all:
        raise click.UsageError("--asker goes with --all")
    if cancel_all:
        result = host_call(config_path, "cancel_questions", asker=asker)
        if as_json:
            return echo_json(result)
        return click.echo(f"cancelled {result['cancelled']} question(s)" + (f" of {asker}" if asker else ""))
    result = host_call(config_path, "cancel", id=question_id)
    if as_json:
        return echo_json(result)
    click.echo(f"cancelled #{result['id']} ({one_line(result['asker'])})")


COMMANDS = [list_questions, answer, cancel]
