"""Attack: the spool when the disk fills up in the middle of a write."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

# A child process (the file-size limit is per process): RLIMIT_FSIZE makes the kernel accept a
# write only up to the limit and refuse the rest (EFBIG), as a full disk does (ENOSPC).
CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from taskpulse.spool import Spool, SpoolError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    spool = Spool(sys.argv[1], fsync="never", segment_bytes=1 << 20)
    rec = lambda i: json.dumps({"id": f"e{i}", "pad": "x" * 50}).encode()
    ok = []
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
    for i in range(20):
        try:
            spool.append([rec(i)])
            ok.append(f"e{i}")
        except (OSError, SpoolError):
            pass
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    for i in range(20, 25):  # space again
        spool.append([rec(i)])
        ok.append(f"e{i}")
    records, _ = spool.read(1000)
    print(json.dumps({"appended": ok, "read": [r.decode(errors="replace") for r in records]}))
    spool.close()
""")


def test_a_write_cut_short_by_a_full_disk_leaves_no_half_record(tmp_path: Path) -> None:
    # the failed append left its first bytes in the segment: the next record was glued onto
    # them (one invalid line: both lost) and the reader's offsets no longer met line starts
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "spool")], capture_output=True, timeout=60,
                         check=True, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    got = orjson.loads(out.stdout)
    assert len(got["appended"]) < 25  # the limit did refuse some appends
    assert [orjson.loads(line)["id"] for line in got["read"]] == got["appended"]
