"""Reading log files that grow: complete lines only, truncation and rotation handled, the
position kept in a state file so a restarted follower goes on where it stopped.

- Only complete lines (ending in a newline) are returned while following; a half-written last
  line waits for the rest.  ``final=True`` (a file read once, not followed) also returns it.
- Rotation by rename (``app.log`` → ``app.log.1``, a new ``app.log``): the old file is read to
  its end through the descriptor still open, then the new one from its start.
- Copy-truncate (``cp app.log app.log.1; : > app.log``): the file shrinks below the position;
  the lines written after the last read are taken from the copy (a sibling file that starts
  with the same bytes and is at least as long), then the file is read from its start.
- Restart: the state file names each file's identity (device, inode, the hash of its first
  bytes) and position.  A file renamed while the follower was down is found by its inode among
  its siblings and finished first.

The caller commits the position (``commit``) only after what it read was delivered: a crash
in between reads those lines again (derived event ids make that harmless).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

#: bytes of a file's beginning that identify it (copy-truncate finds the copy by them)
HEAD_BYTES = 256
#: the most bytes read from one file per poll
READ_CHUNK = 4 * 1024 * 1024


@dataclass
class FileState:
    """The committed position of one followed path."""

    dev: int = 0
    ino: int = 0
    offset: int = 0
    lineno: int = 0
    head: str = ""
    #: whatever the caller keeps with the position (the CSV header)
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Line:
    path: Path
    lineno: int
    data: bytes


def _head(fd: int, n: int) -> str:
    """The identity of a file: the hash of its first ``n`` bytes (n = what was read, at most
    HEAD_BYTES: bytes already read never change, so the hash stays valid as the file grows)."""
    return hashlib.sha256(os.pread(fd, n, 0)).hexdigest() if n > 0 else ""


class _Open:
    """A file being read: its descriptor, identity, read position and unfinished last line."""

    def __init__(self, path: Path, fd: int, offset: int, lineno: int) -> None:
        self.path = path
        self.fd = fd
        st = os.fstat(fd)
        self.dev, self.ino = st.st_dev, st.st_ino
        self.offset = offset  # bytes consumed (complete lines)
        self.lineno = lineno
        self.head_n = min(offset, HEAD_BYTES)
        self.head = _head(fd, self.head_n)

    def rewritten(self) -> bool:
        """True when the bytes already read changed (truncated and written again)."""
        return _head(self.fd, self.head_n) != self.head

    def read_all(self) -> list[Line]:
        """Every line to the end (a file that is finished: renamed away, or a copy)."""
        out: list[Line] = []
        while chunk := self.read_lines(final=True):
            out.extend(chunk)
        return out

    def read_lines(self, final: bool) -> list[Line]:
        """The complete lines of the next chunk (at most READ_CHUNK bytes, or one longer line)
        after ``offset``; ``final``: an unfinished last line too.  Empty at the end."""
        out: list[Line] = []
        while not out:
            left = os.fstat(self.fd).st_size - self.offset
            if left <= 0:
                break
            data = os.pread(self.fd, min(left, READ_CHUNK), self.offset)
            end = data.rfind(b"\n")
            if end < 0 and len(data) < left:  # one line longer than a chunk: read it whole
                data = os.pread(self.fd, left, self.offset)
                end = data.rfind(b"\n")
            if end < 0 and not final:
                break
            body = data[: end + 1] if end >= 0 else data
            parts = body.split(b"\n")
            for raw in parts[:-1] if body.endswith(b"\n") else parts:
                self.lineno += 1
                out.append(Line(self.path, self.lineno, raw.rstrip(b"\r")))
            self.offset += len(body)
            if end < 0:
                break
        if self.head_n < HEAD_BYTES and min(self.offset, HEAD_BYTES) != self.head_n:
            self.head_n = min(self.offset, HEAD_BYTES)
            self.head = _head(self.fd, self.head_n)
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Follower:
    """Follows a set of paths; positions in ``state_path`` (None: not kept)."""

    def __init__(self, paths: list[Path], state_path: Path | None = None) -> None:
        self.paths = [p.resolve() for p in paths]
        self.state_path = state_path
        self.states: dict[str, FileState] = self._load()
        self._open: dict[Path, _Open] = {}
        #: files met (rotated copies finished, truncations seen): for the summary
        self.notes: list[str] = []

    def add(self, path: Path) -> None:
        """Follow one more path (a file that appeared in a followed directory)."""
        resolved = path.resolve()
        if resolved not in self.paths:
            self.paths.append(resolved)

    # ------------------------------------------------------------------ state

    def _load(self) -> dict[str, FileState]:
        if self.state_path is None or not self.state_path.exists():
            return {}
        try:
            raw = orjson.loads(self.state_path.read_bytes())
            return {k: FileState(**v) for k, v in raw.get("files", {}).items()}
        except (OSError, orjson.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"the follower state {self.state_path} is unreadable ({exc}); delete it to "
                             "start from the beginning of the files") from exc  # fmt: skip

    def context(self, path: Path) -> dict[str, Any]:
        """The caller's data kept with ``path``'s position (mutable; saved by ``commit``)."""
        return self.states.setdefault(str(path.resolve()), FileState()).context

    def commit(self) -> None:
        """Store the positions of what was read so far (call after it was delivered)."""
        for path, f in self._open.items():
            st = self.states.setdefault(str(path), FileState())
            st.dev, st.ino, st.offset, st.lineno, st.head = f.dev, f.ino, f.offset, f.lineno, f.head
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"files": {k: asdict(v) for k, v in self.states.items()}}))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)

    # ------------------------------------------------------------------ reading

    def poll(self, final: bool = False) -> list[Line]:
        """Every new complete line of every path (``final``: also an unfinished last line)."""
        out: list[Line] = []
        for path in self.paths:
            out.extend(self._poll_one(path, final))
        return out

    def _poll_one(self, path: Path, final: bool) -> list[Line]:
        out: list[Line] = []
        cur = self._open.get(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if cur is not None:  # renamed away, no new file yet: what it has (a next poll, the rest)
                out.extend(cur.read_lines(final))
            return out
        if cur is None:
            return self._first_open(path, st)
        if (st.st_dev, st.st_ino) != (cur.dev, cur.ino):
            # rotated by rename: the rest of the old file, then the new one from its start
            out.extend(cur.read_all())
            cur.close()
            self.notes.append(f"{path}: rotated (renamed); finished the old file at line {cur.lineno}")
            self._open[path] = _Open(path, os.open(path, os.O_RDONLY), 0, 0)
            return out + self._open[path].read_lines(final)
        if st.st_size < cur.offset or cur.rewritten():
            out.extend(self._truncated(path, cur))
            cur = self._open[path]
        return out + cur.read_lines(final)

    def _first_open(self, path: Path, st: os.stat_result) -> list[Line]:
        """Open ``path``, resuming from the stored position when it is the same file."""
        saved = self.states.get(str(path))
        fd = os.open(path, os.O_RDONLY)
        out: list[Line] = []
        same = (st.st_dev, st.st_ino) == (saved.dev, saved.ino) and st.st_size >= saved.offset \
            and _head(fd, min(saved.offset, HEAD_BYTES)) == saved.head if saved is not None else False
        if saved is None or not saved.ino:
            self._open[path] = _Open(path, fd, 0, 0)
        elif same:
            self._open[path] = _Open(path, fd, saved.offset, saved.lineno)  # the same file: go on
        else:
            # rotated or truncated while we were away: finish the old file if it is still there
            old = self._find_sibling(path, saved)
            if old is not None:
                prev = _Open(old, os.open(old, os.O_RDONLY), saved.offset, saved.lineno)
                out.extend(prev.read_all())
                prev.close()
                self.notes.append(f"{path}: rotated while stopped; finished {old.name} from line {saved.lineno}")
            else:
                self.notes.append(f"{path}: not the file last read (rotated or truncated, the old one is gone); "
                                  "reading it from the start")  # fmt: skip
            self._open[path] = _Open(path, fd, 0, 0)
        return out + self._open[path].read_lines(final=False)

    def _find_sibling(self, path: Path, saved: FileState) -> Path | None:
        """The file last read, now under another name in the same directory (by inode), or a
        copy of it (copy-truncate: the same first bytes, at least as long as the position)."""
        siblings = [p for p in path.parent.iterdir() if p != path and p.name.startswith(path.name) and p.is_file()]
        for p in siblings:
            s = p.stat()
            if (s.st_dev, s.st_ino) == (saved.dev, saved.ino) and s.st_size >= saved.offset:
                return p
        for p in siblings:
            if p.stat().st_size >= saved.offset and _file_head(p, saved.offset) == saved.head:
                return p
        return None

    def _truncated(self, path: Path, cur: _Open) -> list[Line]:
        """Copy-truncate: finish from the copy, if there is one, then start the file again."""
        out: list[Line] = []
        saved = FileState(cur.dev, cur.ino, cur.offset, cur.lineno, cur.head)
        copy = None
        for p in path.parent.iterdir():
            if p != path and p.name.startswith(path.name) and p.is_file() and p.stat().st_size >= saved.offset \
                    and _file_head(p, saved.offset) == saved.head:  # fmt: skip
                copy = p
                break
        if copy is not None:
            prev = _Open(copy, os.open(copy, os.O_RDONLY), saved.offset, saved.lineno)
            out.extend(prev.read_all())
            prev.close()
        self.notes.append(f"{path}: truncated at line {cur.lineno}" + (f"; finished from {copy.name}" if copy else ""))
        cur.close()
        self._open[path] = _Open(path, os.open(path, os.O_RDONLY), 0, 0)
        return out

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


def _file_head(path: Path, offset: int) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _head(fd, min(offset, HEAD_BYTES))
    finally:
        os.close(fd)
