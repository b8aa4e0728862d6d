"""Atomic file and directory writes, and reads of a directory a writer may be replacing: a crash mid-write never
leaves a half-written file in place, and a reader never sees half of a swap nor changes anything."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import LyricdistError


def _read_umask() -> int:
    """The process umask, read once at import. os.umask can only read it by setting it, and a file another thread
    creates meanwhile gets that mask, so /proc is read where it has it; elsewhere the mask is swapped once."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # strict for the moment it is swapped: a file created meanwhile is private, not loose
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Any]:
    """A binary file to stream into (e.g. a download): it appears at `path`, complete, only when the block ends
    without an error; a failure or a kill mid-way leaves at most a hidden temp file beside it, never `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def cache_root() -> Path:
    """Where lyricdist keeps downloads (public corpora, wandb artifacts): $LYRICDIST_CACHE, else ~/.cache/lyricdist."""
    return Path(os.environ.get("LYRICDIST_CACHE") or Path.home() / ".cache" / "lyricdist")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    os.fsync(f.fileno())
            except OSError:
                pass
        _fsync_dir(Path(dirpath))


def _asides(final: Path) -> list[Path]:
    """The `.NAME.old-*` copies `replace_dir` moved aside, oldest first (one removed while listing is skipped)."""
    stamped = []
    for old in final.parent.glob(f".{final.name}.old-*"):
        try:
            stamped.append((old.stat().st_mtime, old))
        except FileNotFoundError:
            continue
    return [old for _, old in sorted(stamped)]


def recover_dir(final: str | os.PathLike) -> None:
    """Undo an interrupted directory swap: if `final` is gone but its previous version survives, restore it.

    `replace_dir` renames the old directory aside before moving the new one in; a kill between the two renames
    leaves only the aside copy, which is complete. Stale temporary directories are removed. Only the directory's
    one writer may call this (it deletes a swap in progress); readers use `readable_dir`.
    """
    final = Path(final)
    parent = final.parent
    if not parent.is_dir():
        return
    olds = _asides(final)
    if not final.exists() and olds:
        os.rename(olds[-1], final)
        olds = olds[:-1]
    for stale in olds + list(parent.glob(f".{final.name}.tmp-*")):
        shutil.rmtree(stale, ignore_errors=True)


def readable_dir(final: str | os.PathLike) -> Path:
    """Where to read `final` from, without changing anything (a writer may be mid-swap right now).

    Between `replace_dir`'s two renames `final` is briefly absent; its previous version is then the newest
    `.NAME.old-*` beside it, which is complete.
    """
    final = Path(final)
    if final.exists() or not final.parent.is_dir():
        return final
    olds = _asides(final)
    return olds[-1] if olds else final


def read_dir_snapshot(
    locate: Callable[[], Path], names: Iterable[str], attempts: int = 10
) -> tuple[Path, dict[str, bytes] | None]:
    """Read the files `names` of one version of the directory `locate()` finds, while a writer may swap it.

    The files are opened through one handle on the directory, so all of them come from the same save even if
    `replace_dir` renames it away meanwhile. A name missing there is left out of the result only if that directory
    is still the one `locate()` finds (it is incomplete); if it was swapped away the read starts over, as it does
    when the directory vanishes before it is opened. None: the directory does not exist.
    """
    names = list(names)
    for attempt in range(attempts):
        time.sleep(0.01 * attempt)
        path = locate()
        try:
            dir_fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except NotADirectoryError:
            return path, {}
        except FileNotFoundError:
            if locate() == path and not path.exists():
                return path, None
            continue
        fds: dict[str, int] = {}
        try:
            for name in names:
                try:
                    fds[name] = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue
            if len(fds) == len(names) or _is_current(dir_fd, locate):
                files = {}
                for name, fd in fds.items():
                    with os.fdopen(fd, "rb", closefd=False) as f:
                        files[name] = f.read()
                return path, files
        finally:
            for fd in (*fds.values(), dir_fd):
                os.close(fd)
    raise LyricdistError(f"{path} was replaced {attempts} times while being read; try again")


def _is_current(dir_fd: int, locate: Callable[[], Path]) -> bool:
    try:
        now = os.stat(locate())
    except OSError:
        return False
    held = os.fstat(dir_fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def replace_dir(src: Path, final: Path) -> None:
    """Publish the complete directory `src` as `final` (its files are fsynced first)."""
    _fsync_tree(Path(src))
    final = Path(final)
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.rename(final, old)
    os.rename(src, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `final`; on success it replaces `final` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
