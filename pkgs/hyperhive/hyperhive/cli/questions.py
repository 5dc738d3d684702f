"""Operator verbs for questions over ``host.sock``: questions, answer, cancel."""

from __future__ import annotations

import click

from .common import echo_json, host_call, host_options


def _echo_question(q: dict) -> None:
    head = f"#{q['id']} {q.get('created_at') or '?'} from {q.get('asker') or '?'} [{q.get('status')}]"
    if q.get("expires_at") and q.get("status") == "pending":
        head += f" expires {q['expires_at']}"
    click.echo(head)
    for line in (q.get("question") or "").splitlines() or [""]:
        click.echo(f"    {line}")
    if q.get("options"):
        kind = "choose any of" if q.get("multi") else "options"
        click.echo(f"    {kind}: " + " | ".join(q["options"]))
    if q.get("decode_error"):
        click.echo(f"    (stored options could not be read: {q['decode_error']}: {q.get('options_raw')!r})")
    if q.get("answer") is not None and q.get("status") != "pending":
        click.echo(f"    answer: {q['answer']}")


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
    click.echo(f"answered #{result['id']} ({result['asker']}): {result['answer']}")


@click.command("cancel")
@click.argument("question_id", metavar="ID", type=int)
@host_options
def cancel(question_id, config_path, as_json):
    """Cancel question ID; the asking agent hears [cancelled]."""
    result = host_call(config_path, "cancel", id=question_id)
    if as_json:
        return echo_json(result)
    click.echo(f"cancelled #{result['id']} ({result['asker']})")


COMMANDS = [list_questions, answer, cancel]
