"""The tracker's local spool: order, acknowledgement, restart, a half-written tail, the size
cap (counted drop of the oldest) and one process per directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from taskpulse.spool import Spool, SpoolLocked

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def recs(a: int, b: int) -> list[bytes]:
    return [b'{"n":%d}' % i for i in range(a, b)]


def drain(sp: Spool, batch: int = 7) -> list[bytes]:
    out = []
    while True:
        got, pos = sp.read(batch)
        if not got:
            return out
        out += got
        sp.commit(pos, len(got))


def test_records_come_back_in_order_across_segments_and_acks_delete_segments(tmp_path):
    sp = Spool(tmp_path / "s", segment_bytes=1024, fsync="never")
    for i in range(0, 500, 20):
        sp.append(recs(i, i + 20))
    assert sp.stats().segments > 3
    first, pos = sp.read(10)
    assert first == recs(0, 10)
    sp.rewind()  # a failed send: the same records again
    again, pos = sp.read(10)
    assert again == first
    sp.commit(pos, 10)
    assert drain(sp) == recs(10, 500)
    assert sp.stats().pending == 0 and sp.stats().segments == 1
    sp.close()


def test_unacknowledged_records_survive_a_restart_and_a_half_written_tail_is_cut(tmp_path):
    sp = Spool(tmp_path / "s", segment_bytes=2048, fsync="always")
    for i in range(0, 100, 10):
        sp.append(recs(i, i + 10))
    got, pos = sp.read(40)
    sp.commit(pos, 40)
    sp.read(30)  # read, never acknowledged: sent again after the restart
    sp.close()
    newest = max((tmp_path / "s").glob("seg-*.ndjson"))
    with open(newest, "ab") as fh:
        fh.write(b'{"n":100,"half')  # a process killed in the middle of a write
    again = Spool(tmp_path / "s")
    assert again.stats().pending == 60
    assert drain(again) == recs(40, 100)
    again.append(recs(100, 102))
    assert drain(again) == recs(100, 102)
    again.close()


def test_a_full_spool_drops_the_oldest_and_counts_them_across_restarts(tmp_path):
    sp = Spool(tmp_path / "s", max_bytes=8192, segment_bytes=1024, fsync="never")
    for i in range(0, 2000, 10):  # ~20 KB into an 8 KiB spool
        sp.append(recs(i, i + 10))
    st = sp.stats()
    assert st.bytes <= 8192 + 1024 and st.dropped > 0
    kept = drain(sp)
    assert kept == recs(2000 - len(kept), 2000)  # the newest, in order, none twice
    assert st.dropped + len(kept) == 2000  # every record either sent or counted as dropped
    sp.close()
    assert Spool(tmp_path / "s").stats().dropped == st.dropped


def test_one_process_per_spool_and_the_pool_gives_the_next_free_one(tmp_path):
    held = Spool(tmp_path / "pool" / "tracker")
    with pytest.raises(SpoolLocked):
        Spool(tmp_path / "pool" / "tracker")
    other = Spool.open_pool(tmp_path / "pool", "tracker")
    assert other.directory.name == "tracker-1"
    # another process is refused too (flock is per open file, across processes)
    code = ("import sys; from taskpulse.spool import Spool, SpoolLocked\n"
            f"try: Spool({str(tmp_path / 'pool' / 'tracker')!r})\n"
            "except SpoolLocked: sys.exit(3)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 3
    held.close()
    other.close()
    assert Spool.open_pool(tmp_path / "pool", "tracker").directory.name == "tracker"


def test_acknowledged_at_a_segment_boundary(tmp_path):
    """A batch that ends exactly where a segment ends acknowledges everything before a roll."""
    sp = Spool(tmp_path / "s", segment_bytes=64, fsync="never")
    sp.append(recs(0, 10))  # > 64 bytes: the segment rolls right after this write
    target = sp.end()
    got, pos = sp.read(10)
    assert got == recs(0, 10)
    assert not sp.acknowledged(target)
    sp.commit(pos, 10)
    assert sp.acknowledged(target)
    assert sp.read(10) == ([], sp.end())
    sp.close()
