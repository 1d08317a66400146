"""Opening uwcache's files without trusting what another local user may have put in their way.

The rules (docs/caveats.md, "Security"):

* a namespace directory is used only if it is a real directory (not a link), owned by the
  effective uid, with mode 0700; it is created that way;
* the directory it lives in (``/dev/shm``, ``$UWCACHE_SHM_DIR``) and the directory of a store
  file must not be writable by other users unless it is sticky (like ``/tmp``), and must be
  owned by us or root;
* every file is opened relative to its directory's descriptor with ``O_NOFOLLOW`` (a link is
  refused, never followed) and checked with ``fstat``: a regular file owned by us.

Every refusal is a :class:`~uwcache.errors.CacheError` that names the path and its owner.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Optional

from .errors import CacheError

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def owner_name(uid: int) -> str:
    """``name (uid N)`` for messages; just the uid when it has no passwd entry."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _who(path: str, dir_fd: Optional[int] = None) -> str:
    try:
        st = os.lstat(path, dir_fd=dir_fd) if dir_fd is not None else os.lstat(path)
    except OSError:
        return "unknown owner"
    return f"owned by {owner_name(st.st_uid)}"


def check_shared_parent(fd: int, path: str, what: str) -> None:
    """A directory we create files in: owned by us or root, and not writable by others unless sticky."""
    st = os.fstat(fd)
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise CacheError(f"refusing {what} {path}: it is owned by {owner_name(st.st_uid)}, "
                         f"not by {owner_name(me)} or root, who could replace the files in it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise CacheError(f"refusing {what} {path}: other users can write to it (mode {stat.S_IMODE(st.st_mode):04o}, "
                         "not sticky), so they could replace the files in it; use a directory only you can write to")


def open_dir(path: str, what: str) -> int:
    """A descriptor on an existing directory that may hold our files (see check_shared_parent)."""
    try:
        fd = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except OSError as exc:
        raise CacheError(f"cannot open {what} {path}: {exc.strerror}") from exc
    try:
        check_shared_parent(fd, path, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_dir(parent_fd: int, parent: str, name: str, *, create: bool) -> Optional[int]:
    """A descriptor on ``parent/name``, a directory that must be ours with mode 0700.

    Created (mode 0700) when missing and ``create``; None when missing and not ``create``.
    A link, a file, or a directory of another owner or mode is refused, never used.
    """
    path = os.path.join(parent, name)
    made = False
    if create:
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            made = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise CacheError(f"cannot create the namespace directory {path}: {exc.strerror}") from exc
    try:
        fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=parent_fd)
    except FileNotFoundError:
        if create:
            raise CacheError(f"the namespace directory {path} vanished while it was being opened") from None
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                is_link = stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode)
            except OSError:
                is_link = exc.errno == errno.ELOOP
            kind = "a symbolic link" if is_link else "not a directory"
            raise CacheError(f"refusing the namespace directory {path}: it is {kind} ({_who(name, parent_fd)}); "
                             "remove it, it was not made by uwcache") from None
        raise CacheError(f"cannot open the namespace directory {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        me = os.geteuid()
        if made and stat.S_IMODE(st.st_mode) != 0o700 and st.st_uid == me:
            os.fchmod(fd, 0o700)  # a umask may have taken bits away; never adds any
            st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != me:
            raise CacheError(f"refusing the namespace directory {path}: it is owned by {owner_name(st.st_uid)}, "
                             f"not by {owner_name(me)}; another user made it, remove it "
                             "(or use another namespace / UWCACHE_SHM_DIR)")
        if stat.S_IMODE(st.st_mode) != 0o700:
            raise CacheError(f"refusing the namespace directory {path}: its mode is {stat.S_IMODE(st.st_mode):04o}, "
                             f"not 0700 (owned by {owner_name(st.st_uid)}); run chmod 700 {path} if you made it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_own_dir(path: str, what: str) -> int:
    """A descriptor on an existing directory (not a link) that is ours and writable by us only."""
    try:
        fd = os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as exc:
        raise CacheError(f"cannot open {what} {path}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise CacheError(f"refusing {what} {path}: it belongs to {owner_name(st.st_uid)} with mode "
                         f"{stat.S_IMODE(st.st_mode):04o}; it must be ours and writable by us only")
    return fd


def check_private_file(fd: int, path: str, what: str = "file", *, exact_mode: bool = False) -> os.stat_result:
    """fstat an open file: a regular file owned by the effective uid, else CacheError; with
    ``exact_mode``, also closed to other users (no group or other bits, as 0600)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise CacheError(f"refusing {what} {path}: it is not a regular file")
    if st.st_uid != os.geteuid():
        raise CacheError(f"refusing {what} {path}: it is owned by {owner_name(st.st_uid)}, "
                         f"not by {owner_name(os.geteuid())}")
    if exact_mode and st.st_mode & 0o077:
        raise CacheError(f"refusing {what} {path}: its mode is {stat.S_IMODE(st.st_mode):04o}, not 0600, "
                         "so other users could read or change it")
    return st


def open_private(dir_fd: int, name: str, flags: int, *, path: str, what: str = "file", mode: int = 0o600,
                 exact_mode: bool = False) -> int:
    """Open ``name`` in the directory ``dir_fd`` without following a link, and check it is ours.

    ``path`` is only used in messages. A link is refused (``O_NOFOLLOW``), never followed;
    anything but a regular file owned by the effective uid is refused after ``fstat`` (with
    ``exact_mode``, also one open to other users).
    """
    try:
        fd = os.open(name, flags | _NOFOLLOW | _CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CacheError(f"refusing {what} {path}: it is a symbolic link ({_who(name, dir_fd)}); "
                             "uwcache never follows links") from None
        raise
    try:
        check_private_file(fd, path, what, exact_mode=exact_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private_path(path: str, flags: int, *, what: str = "file", mode: int = 0o600,
                      exact_mode: bool = False) -> int:
    """:func:`open_private` for an absolute or relative path: its directory is checked first."""
    parent, name = os.path.split(os.path.abspath(path))
    dir_fd = open_dir(parent, f"the directory of {what}")
    try:
        return open_private(dir_fd, name, flags, path=path, what=what, mode=mode, exact_mode=exact_mode)
    finally:
        os.close(dir_fd)
