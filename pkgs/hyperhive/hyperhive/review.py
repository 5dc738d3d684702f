"""What the operator reviews before approving: a diff that shows every byte that will be built, and loud flags.

Git can be talked into hiding a change: a NUL byte makes a file "binary" ("Binary files differ"), a ``-diff`` or
``diff=<driver>`` attribute in a ``.gitattributes`` does the same or runs a textconv, and a symlink or a mode change
is one easy-to-miss line. So the diff is always taken with ``--text --no-textconv --no-ext-diff`` and no
attributes at all (see ``repos.GIT_ENV``), every byte that is not printable text is shown escaped (``\\x00``,
``\\u{202e}``), and what deserves a second look — symlinks, mode changes, attribute and submodule files, content
that is not plain text — is listed as flags on the approval (card, page, ``hyperhive pending``).

A proposal whose build input would differ from what the diff shows is refused outright: a gitlink (a submodule
commit, which Nix's git fetcher leaves out or fetches from elsewhere) and a ``.gitattributes`` naming an attribute
that changes content on export or checkout (``export-subst``, ``export-ignore``, ``filter``, ``ident``, ``text``,
``eol``, ``crlf``, ``working-tree-encoding``).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
import unicodedata

import git

from .errors import bad_request

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
SYMLINK, GITLINK = "120000", "160000"
CONTENT_ATTRIBUTES = ("export-subst", "export-ignore", "filter", "ident", "text", "eol", "crlf",
                      "working-tree-encoding")
BLOB_SCAN_LIMIT = 8 * 1024 * 1024
# A .gitattributes is read whole or refused: git reads up to 100 MiB of it (attr.c ATTR_MAX_FILE_SIZE), so a
# file cut short here would hide the lines after the cut.
ATTRIBUTES_LIMIT = 1 << 20
# git's attr.c splits a .gitattributes on \n only and separates a pattern from its attributes with any of
# blank[] = " \t\r\n" (so "a\rexport-ignore" sets export-ignore on a); it also stops reading at a NUL. Any other
# control character is read differently by git and by a person or a parser, so a file holding one is refused.
_ATTRIBUTES_BLANK = re.compile(rb"[ \t\r]+")
_ATTRIBUTES_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e"
                     r"\u2060-\u206f\u3164\ufeff\ufff0-\ufffb\U000e0000-\U000e007f]")


@functools.lru_cache(maxsize=4096)
def _escape_of(c: str) -> str | None:
    """How escape_text shows the character ``c``: every character _UNSAFE matches and every other format character
    (category Cf) as an escape; None for one shown as it is."""
    if _UNSAFE.match(c) or unicodedata.category(c) == "Cf":
        cp = ord(c)
        return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{{{cp:x}}}"
    return None


def escape_text(data: bytes) -> str:
    """Bytes as text a person sees all of: invalid UTF-8 as ``\\xNN``, control, invisible and bidi characters as
    ``\\xNN`` / ``\\u{NNNN}`` (newlines and tabs stay).

    One str.translate (in C) with a table of the distinct characters the text holds: a per-match re.sub callback
    took 30 s and 1.3 GB for 16 MiB of NULs, and a table of all of Unicode took 0.8 s to build."""
    text = data.decode("utf-8", "backslashreplace")
    table = {ord(c): e for c in set(text) if (e := _escape_of(c)) is not None}
    return text.translate(table) if table else text


def escape_name(data: bytes) -> str:
    """A path or a symlink's target as one line: like escape_text, and a newline or a tab shown as ``\\n`` /
    ``\\t`` too (a flag or a listing prints it inside a line; a raw newline there starts a line of its own that
    the manager wrote, e.g. a forged "reason:" under the flags of `hyperhive pending`)."""
    return escape_text(data).replace("\n", "\\n").replace("\t", "\\t")


def _is_plain_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(_escape_of(c) for c in set(text))  # nothing escape_text would escape


# A diff is read from git up to DIFF_LIMIT bytes and no further (a 64 MiB blob of zeros, 376 KB packed, made a
# 5 GB service): past it git is stopped and the text says where it was cut. A blob over BLOB_SCAN_LIMIT, or past
# DIFF_LIMIT of changed blobs, is never diffed at all (flagged "large"): it is left out of git's diff by an exclude
# pathspec and named in one line.
DIFF_LIMIT = 16 * 1024 * 1024


def _run_bounded(repo: git.Repo, args: list[str], limit: int = DIFF_LIMIT) -> tuple[bytes, bool]:
    """``git <args>``'s output up to ``limit`` bytes (git is killed past it), cut at a line's end, and whether it
    was cut."""
    env = {**os.environ, **repo.git.environment(), "GIT_DIR": repo.git_dir}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, env=env, cwd=repo.git_dir)
        try:
            raw = proc.stdout.read(limit + 1)
        finally:
            proc.kill()
            proc.stdout.close()
            code = proc.wait()
        if len(raw) > limit:
            return raw[:raw.rfind(b"\n", 0, limit) + 1 or limit], True
        if code != 0:
            err.seek(0)
            raise git.GitCommandError(["git", *args], code, err.read(4096))
        return raw, False


def _git_bounded(repo: git.Repo, args: list[str], limit: int = DIFF_LIMIT) -> bytes:
    """``git <args>``'s output up to ``limit`` bytes (git is killed past it), with a line saying it was cut."""
    raw, cut = _run_bounded(repo, args, limit)
    if cut:
        raw += (f"\n(the diff is cut here: git's output is longer than {limit >> 20} MiB; the flags "
                "list what is large or binary)\n").encode()
    return raw


