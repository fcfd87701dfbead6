"""The file follower: complete lines only, rotation by rename and by copy-truncate, and a
restart from the stored position (also when the file was rotated meanwhile)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.follow import Follower


def texts(lines) -> list[str]:
    return [ln.data.decode() for ln in lines]


def append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def test_only_complete_lines_while_following_and_the_rest_once_the_line_ends(tmp_path):
    log = tmp_path / "events.ndjson"
    log.write_text("a\nb\npart")
    f = Follower([log])
    assert texts(f.poll()) == ["a", "b"]
    assert f.poll() == []
    append(log, "ial\nc\n")
    got = f.poll()
    assert texts(got) == ["partial", "c"] and [ln.lineno for ln in got] == [3, 4]
    append(log, "tail-without-newline")
    assert texts(f.poll(final=True)) == ["tail-without-newline"]


def test_rotation_by_rename_finishes_the_old_file_then_reads_the_new(tmp_path):
    log = tmp_path / "events.ndjson"
    log.write_text("1\n2\n")
    f = Follower([log])
    assert texts(f.poll()) == ["1", "2"]
    append(log, "3\n")  # written before the rotation, not read yet
    os.rename(log, tmp_path / "events.ndjson.1")
    log.write_text("4\n")
    assert texts(f.poll()) == ["3", "4"]
    append(log, "5\n")
    assert texts(f.poll()) == ["5"]


def test_copy_truncate_takes_the_unread_lines_from_the_copy(tmp_path):
    log = tmp_path / "events.ndjson"
    log.write_text("1\n2\n")
    f = Follower([log])
    assert texts(f.poll()) == ["1", "2"]
    append(log, "3\n")
    shutil.copy(log, tmp_path / "events.ndjson.1")
    with open(log, "r+") as fh:
        fh.truncate(0)
    append(log, "4\n")
    assert texts(f.poll()) == ["3", "4"]
    # truncated and written past the old position before the next poll: still noticed
    f.poll()
    with open(log, "r+") as fh:
        fh.truncate(0)
    append(log, "five-is-a-longer-line\nsix\n")
    assert texts(f.poll()) == ["five-is-a-longer-line", "six"]


def test_a_restart_resumes_from_the_committed_position(tmp_path):
    log, state = tmp_path / "events.ndjson", tmp_path / "state" / "pos.json"
    log.write_text("1\n2\n")
    f = Follower([log], state)
    assert texts(f.poll()) == ["1", "2"]
    f.commit()
    append(log, "3\n")
    assert texts(f.poll()) == ["3"]  # read but never committed (killed before delivery)
    f.close()
    again = Follower([log], state)
    assert texts(again.poll()) == ["3"]
    again.commit()
    again.close()
    # rotated while stopped: the rest of the old file first, then the new one
    append(log, "4\n")
    os.rename(log, tmp_path / "events.ndjson.1")
    log.write_text("5\n")
    third = Follower([log], state)
    assert texts(third.poll()) == ["4", "5"]
    third.commit()
    third.close()
    # a different file under the same name, the old one gone: read from the start
    (tmp_path / "events.ndjson.1").unlink()
    log.unlink()
    log.write_text("new-1\n")
    fourth = Follower([log], state)
    assert texts(fourth.poll()) == ["new-1"]
    assert any("reading it from the start" in n for n in fourth.notes)


def test_a_large_file_is_read_a_chunk_per_poll_every_line_once(tmp_path):
    log = tmp_path / "big.ndjson"
    lines = [f'{{"n": {i}, "pad": "{"x" * 100}"}}' for i in range(60_000)]  # ~6.5 MB: two chunks at least
    log.write_text("\n".join(lines))  # the last line without its newline
    f = Follower([log])
    got: list[str] = []
    polls = 0
    while chunk := f.poll(final=True):
        got += texts(chunk)
        polls += 1
    assert got == lines and polls >= 2
