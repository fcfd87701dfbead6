"""Attack: the follower when the followed name stops being a regular file."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.follow import Follower


def test_a_followed_file_replaced_by_a_directory_does_not_stop_the_follower(tmp_path: Path) -> None:
    # `mv app.ndjson app.ndjson.1; mkdir app.ndjson` (a deploy mistake) made every poll raise
    # IsADirectoryError: `taskpulse ingest --follow` died, and died again on restart
    path, state = tmp_path / "app.ndjson", tmp_path / "state.json"
    path.write_bytes(b"a\nb\n")
    f = Follower([path], state)
    assert [x.data for x in f.poll()] == [b"a", b"b"]
    f.commit()
    with path.open("ab") as fh:
        fh.write(b"c\n")  # written before the rotation, not read yet
    os.rename(path, tmp_path / "app.ndjson.1")
    path.mkdir()
    assert [x.data for x in f.poll()] == [b"c"]  # the rest of the old file, through its descriptor
    assert f.poll() == []
    assert any("not a regular file" in n for n in f.notes)
    f.commit()
    f.close()
    again = Follower([path], state)  # restarted while the name is a directory
    assert again.poll() == []
    path.rmdir()
    path.write_bytes(b"d\n")
    assert [x.data for x in again.poll()] == [b"d"]


def test_a_line_without_end_is_never_held_whole(tmp_path: Path, monkeypatch) -> None:
    # attack: a followed file with no newline (binary garbage, a runaway writer) was read whole at
    # every poll: 300 MB of it, 300 MB of memory twice a second; more than memory, the end
    import tracemalloc

    from pipeline import follow

    monkeypatch.setattr(follow, "MAX_LINE", 2 * 1024 * 1024, raising=False)
    path = tmp_path / "app.ndjson"
    path.write_bytes(b"first\n" + b"a" * (40 * 1024 * 1024))
    f = Follower([path])
    tracemalloc.start()
    try:
        assert [x.data for x in f.poll()] == [b"first"]
        assert f.poll() == []  # still unfinished
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, f"{peak:,} bytes to follow a 40 MiB line"  # a few chunks, not the line
    with path.open("ab") as fh:
        fh.write(b"\r\ncanary\n")
    got = f.poll() + f.poll()
    assert [len(x.data) for x in got] == [2 * 1024 * 1024, 6]  # the long line cut, the canary whole
    assert got[1].data == b"canary" and got[1].lineno == 3
    f.close()
