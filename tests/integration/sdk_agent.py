"""An agent process for the SDK durability test: a sync ``Tracker`` driven by commands on
stdin, one per line, each answered with one JSON line on stdout:

    emit N START   emit N system.metric events (value START.., one entity: one partition)
                   → {"ids": [...]} once all N were emitted (spooled)
    flush SECONDS  → {"flushed": bool, "stats": {...}}
    close          → {"closed": true, "stats": {...}} and exit
"""

from __future__ import annotations

import dataclasses
import json
import sys

from taskpulse import Tracker
from taskpulse.transport import KafkaTransport


def main() -> None:
    url, spool = sys.argv[1], sys.argv[2]
    tp = Tracker(KafkaTransport(url, request_timeout_s=3.0), spool_dir=spool, agent="sdk-agent", retry_max_s=1.0)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "emit":
            n, start = int(args[0]), int(args[1])
            ids = [tp.emit("system.metric", "sdk-seq", {"name": "seq", "value": start + i}) for i in range(n)]
            print(json.dumps({"ids": ids}), flush=True)
        elif cmd == "flush":
            ok = tp.flush(float(args[0]))
            print(json.dumps({"flushed": ok, "stats": dataclasses.asdict(tp.stats())}), flush=True)
        elif cmd == "close":
            tp.close()
            print(json.dumps({"closed": True, "stats": dataclasses.asdict(tp.stats())}), flush=True)
            return


if __name__ == "__main__":
    main()