def _sizes(repo: git.Repo, tree: str | None) -> dict[bytes, tuple[str, int]]:
    """Raw path to (blob, size) of every blob in ``tree`` (``ls-tree -l``: one git run, no blob read)."""
    sizes = {}
    listing = repo.git.ls_tree("-r", "-l", "-z", "--full-tree", tree, stdout_as_string=False) if tree else b""
    for entry in listing.split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        fields = meta.split()
        if len(fields) == 4 and fields[1] == b"blob" and fields[3].isdigit():
            sizes[path] = (fields[2].decode("ascii"), int(fields[3]))
    return sizes


def _large_blobs(repo: git.Repo, base: str | None, sha: str) \
        -> tuple[list[tuple[bytes, str, int]], list[bytes], list[bytes]]:
    """(raw path, blob, size) of every changed path the diff names instead of showing: a blob over BLOB_SCAN_LIMIT
    on either side, and any whose blobs would take what is shown past DIFF_LIMIT (git diffs every file for --stat
    before it writes a byte, so the output cap alone would not bound its work); the changed paths that lie under
    one of those (a file on one side, a directory on the other: agent.nix made agent.nix/default.nix), which a
    pathspec excluding ``P`` would leave out with it, so they are diffed apart; and every changed path."""
    changed = [p for p in repo.git.diff_tree("-r", "-z", "--no-renames", "--name-only", base or EMPTY_TREE, sha,
                                             stdout_as_string=False).split(b"\0") if p]
    new, old = _sizes(repo, sha), _sizes(repo, base)
    large, total = [], 0
    for path in changed:
        sides = [s[path] for s in (new, old) if path in s]
        if not sides:
            continue
        size = sum(n for _, n in sides)
        if max(n for _, n in sides) > BLOB_SCAN_LIMIT or total + size > DIFF_LIMIT:
            large.append((path, *max(sides, key=lambda side: side[1])))
        else:
            total += size
    named = {path for path, _, _ in large}
    apart = [path for path in changed if path not in named
             and any(path[:i] in named for i in range(len(path)) if path[i:i + 1] == b"/")]
    return large, apart, changed


_DIFF = ["diff", "--text", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", "--full-index",
         "--stat=200", "--patch"]
