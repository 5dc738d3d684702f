"""An agent's service log, for the operator (`hyperhive logs`, the agent's page) and the manager (`get_logs`).

Under the ``local`` backend the harness writes to ``<stateDir>/agents/<n>/agent.log``; that directory is the
manager's to write, so the file is opened without following a link and read only when it is a regular file.
A cursor is the byte offset after the last line returned, so a follower asks for what came since.

Under ``nixos-container`` the log is the container's journal, unit ``hive-agent.service``. nixpkgs'
nixos/modules/virtualisation/nixos-containers.nix starts every non-ephemeral container with
``--link-journal=try-guest`` and keeps its root at ``/var/lib/nixos-containers/<c>`` (``stateDirectory``;
``/var/lib/containers`` on a host whose system.stateVersion predates 22.05, which the host module passes on as
``HYPERHIVE_NIXOS_CONTAINERS_STATE_DIR``), so the journal files lie under ``<root>/var/log/journal`` on the host and
``journalctl --directory`` reads them whether the container runs or not; the cursor there is journald's own.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

from .errors import HiveError, bad_request

MAX_LINES = 5000
MAX_LINE_CHARS = 4000
MAX_READ_BYTES = 8 * 1024 * 1024
CONTAINER_ROOTS = Path("/var/lib/nixos-containers")


def container_roots() -> Path:
    return Path(os.environ.get("HYPERHIVE_NIXOS_CONTAINERS_STATE_DIR") or CONTAINER_ROOTS)


def _check(lines, cursor, search) -> tuple[int, str | None]:
    if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= MAX_LINES:
        raise bad_request(f'"lines" must be a whole number from 1 to {MAX_LINES}')
    if search is not None and (not isinstance(search, str) or len(search) > 200):
        raise bad_request('"search" must be a string of at most 200 characters')
    if cursor is not None and (not isinstance(cursor, str) or len(cursor) > 500):
        raise bad_request('"cursor" must be the string a previous call returned')
    return lines, search or None


def _clean(line: str) -> str:
    line = line.rstrip("\r\n")
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "…"


def read_file_log(path: Path, lines: int = 200, cursor: str | None = None, search: str | None = None,
                  dir_fd: int | None = None) -> dict:
    """The last ``lines`` lines of a log file (those after ``cursor`` when given), never through a link. With
    ``dir_fd`` (a descriptor of the directory, opened without following links) the file is opened relative to it,
    so no component of the path can be swapped for a link between a check and the open."""
    lines, search = _check(lines, cursor, search)
    try:
        fd = os.open(path.name if dir_fd is not None else path,
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return {"lines": [], "cursor": "0", "source": str(path), "note": "no log yet"}
    except OSError as e:
        raise HiveError("forbidden", f"the log at {path} is not a plain file ({e.strerror}); it is not read") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise HiveError("forbidden", f"the log at {path} is not a regular file; it is not read")
        size = info.st_size
        start = None
        if cursor is not None:
            try:
                start = int(cursor)
            except ValueError:
                raise bad_request('"cursor" must be the string a previous call returned') from None
            if not 0 <= start <= size:
                start = 0  # the file was truncated or replaced: read it afresh
        begin = max(0, size - MAX_READ_BYTES) if start is None else max(start, size - MAX_READ_BYTES)
        f.seek(begin)
        data = f.read(size - begin)
    text = data.decode("utf-8", errors="replace")
    found = text.split("\n")
    end = size
    if found and found[-1] != "":  # a line still being written: leave it for the next call
        end -= len(found[-1].encode("utf-8", errors="replace"))
    found = found[:-1]
    if begin > 0 and start is None and found:
        found = found[1:]  # the first line read may be cut
    if search:
        needle = search.lower()
        found = [line for line in found if needle in line.lower()]
    return {"lines": [_clean(line) for line in found[-lines:]], "cursor": str(max(end, begin)),
            "source": str(path)}


def read_journal(container: str, lines: int = 200, cursor: str | None = None, search: str | None = None,
                 root: Path | None = None) -> dict:
    lines, search = _check(lines, cursor, search)
    directory = (root or container_roots()) / container / "var" / "log" / "journal"
    cmd = ["journalctl", f"--directory={directory}", "--unit=hive-agent.service", "--no-pager", "--output=json",
           "--output-fields=MESSAGE,__REALTIME_TIMESTAMP", "--show-cursor"]
    cmd += [f"--after-cursor={cursor}"] if cursor else [f"--lines={lines}"]
    if search:
        cmd += [f"--grep={re.escape(search)}", "--case-sensitive=false"]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HiveError("internal", f"journalctl failed for {container}: {e}") from None
    out, next_cursor = [], cursor
    for raw in result.stdout.splitlines():
        if raw.startswith("-- cursor: "):
            next_cursor = raw[len("-- cursor: "):].strip()
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald gives non-UTF-8 messages as byte arrays
            message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode("utf-8", "replace")
        out.append(_clean(str(message or "")))
    if result.returncode not in (0, 1) and not out:
        raise HiveError("internal", f"journalctl failed for {container}: {result.stderr.strip()[-500:]}")
    return {"lines": out[-lines:], "cursor": next_cursor, "source": f"journal of {container}"}
