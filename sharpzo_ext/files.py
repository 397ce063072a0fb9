"""Writing files so that a failure never leaves a half-written one: write a temporary file in
the same directory, flush it to disk, then rename it over the target (atomic on POSIX). And
where the package caches what it computes once (default_cache_dir)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["atomic_path", "write_text", "write_json", "path_problem", "writable_problem",
           "default_cache_dir"]


CACHE_ENV, CACHE_HOME = "SHARPZO_EXT_CACHE", "~/.cache/sharpzo_ext"


def default_cache_dir() -> Path:
    """Where image features and exported text towers are cached unless a run says otherwise:
    $SHARPZO_EXT_CACHE (CACHE_ENV), or ~/.cache/sharpzo_ext (CACHE_HOME)."""
    return Path(os.environ.get(CACHE_ENV, Path(CACHE_HOME).expanduser()))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to `path`; on success it replaces `path`, on error it is
    removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        # what a plainly created file gets: mkstemp makes it 0600, and so do writers that
        # replace the file themselves (safetensors)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj, default: Callable | None = None) -> None:
    write_text(path, json.dumps(obj, indent=2, default=default) + "\n")


def path_problem(path: str | os.PathLike, directory: bool) -> str | None:
    """Why `path` cannot be written as a directory (or a file), or None: it is a file (or a
    directory), it is under a file, or where it would be written is not writable."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        return f"{path} is a {'file' if directory else 'directory'}, not a " \
               f"{'directory' if directory else 'file'}"
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            return f"{path} is under {parent}, which is a file"
    return writable_problem(path if directory else path.parent)


def writable_problem(directory: str | os.PathLike) -> str | None:
    """Why files cannot be created in `directory` (or in the directories that would be made for
    it), or None. os.access answers for the process as it is: a read-only file system refuses
    root as well."""
    existing = Path(directory)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    try:  # os.access grants root everything, even where no file can be made (/proc): try one
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"no file can be created in {existing} ({error.strerror})"
    return None
