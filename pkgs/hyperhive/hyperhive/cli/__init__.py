"""The ``hyperhive`` command line. Each concern has its verbs in its own module here (``COMMANDS = [...]``)."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

COMMAND_MODULES = ("service", "operator", "client", "questions", "approvals", "agent", "insight")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="hyperhive")
def main(verbose: int) -> None:
    """hyperhive: a contained, reviewable swarm of Claude Code agents.

    Operator verbs (list, send, inbox, ...) talk to the running service over its host socket, found from
    --config FILE, else $HYPERHIVE_CONFIG, else ./hive.toml (as `hyperhive up` uses), else
    /etc/hyperhive/hive.json.
    """
    _note_executable()
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    if os.environ.get("HYPERHIVE_LOG"):
        level = getattr(logging, os.environ["HYPERHIVE_LOG"].upper(), level)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _note_executable() -> None:
    """Tell the processes this one starts which ``hyperhive`` executable it is ($HYPERHIVE_EXECUTABLE): the
    manager's harness names it in the Bash rule for ``hyperhive git``. Found from the running script (a console
    script, or the wrapped one of a Nix build, beside its ``hyperhive`` wrapper); ``python -m hyperhive`` names
    none."""
    if os.environ.get("HYPERHIVE_EXECUTABLE"):
        return
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if not script:
        return
    candidate = os.path.join(os.path.dirname(os.path.abspath(script)), "hyperhive")
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        os.environ["HYPERHIVE_EXECUTABLE"] = candidate


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(f"{__name__}.{_name}").COMMANDS:
        main.add_command(_command)
