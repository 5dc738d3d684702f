"""Operator questions over the sockets: ``ask_operator`` for everyone, ``questions``/``answer``/``cancel`` for
the operator on host.sock; and the thread that expires questions whose TTL lapsed."""

from __future__ import annotations

from .. import insight, questions
from .. import store as db
from ..broker import ROLES_ALL, ROLES_OPERATOR, Op, arg, no_extra_args
from ..errors import bad_request
from ..hookspecs import hookimpl

EXTENSION = "questions_expiry"


def ask_operator(hive, who, args):
    no_extra_args(args, ("question", "options", "multi", "ttl_seconds"))
    qid = questions.ask(
        hive, who.name, arg(args, "question", str),
        options=arg(args, "options", list, None, nullable=True),
        multi=arg(args, "multi", bool, False),
        ttl_seconds=arg(args, "ttl_seconds", (int, float), None, nullable=True))
    return {"id": qid}


def list_questions(hive, who, args):
    no_extra_args(args, ("status", "limit"))
    status = arg(args, "status", str, "pending")
    limit = arg(args, "limit", int, 1000)
    if not 1 <= limit <= 10000:
        raise bad_request('"limit" must be from 1 to 10000')
    return {"questions": questions.list_questions(hive, status, limit)}


def answer(hive, who, args):
    no_extra_args(args, ("id", "answer"))
    return questions.answer(hive, arg(args, "id", int), arg(args, "answer", (str, list)))


def cancel(hive, who, args):
    no_extra_args(args, ("id",))
    return questions.cancel(hive, arg(args, "id", int))


def cancel_questions(hive, who, args):
    no_extra_args(args, ("asker",))
    asker = arg(args, "asker", str, None, nullable=True)
    if asker is not None:
        insight.check_agent(hive, asker, db.questions.c.asker)
    ids = questions.cancel_all(hive, asker)
    return {"cancelled": len(ids), "ids": ids}


@hookimpl
def broker_ops(hive):
    return {
        "ask_operator": Op(ask_operator, ROLES_ALL, "ask the operator a question; the answer comes as an event"),
        "questions": Op(list_questions, ROLES_OPERATOR, "operator questions (pending by default)"),
        "answer": Op(answer, ROLES_OPERATOR, "answer an operator question"),
        "cancel": Op(cancel, ROLES_OPERATOR, "cancel an operator question"),
        "cancel_questions": Op(cancel_questions, ROLES_OPERATOR,
                               "cancel every pending question (only one asker's with asker)"),
    }


@hookimpl
def hive_started(hive):
    # Questions that lapsed while the service was down expire at once; later ones when they are due.
    hive.extensions[EXTENSION] = questions.expiry_thread(hive).start()


@hookimpl
def hive_stopping(hive):
    expiry = hive.extensions.pop(EXTENSION, None)
    if expiry is not None:
        expiry.stop()
