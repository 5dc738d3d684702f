"""Filesystem work under ``<stateDir>/agents``, which the manager's container writes: nothing here follows a link.

Every path is walked one component at a time from a trusted directory (``stateDir``) with ``O_NOFOLLOW`` and
``O_DIRECTORY``, and everything after that is done relative to the directory descriptor so obtained: a link the
manager plants (or swaps in while the service works) is refused, never written, chmodded or read through. Files are
written to a fresh name (``O_CREAT | O_EXCL``) and renamed over the old one; directories the service fills (a new
config repo) are built outside ``agents/`` and renamed into place.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path

from .errors import HiveError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def refused(path, why: str) -> HiveError:
    return HiveError("forbidden", f"{path} {why}; refusing to follow it (replace it with a plain directory or file)")


def open_dir(base: Path, rel: str | Path, *, create: bool = False, mode: int = 0o755) -> int:
    """A descriptor of ``base/rel`` whose every component under ``base`` is a real directory (not a link).

    ``base`` is trusted (stateDir). With ``create`` missing directories are made (``mode``). The caller closes the
    descriptor."""
    fd = os.open(base, DIR_FLAGS)
    walked = Path(base)
    try:
        for part in Path(rel).parts:
            if part in ("", ".", "..") or "/" in part:
                raise HiveError("bad_request", f"{rel} is not a plain relative path")
            walked = walked / part
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: opened below, refused if it is a link
                nxt = _open_existing_dir(fd, part, walked)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _why(fd, part, walked) from None
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_existing_dir(fd: int, part: str, walked: Path) -> int:
    try:
        return os.open(part, DIR_FLAGS, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _why(fd, part, walked) from None
        raise


def _why(fd: int, part: str, walked: Path) -> HiveError:
    try:
        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return refused(walked, "changed while it was opened")
    if stat.S_ISLNK(st.st_mode):
        return refused(walked, "is a symbolic link")
    return refused(walked, "is not a directory")


@contextmanager
def directory(base: Path, rel: str | Path, *, create: bool = False, mode: int = 0o755):
    fd = open_dir(base, rel, create=create, mode=mode)
    try:
        yield fd
    finally:
        os.close(fd)


def lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def write_file(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """``name`` in ``dir_fd`` holds ``data``: written to a fresh file and renamed over whatever was there (a link
    planted at ``name`` is replaced, not written through)."""
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def open_append(dir_fd: int, name: str, where, mode: int = 0o644) -> int:
    """A descriptor appending to the regular file ``name`` (created if missing). A link or a FIFO planted there
    is removed (never written through) and a fresh file takes its place; a directory is refused."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for _attempt in range(3):
        st = lstat(dir_fd, name)
        if st is not None and not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise refused(where, "is a directory")
            os.unlink(name, dir_fd=dir_fd)
        try:
            fd = os.open(name, flags, mode, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENXIO):
                continue  # swapped for a link or FIFO meanwhile: remove it again
            raise
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
    raise refused(where, "keeps being replaced by something other than a regular file")


def read_regular(dir_fd: int, name: str, where, limit: int) -> bytes:
    """The bytes of the regular file ``name`` (at most ``limit``); a link, FIFO or device is refused."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise refused(where, "is a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refused(where, "is not a regular file")
        if st.st_size > limit:
            raise HiveError("too_large", f"{where} is {st.st_size} bytes (more than {limit})")
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise HiveError("too_large", f"{where} grew past {limit} bytes while it was read")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def place(src: Path, dir_fd: int, name: str, where) -> None:
    """Move the directory ``src`` (built by the service elsewhere on the same filesystem) to ``name`` in
    ``dir_fd``, which must not exist (a link or file there is refused, never followed)."""
    if lstat(dir_fd, name) is not None:
        raise HiveError("conflict", f"{where} exists already")
    try:
        os.rename(src, name, dst_dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
            raise HiveError("conflict", f"{where} appeared while it was being created") from None
        raise


def move_aside(dir_fd: int, name: str, new_name: str) -> None:
    """Rename ``name`` (whatever it is; a link is renamed, not followed) to ``new_name`` in the same directory."""
    os.rename(name, new_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
