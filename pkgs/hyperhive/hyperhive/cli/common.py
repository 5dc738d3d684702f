"""What the operator verbs share: finding the host socket, calling it, printing results."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ..config import ConfigError, load_config
from ..errors import HiveError
from ..times import when
from ..transport import Client

DEFAULT_CONFIG = "/etc/hyperhive/hive.json"

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="The hive's config (hive.json or hive.toml). Default: $HYPERHIVE_CONFIG, else /etc/hyperhive/hive.json.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the raw JSON result.")


def host_options(command):
    """``--config`` and ``--json``, the options of every verb over the host socket."""
    return config_option(json_option(command))


def resolve_config_path(config_path: str | None) -> Path:
    return Path(config_path or os.environ.get("HYPERHIVE_CONFIG") or DEFAULT_CONFIG)


def host_call(config_path: str | None, op: str, **args: Any) -> Any:
    """Call ``op`` on the service's host socket, turning every failure into a clean CLI error."""
    path = resolve_config_path(config_path)
    try:
        config = load_config(path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    return socket_call(config.host_socket, op, **args)


def socket_call(socket_path, op: str, **args: Any) -> Any:
    try:
        with Client(socket_path) as client:
            return client.call(op, **args)
    except PermissionError:
        raise click.ClickException(f"permission denied on {socket_path} (the host socket is root's)") from None
    except ConnectionError as e:
        raise click.ClickException(str(e)) from None
    except HiveError as e:
        raise click.ClickException(f"{e.code}: {e.message}") from None


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def echo_messages(messages: list[dict]) -> None:
    if not messages:
        click.echo("(no messages)")
    for m in messages:
        click.echo(f"#{m['id']} {when(m['sent_at'])} {m['from']} -> {m['to']} [{m['kind']}]")
        for line in m["body"].splitlines() or [""]:
            click.echo(f"    {line}")
