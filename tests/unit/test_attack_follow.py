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
