"""The local spool: every event an agent emits is appended here first and sent from here, so
nothing is lost while the broker or endpoint is unreachable, nor when the process restarts.

Layout of a spool directory::

    lock                    flock'ed by the process using it (its pid inside)
    cursor.json             {"segment": 3, "offset": 4096, "dropped": 0}: what was acknowledged
    seg-000000000003.ndjson one event per line, in emit order (append-only)

A record is one JSON line.  The sender reads from the cursor, sends, and moves the cursor only
after the transport acknowledged the batch; a failed send rewinds the reader to the cursor, so
the batch is sent again later, in the same order.  Segments behind the cursor are deleted.

Bounded: beyond ``max_bytes`` the oldest segment is deleted, its unsent records are counted in
``dropped`` (kept in ``cursor.json`` across restarts) and logged.  Fsync policy: ``always``
(each append; survives power loss, slowest), ``interval`` (the sender syncs every second: a
killed process loses nothing, a power cut at most about a second), ``never`` (the OS decides).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

log = logging.getLogger("taskpulse.spool")

FsyncPolicy = Literal["always", "interval", "never"]
#: (segment number, byte offset)
Position = tuple[int, int]

_SEG_PREFIX, _SEG_SUFFIX = "seg-", ".ndjson"


class SpoolError(Exception):
    """The spool cannot be used (directory not writable, every pool slot held)."""


class SpoolLocked(SpoolError):
    """Another live process holds this spool directory."""


@dataclass(frozen=True)
class SpoolStats:
    #: records appended but not acknowledged yet
    pending: int
    #: bytes on disk in segments
    bytes: int
    #: records deleted unsent because the spool was full (since the spool was created)
    dropped: int
    segments: int
    directory: str


def _seg_name(n: int) -> str:
    return f"{_SEG_PREFIX}{n:012d}{_SEG_SUFFIX}"


class Spool:
    """An append-only, bounded, crash-safe queue of JSON lines in one directory.  Thread-safe."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * 1024 * 1024,
        fsync: FsyncPolicy = "interval",
        segment_bytes: int | None = None,
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise SpoolError(f"fsync policy must be always, interval or never, not {fsync!r}")
        if max_bytes < 4096:
            raise SpoolError(f"spool max_bytes must be at least 4096, not {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes or max(1024, min(8 * 1024 * 1024, max_bytes // 8))
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lockfh = open(self.directory / "lock", "a+b")  # noqa: SIM115 - held until close()
        except OSError as exc:
            raise SpoolError(f"cannot use the spool directory {self.directory}: {exc} "
                             "(set TASKPULSE_SPOOL_DIR to a writable directory)") from exc  # fmt: skip
        try:
            fcntl.flock(self._lockfh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lockfh.close()
            raise SpoolLocked(f"the spool {self.directory} is in use by another process") from exc
        self._lockfh.truncate(0)
        self._lockfh.write(str(os.getpid()).encode())
        self._lockfh.flush()
        self._closed = False
        self._dirty = False
        self._read_fds: dict[int, int] = {}
        cursor = self._load_cursor()
        self.dropped = int(cursor.get("dropped", 0))
        self._cursor: Position = (int(cursor.get("segment", 1)), int(cursor.get("offset", 0)))
        self._sizes: dict[int, int] = {}
        for p in self.directory.glob(f"{_SEG_PREFIX}*{_SEG_SUFFIX}"):
            with contextlib.suppress(ValueError):
                n = int(p.name[len(_SEG_PREFIX) : -len(_SEG_SUFFIX)])
                if n < self._cursor[0]:
                    p.unlink(missing_ok=True)  # acknowledged before a crash, not deleted yet
                else:
                    self._sizes[n] = p.stat().st_size
        self._wseg = max(self._sizes, default=self._cursor[0])
        if self._wseg not in self._sizes:
            self._cursor = (self._wseg, 0)
        self._wfd = os.open(self._seg_path(self._wseg), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._repair_tail()
        self._sizes[self._wseg] = os.fstat(self._wfd).st_size
        self._reader: Position = self._cursor
        self.pending = self._count_from(self._cursor)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open_pool(cls, base: str | os.PathLike[str], name: str = "default", slots: int = 64,
                  **kw: object) -> Spool:  # fmt: skip
        """The first free spool of ``base/name``, ``base/name-1``, …: each process sharing a base
        takes its own, and a process that starts later adopts (and sends) what a stopped or
        crashed one left behind."""
        for i in range(slots):
            try:
                return cls(Path(base) / (name if i == 0 else f"{name}-{i}"), **kw)  # type: ignore[arg-type]
            except SpoolLocked:
                continue
        raise SpoolError(f"all {slots} spools under {base}/{name}* are in use; set TASKPULSE_SPOOL_DIR "
                         "to another directory")  # fmt: skip

    def _seg_path(self, n: int) -> Path:
        return self.directory / _seg_name(n)

    def _load_cursor(self) -> dict[str, int]:
        try:
            data = orjson.loads((self.directory / "cursor.json").read_bytes())
            return data if isinstance(data, dict) else {}
        except (OSError, orjson.JSONDecodeError):
            return {}

    def _repair_tail(self) -> None:
        """A process killed in the middle of a write can leave half a line: cut it off."""
        size = os.fstat(self._wfd).st_size
        if size == 0:
            return
        with open(self._seg_path(self._wseg), "rb") as fh:
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            data = fh.read()
        keep = data.rfind(b"\n") + 1
        log.warning("spool %s: cut %d bytes of a record half written before a crash", self.directory, size - keep)
        os.truncate(self._seg_path(self._wseg), keep)

    def _count_seg(self, seg: int, start: int) -> int:
        with open(self._seg_path(seg), "rb") as fh:
            fh.seek(start)
            return fh.read().count(b"\n")

    def _count_from(self, pos: Position) -> int:
        return sum(self._count_seg(seg, pos[1] if seg == pos[0] else 0) for seg in self._sizes if seg >= pos[0])

    # ------------------------------------------------------------------ writing

    def append(self, records: list[bytes]) -> None:
        """Append records (JSON lines without their newline), in order, in one write."""
        if not records:
            return
        data = b"\n".join(records) + b"\n"
        with self._lock:
            if self._closed:
                raise SpoolError(f"the spool {self.directory} is closed")
            view = memoryview(data)
            while view:
                n = os.write(self._wfd, view)
                view = view[n:]
            self._sizes[self._wseg] += len(data)
            self.pending += len(records)
            self._dirty = True
            if self.fsync == "always":
                os.fsync(self._wfd)
            if self._sizes[self._wseg] >= self.segment_bytes:
                self._roll()
            if sum(self._sizes.values()) > self.max_bytes:
                self._enforce_cap()

    def _roll(self) -> None:
        if self.fsync != "never":
            os.fsync(self._wfd)
        os.close(self._wfd)
        self._wseg += 1
        self._wfd = os.open(self._seg_path(self._wseg), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._sizes[self._wseg] = 0

    def _enforce_cap(self) -> None:
        """Delete the oldest segments until the spool fits ``max_bytes``, counting what was
        unsent in them.  The segment being written is never deleted."""
        while sum(self._sizes.values()) > self.max_bytes and len(self._sizes) > 1:
            oldest = min(self._sizes)
            start = self._cursor[1] if self._cursor[0] == oldest else 0
            lost = self._count_seg(oldest, start) if self._cursor[0] <= oldest else 0
            self._delete(oldest)
            nxt = min(self._sizes)
            if self._cursor[0] <= oldest:
                self._cursor = (nxt, 0)
            if self._reader[0] <= oldest:
                self._reader = self._cursor
            self.dropped += lost
            self.pending = max(0, self.pending - lost)
            log.error("spool %s is full (%d bytes, TASKPULSE_SPOOL_MAX_BYTES): dropped the %d oldest unsent "
                      "events (%d dropped in all)", self.directory, self.max_bytes, lost, self.dropped)  # fmt: skip
        self._save_cursor(sync=self.fsync != "never")

    def _delete(self, seg: int) -> None:
        fd = self._read_fds.pop(seg, None)
        if fd is not None:
            os.close(fd)
        self._sizes.pop(seg, None)
        self._seg_path(seg).unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading

    def read(self, max_records: int = 500, max_bytes: int = 1024 * 1024) -> tuple[list[bytes], Position]:
        """The next records after the last ``read`` (not acknowledged yet) and the position after
        them; give that position to ``commit`` once they were delivered, or call ``rewind``."""
        out: list[bytes] = []
        budget = max_bytes
        with self._lock:
            seg, off = self._reader
            while len(out) < max_records and budget > 0:
                if seg not in self._sizes:
                    later = [s for s in self._sizes if s > seg]
                    if not later:
                        break
                    seg, off = min(later), 0
                    continue
                avail = self._sizes[seg] - off
                if avail <= 0:
                    if seg >= self._wseg:
                        break
                    seg, off = seg + 1, 0
                    continue
                chunk = os.pread(self._read_fd(seg), min(avail, budget), off)
                end = chunk.rfind(b"\n")
                if end < 0:  # one record longer than the budget: read it whole
                    chunk = os.pread(self._read_fd(seg), avail, off)
                    end = chunk.rfind(b"\n")
                    if end < 0:
                        break
                for line in chunk[:end].split(b"\n"):
                    if len(out) >= max_records:
                        break
                    out.append(line)
                    off += len(line) + 1
                    budget -= len(line) + 1
            self._reader = self._norm((seg, off))
            return out, self._reader

    def _norm(self, pos: Position) -> Position:
        """The end of a finished segment is the start of the next one (one name per position,
        so that ``acknowledged`` compares like with like)."""
        seg, off = pos
        while seg < self._wseg and off >= self._sizes.get(seg, 0):
            seg, off = seg + 1, 0
        return seg, off

    def _read_fd(self, seg: int) -> int:
        fd = self._read_fds.get(seg)
        if fd is None:
            fd = self._read_fds[seg] = os.open(self._seg_path(seg), os.O_RDONLY)
        return fd

    def rewind(self) -> None:
        """Read again from the last acknowledged position (after a failed send)."""
        with self._lock:
            self._reader = self._cursor

    def commit(self, pos: Position, records: int) -> None:
        """The records up to ``pos`` were delivered: move the cursor, delete finished segments."""
        with self._lock:
            if pos <= self._cursor:
                return
            self._cursor = pos
            self.pending = max(0, self.pending - records)
            for seg in [s for s in self._sizes if s < pos[0]]:
                self._delete(seg)
            self._save_cursor(sync=self.fsync == "always")

    def _save_cursor(self, sync: bool) -> None:
        data = orjson.dumps({"segment": self._cursor[0], "offset": self._cursor[1], "dropped": self.dropped})
        tmp = self.directory / "cursor.json.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, self.directory / "cursor.json")

    # ------------------------------------------------------------------ state

    def end(self) -> Position:
        """The position after the last record appended so far."""
        with self._lock:
            return (self._wseg, self._sizes[self._wseg])

    def acknowledged(self, pos: Position) -> bool:
        """True when every record before ``pos`` was delivered (or dropped)."""
        with self._lock:
            return self._norm(self._cursor) >= self._norm(pos)

    def sync(self) -> None:
        """Make what was appended and acknowledged durable (the ``interval`` policy's tick)."""
        with self._lock:
            if self._closed or not self._dirty:
                return
            self._dirty = False
            if self.fsync != "never":
                os.fsync(self._wfd)
            self._save_cursor(sync=self.fsync != "never")

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(self.pending, sum(self._sizes.values()), self.dropped, len(self._sizes),
                              str(self.directory))  # fmt: skip

    def close(self) -> None:
        """Sync and release the directory (the unsent records stay for the next process)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.fsync != "never":
                os.fsync(self._wfd)
            self._save_cursor(sync=self.fsync != "never")
            os.close(self._wfd)
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            # an empty, acknowledged segment is left for the next process; nothing else to tidy
            fcntl.flock(self._lockfh.fileno(), fcntl.LOCK_UN)
            self._lockfh.close()
