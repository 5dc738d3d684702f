"""What the operator verbs share: finding the host socket, calling it, printing results."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import click

from ..config import ConfigError, host_socket_of, load_config
from ..errors import HiveError
from ..times import when
from ..transport import Client

DEFAULT_CONFIG = "/etc/hyperhive/hive.json"

LOCAL_CONFIG = "hive.toml"

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="The hive's config (hive.json or hive.toml). Default: $HYPERHIVE_CONFIG, else ./hive.toml when there is "
         "one (as `hyperhive up` uses), else /etc/hyperhive/hive.json.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the raw JSON result.")


def host_options(command):
    """``--config`` and ``--json``, the options of every verb over the host socket."""
    return config_option(json_option(command))


def resolve_config_path(config_path: str | None) -> tuple[Path, str]:
    """The config file an operator verb uses, and how it was found: ``--config``, then ``$HYPERHIVE_CONFIG`` (set on
    purpose: a hive.toml that happens to be in the current directory does not override it), then ``./hive.toml``
    (what ``hyperhive up`` runs by default), then ``/etc/hyperhive/hive.json``."""
    if config_path:
        return Path(config_path), "--config"
    if os.environ.get("HYPERHIVE_CONFIG"):
        return Path(os.environ["HYPERHIVE_CONFIG"]), "$HYPERHIVE_CONFIG"
    if Path(LOCAL_CONFIG).is_file():
        return Path(LOCAL_CONFIG), f"./{LOCAL_CONFIG} in the current directory"
    return Path(DEFAULT_CONFIG), "the default (no --config, no ./hive.toml, no $HYPERHIVE_CONFIG)"


def host_call(config_path: str | None, op: str, **args: Any) -> Any:
    """Call ``op`` on the service's host socket, turning every failure into a clean CLI error that names the
    config file used (and how it was found)."""
    path, how = resolve_config_path(config_path)
    used = f"(config: {path}, from {how})"
    if not path.exists():
        raise click.ClickException(f"no config at {path} {used}: give --config FILE, run from the directory of "
                                   "your hive.toml, or set $HYPERHIVE_CONFIG")
    try:
        host_socket = load_config(path).host_socket
    except ConfigError as e:
        # An edit that does not validate is refused by the running service, which keeps its last good config:
        # its socket is where the file's stateDir and runDir say, and the operator keeps the hive in hand.
        host_socket = host_socket_of(path)
        if host_socket is None or not host_socket.exists():
            raise click.ClickException(f"{e}\n{used}\nFix the file; a running service is unaffected (it keeps its "
                                       "last good config)") from None
        click.echo(f"warning: {e}\n(the running service keeps its last good config; `hyperhive config check "
                   f"{path}` lists every error)", err=True)
    try:
        return socket_call(host_socket, op, **args)
    except click.ClickException as e:
        if isinstance(e, HostRefusal):
            raise
        raise click.ClickException(f"{e.message}\n{used}") from None


class HostRefusal(click.ClickException):
    """The service answered, and said no: the config was the right one, so it is not named again."""


def socket_call(socket_path, op: str | Callable[[Client], Any], **args: Any) -> Any:
    """One op on ``socket_path`` (or ``op(client)``: several on one connection), refusals as clean CLI errors."""
    try:
        with Client(socket_path) as client:
            return op(client) if callable(op) else client.call(op, **args)
    except PermissionError:
        raise click.ClickException(f"permission denied on {socket_path} (the host socket is root's)") from None
    except ConnectionError as e:
        raise click.ClickException(str(e)) from None
    except HiveError as e:
        raise HostRefusal(safe(f"{e.code}: {e.message}")) from None  # (a refusal may quote agent text)


# What agent text must not bring to the operator's terminal: C0 controls but newline and tab (ESC starts the
# sequences that move the cursor, recolour or rewrite lines; CR overwrites one), DEL, C1 controls (0x9b is CSI
# for 8-bit terminals), and the bidi controls that reorder what is shown (U+202A-202E, U+2066-2069, marks).
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE_TEXT = re.compile(f"[{_UNSAFE}]")
_UNSAFE_LINE = re.compile(f"[\\n\\t{_UNSAFE}]")
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _visible(match: re.Match) -> str:
    c = ord(match.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe(text: Any) -> str:
    """Agent text made harmless for a terminal: every control character but newline and tab is shown escaped
    (``\\x1b``, ``\\u202e``), so it cannot forge or hide a line."""
    return _UNSAFE_TEXT.sub(_visible, "" if text is None else str(text))


def one_line(text: Any) -> str:
    """Like ``safe``, and newlines and tabs escaped too: for a field printed inside one line."""
    return _UNSAFE_LINE.sub(_visible, "" if text is None else str(text))


def echo(text: Any = "", **kwargs: Any) -> None:
    click.echo(safe(text), **kwargs)


def echo_json(value: Any) -> None:
    # json.dumps escapes C0; C1 and bidi controls it leaves raw with ensure_ascii=False
    click.echo(_UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}",
                                json.dumps(value, indent=2, ensure_ascii=False)))


def echo_messages(messages: list[dict]) -> None:
    if not messages:
        click.echo("(no messages)")
    for m in messages:
        unread = " UNREAD" if m.get("read") is False else ""
        reply = f" (re #{m['in_reply_to']})" if m.get("in_reply_to") is not None else ""
        click.echo(f"#{m['id']}{unread} {one_line(when(m['sent_at']))} {one_line(m['from'])} -> {one_line(m['to'])} "
                   f"[{one_line(m['kind'])}]{one_line(reply)}")
        for line in m["body"].split("\n"):
            echo(f"    {line}")
