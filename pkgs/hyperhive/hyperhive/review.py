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

import re
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


def _escape_char(m: re.Match) -> str:
    c = m.group(0)
    if ord(c) < 0x100:
        return f"\\x{ord(c):02x}"
    return f"\\u{{{ord(c):x}}}"


def escape_text(data: bytes) -> str:
    """Bytes as text a person sees all of: invalid UTF-8 as ``\\xNN``, control, invisible and bidi characters as
    ``\\xNN`` / ``\\u{NNNN}`` (newlines and tabs stay)."""
    text = data.decode("utf-8", "backslashreplace")
    text = _UNSAFE.sub(_escape_char, text)
    # anything else that is a format character (category Cf) is invisible too
    if any(unicodedata.category(c) == "Cf" for c in text):
        text = "".join(f"\\u{{{ord(c):x}}}" if unicodedata.category(c) == "Cf" else c for c in text)
    return text


def _is_plain_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not _UNSAFE.search(text) and not any(unicodedata.category(c) == "Cf" for c in text)


def diff(repo: git.Repo, base: str | None, sha: str) -> str:
    """The whole change from ``base`` (None: nothing) to ``sha``, every byte shown."""
    raw = repo.git.diff("--text", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", "--full-index",
                        "--stat=200", "--patch", base or EMPTY_TREE, sha, "--", stdout_as_string=False)
    return escape_text(raw)


def show(repo: git.Repo, sha: str) -> str:
    """One commit (header and diff against its first parent), every byte shown."""
    raw = repo.git.show("--text", "--no-color", "--no-ext-diff", "--no-textconv", "--no-show-signature",
                        "--first-parent", "--no-renames", "--patch", "--stat=200",
                        "--format=commit %H%nAuthor: %an <%ae>%nDate:   %aI%n%n%w(0,4,4)%B", sha,
                        stdout_as_string=False)
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
        path = escape_text(fields[i + 1])
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
    for old_mode, new_mode, old_sha, new_sha, status, path in _raw_changes(repo, base, sha):
        name = path.rsplit("/", 1)[-1]
        if SYMLINK in (old_mode, new_mode):
            if new_mode == SYMLINK:
                target = escape_text(_blob(repo, new_sha, 4096) or b"(a very long target)")
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
        if new_mode not in (SYMLINK, GITLINK, "000000"):
            data = _blob(repo, new_sha)
            if data is None:
                flags.append({"kind": "large", "path": path,
                              "detail": f"{path} is larger than {BLOB_SCAN_LIMIT >> 20} MiB"})
            elif not _is_plain_text(data):
                flags.append({"kind": "binary", "path": path,
                              "detail": f"{path} holds bytes that are not plain text (NUL, control, invisible or "
                                        "bidi characters, or invalid UTF-8): they are shown escaped"})
    # The whole tree, not only what changed: Nix builds all of it.
    listing = repo.git.ls_tree("-r", "-z", "--full-tree", sha, stdout_as_string=False)
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, raw_path = entry.partition(b"\t")
        mode, _, rest = meta.decode("ascii", "replace").partition(" ")
        obj = rest.split(" ")[-1]
        path = escape_text(raw_path)
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