_SECTION = re.compile(rb"^diff --git (.*)$", re.M)  # (a line of content starts with "+", "-" or " ")
_C_ESCAPES = {ord("a"): 7, ord("b"): 8, ord("t"): 9, ord("n"): 10, ord("v"): 11, ord("f"): 12, ord("r"): 13,
              ord('"'): 34, ord("\\"): 92}


def _section_path(rest: bytes) -> bytes:
    """The path of a ``diff --git a/P b/P`` line (the same P twice without renames; C-quoted when git quotes it)."""
    if not rest.startswith(b'"'):
        return rest[2:2 + (len(rest) - 5) // 2]
    out, i = bytearray(), 1
    while i < len(rest) and rest[i] != ord('"'):
        if rest[i] == ord("\\") and i + 1 < len(rest):
            if rest[i + 1] in _C_ESCAPES:
                out.append(_C_ESCAPES[rest[i + 1]])
                i += 2
                continue
            if rest[i + 1:i + 4].isdigit():
                out.append(int(rest[i + 1:i + 4], 8) & 0xFF)
                i += 4
                continue
        out.append(rest[i])
        i += 1
    return bytes(out[2:])


def _shown(repo: git.Repo, base: str | None, sha: str) -> tuple[bytes, list[tuple[bytes, str, int]], list[bytes]]:
    """(git's diff as shown, what is named instead of shown, what the cut at DIFF_LIMIT left out). Past the cut,
    a file's section is dropped whole, and the files it left out are named too: 14 MiB of empty lines (28 MiB of
    "+" lines) cut a small agent.nix off after them, named by nothing but the --stat."""
    large, apart, changed = _large_blobs(repo, base, sha)
    named = {path for path, _, _ in large}
    runs = []
    if apart:  # first: their sizes were counted within DIFF_LIMIT, and the rest may be cut
        runs.append((apart, [f":(literal){os.fsdecode(path)}" for path in apart]))
    runs.append(([p for p in changed if p not in named and p not in apart],
                 [f":(exclude,literal){os.fsdecode(path)}" for path, _, _ in large]))
    shown, left_out, budget = [], [], DIFF_LIMIT
    for paths, pathspecs in runs:
        raw, cut = _run_bounded(repo, [*_DIFF, base or EMPTY_TREE, sha, "--", *pathspecs], max(0, budget))
        if cut:
            sections = [(m.start(), _section_path(m.group(1))) for m in _SECTION.finditer(raw)]
            complete = {p for _, p in sections[:-1]} - {p for _, p in sections[-1:]}
            left_out += [p for p in paths if p not in complete]
            if sections:
                raw = raw[:sections[-1][0]]
        budget -= len(raw)
        shown.append(raw)
    return b"\n".join(r for r in shown if r), large, left_out


def diff(repo: git.Repo, base: str | None, sha: str) -> str:
    """The change from ``base`` (None: nothing) to ``sha``, every byte shown, except that what _large_blobs picks
    is named with its size instead, and what does not fit DIFF_LIMIT is named at the top."""
    raw, large, left_out = _shown(repo, base, sha)
    # (a newline in a path would otherwise start a line of its own)
    head = "".join("binary/large: " + escape_name(path)
                   + f": {size} bytes (blob {obj}), not shown inline\n" for path, obj, size in large)
    head += "".join(f"not shown: {escape_name(path)}: past the {DIFF_LIMIT >> 20} MiB the diff is cut at (the repo "
                    "browser shows the file)\n" for path in left_out)
    tail = (f"\n(the diff is cut here: git's output is longer than {DIFF_LIMIT >> 20} MiB; what it leaves out is "
            "named at the top and flagged)\n") if left_out else ""
    return head + escape_text(raw) + tail


def show(repo: git.Repo, sha: str) -> str:
    """One commit (header and diff against its first parent), every byte shown (cut at DIFF_LIMIT)."""
    raw = _git_bounded(repo, ["show", "--text", "--no-color", "--no-ext-diff", "--no-textconv",
                              "--no-show-signature", "--first-parent", "--no-renames", "--patch", "--stat=200",
                              "--format=commit %H%nAuthor: %an <%ae>%nDate:   %aI%n%n%w(0,4,4)%B", sha])
    return escape_text(raw)


def _raw_changes(repo: git.Repo, base: str | None, sha: str) -> list[tuple[str, str, str, str, str, str]]:
    """(old mode, new mode, old blob, new blob, status, path) of every changed path."""
    out = repo.git.diff_tree("-r", "-z", "--no-renames", "--no-abbrev", "--raw", base or EMPTY_TREE, sha,
                             stdout_as_string=False)
    fields = out.split(b"\0")
    changes = []
    i = 0
    while i + 1 < len(fields):
        meta = fields[i].decode("ascii", "replace")
        if not meta.startswith(":"):
            i += 1
            continue
        old_mode, new_mode, old_sha, new_sha, status = meta[1:].split(" ")[:5]
        path = escape_name(fields[i + 1])
        changes.append((old_mode, new_mode, old_sha, new_sha, status, path))
        i += 2
    return changes


def _blob(repo: git.Repo, sha: str, limit: int = BLOB_SCAN_LIMIT) -> bytes | None:
    size = int(repo.git.cat_file("-s", sha))
    if size > limit:
        return None
    return repo.git.cat_file("blob", sha, stdout_as_string=False)


def _attribute_names(data: bytes) -> list[str]:
    """Every attribute a .gitattributes names, split as git's attr.c splits it (lines on \n, fields on space, tab
    and \r): not str.splitlines(), which also ends a line at \r, \v, \f, \x1c-\x1e, \x85 and \u2028."""
    names = []
    for line in data.split(b"\n"):
        tokens = [t for t in _ATTRIBUTES_BLANK.split(line) if t]
        if not tokens or tokens[0].startswith(b"#"):
            continue
        for token in tokens[1:]:
            names.append(token.lstrip(b"-!").split(b"=", 1)[0].decode("utf-8", "replace").lower())
    return names


def inspect(repo: git.Repo, base: str | None, sha: str) -> tuple[list[dict], list[str]]:
    """(flags, refusals) of the change from ``base`` to ``sha``.

    A flag is ``{kind, path, detail}`` with kind ``symlink | mode | gitlink | attributes | submodules | binary |
    large``; a refusal is a sentence saying why the proposal cannot be deployed as shown."""
    flags: list[dict] = []
    refusals: list[str] = []
    # what the diff names instead of showing is flagged large, and not read here either (nor is its text checked)
    _raw, large, left_out = _shown(repo, base, sha)
    summarised = {escape_name(p): size for p, _obj, size in large}
    for old_mode, new_mode, old_sha, new_sha, status, path in _raw_changes(repo, base, sha):
        name = path.rsplit("/", 1)[-1]
        if SYMLINK in (old_mode, new_mode):
            if new_mode == SYMLINK:
                target = escape_name(_blob(repo, new_sha, 4096) or b"(a very long target)")
                flags.append({"kind": "symlink", "path": path,
                              "detail": f"{path} is a symbolic link to {target}"
                              + (" (it was a file)" if old_mode not in ("000000", SYMLINK) else "")})
            else:
                flags.append({"kind": "symlink", "path": path,
                              "detail": f"{path} was a symbolic link" + ("" if status == "D" else
                                                                         " and is now a file")})
        elif GITLINK in (old_mode, new_mode):
            pass  # refused below when it is in the tree
        elif old_mode != new_mode and "000000" not in (old_mode, new_mode):
            flags.append({"kind": "mode", "path": path, "detail": f"{path}: mode {old_mode} -> {new_mode}"})
        elif new_mode == "100755" and old_mode == "000000":
            flags.append({"kind": "mode", "path": path, "detail": f"{path} is new and executable (100755)"})
        if name in (".gitattributes", ".gitmodules") and status != "D":
            kind = "attributes" if name == ".gitattributes" else "submodules"
            flags.append({"kind": kind, "path": path, "detail": f"{path} changes how git treats this repo"})
        if new_mode not in (SYMLINK, GITLINK, "000000") and path not in summarised:
            data = _blob(repo, new_sha)
            if data is None:
                flags.append({"kind": "large", "path": path,
                              "detail": f"{path} is larger than {BLOB_SCAN_LIMIT >> 20} MiB"})
            elif not _is_plain_text(data):
                flags.append({"kind": "binary", "path": path,
                              "detail": f"{path} holds bytes that are not plain text (NUL, control, invisible or "
                                        "bidi characters, or invalid UTF-8): they are shown escaped"})
    for raw_path in left_out:
        path = escape_name(raw_path)
        flags.append({"kind": "large", "path": path, "detail": f"{path} is not shown in the diff: it comes past the "
                                                               f"{DIFF_LIMIT >> 20} MiB the diff is cut at"})
    for path, size in summarised.items():
        flags.append({"kind": "large", "path": path, "detail": (
            f"{path} is larger than {BLOB_SCAN_LIMIT >> 20} MiB ({size} bytes): the diff names it, not shows it"
            if size > BLOB_SCAN_LIMIT else f"{path} ({size} bytes) is not shown in the diff: the changed files add "
                                           f"up to more than {DIFF_LIMIT >> 20} MiB")})
    # The whole tree, not only what changed: Nix builds all of it.
    listing = repo.git.ls_tree("-r", "-z", "--full-tree", sha, stdout_as_string=False)
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, raw_path = entry.partition(b"\t")
        mode, _, rest = meta.decode("ascii", "replace").partition(" ")
        obj = rest.split(" ")[-1]
        path = escape_name(raw_path)
        name = path.rsplit("/", 1)[-1]
        if mode == GITLINK:
            refusals.append(f"{path} is a submodule (gitlink {obj[:12]}): Nix would build it from somewhere "
                            "the diff does not show; commit its files instead")
        elif name == ".gitattributes" and mode != SYMLINK:
            data = _blob(repo, obj, ATTRIBUTES_LIMIT)
            bad = sorted({a for a in _attribute_names(data or b"") if a in CONTENT_ATTRIBUTES})
            if data is None:
                refusals.append(f"{path} is larger than {ATTRIBUTES_LIMIT >> 20} MiB: it cannot be checked whole "
                                "for attributes that change what is built; keep it small")
            elif _ATTRIBUTES_CONTROL.search(data):
                refusals.append(f"{path} holds control characters (NUL, carriage return or others) that git reads "
                                "differently from how the diff shows them; keep it plain text with \\n line ends")
            elif bad:
                refusals.append(f"{path} sets {', '.join(bad)}: git would export or check out content that the "
                                "diff does not show; remove those attributes")
            elif not any(f["path"] == path and f["kind"] == "attributes" for f in flags):
                flags.append({"kind": "attributes", "path": path,
                              "detail": f"{path} is in the tree (attributes are ignored by the diff)"})
        elif name == ".gitattributes":
            refusals.append(f"{path} is a symbolic link; attribute files must be plain files")
    return flags, refusals


def check(repo: git.Repo, base: str | None, sha: str, what: str) -> list[dict]:
    """The flags of a proposal, or a bad_request naming every reason it cannot be deployed as shown."""
    flags, refusals = inspect(repo, base, sha)
    if refusals:
        raise bad_request(f"{what} is refused: " + "; ".join(refusals))
    return flags


def summary(flags: list[dict]) -> str:
    kinds = []
    for f in flags:
        if f["kind"] not in kinds:
            kinds.append(f["kind"])
    return ", ".join(kinds)
