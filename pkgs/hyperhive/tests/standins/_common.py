"""Shared by the stand-in ``nix`` and ``nixos-container``: record argv, fail on demand.

HYPERHIVE_STANDIN_LOG: a file to which each call appends one JSON line {argv, cwd}.
HYPERHIVE_STANDIN_FAIL: a file of lines "PREFIX<TAB>MESSAGE"; a call whose command line (the program name and its
arguments, Nix's --extra-experimental-features left out) starts with PREFIX prints MESSAGE and exits 1, or, when
MESSAGE is "sleep:SECONDS", takes that long and then succeeds (a slow build); "sleep-after:SECONDS" waits that
long after the command did its work, before it exits (``linger``: a window in which another caller can act on what
it left behind). Read at each call, so a test can change it while the service runs.
"""

import json
import os
import sys
import time


def command_line(prog: str, argv: list[str]) -> str:
    args = list(argv)
    while "--extra-experimental-features" in args:
        i = args.index("--extra-experimental-features")
        del args[i:i + 2]
    return " ".join([prog, *args])


def _rules(prog: str, argv: list[str]):
    fail = os.environ.get("HYPERHIVE_STANDIN_FAIL")
    if not fail or not os.path.exists(fail):
        return
    line = command_line(prog, argv)
    with open(fail, encoding="utf-8") as f:
        for rule in f.read().splitlines():
            prefix, _, message = rule.partition("\t")
            if prefix and line.startswith(prefix):
                yield prefix, message


def linger(prog: str, argv: list[str]) -> None:
    """The "sleep-after:SECONDS" rules of this command line: called once the command did its work."""
    for _, message in _rules(prog, argv):
        if message.startswith("sleep-after:"):
            time.sleep(float(message[len("sleep-after:"):]))
            return


def record_and_maybe_fail(prog: str, argv: list[str]) -> None:
    log = os.environ.get("HYPERHIVE_STANDIN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": [prog, *argv], "cwd": os.getcwd()}) + "\n")
    for prefix, message in _rules(prog, argv):
        if message.startswith("sleep-after:"):
            continue
        if message.startswith("sleep:"):
            time.sleep(float(message[6:]))
            return
        sys.stderr.write((message or f"{prefix}: failed (stand-in)") + "\n")
        sys.exit(1)
