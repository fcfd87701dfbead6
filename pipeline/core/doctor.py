"""``taskpulse doctor``, the pure part: each check's measurements judged into findings, each
with what is wrong and how to fix it.  The measuring (broker, ClickHouse, disk, notifiers)
is ``pipeline.doctor``'s.

A finding is ``ok``, ``warn`` (worth knowing, not broken) or ``fail`` (a problem: doctor
exits non-zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "level": self.level, "detail": self.detail, "fix": self.fix}


def ok(check: str, detail: str) -> Finding:
    return Finding(check, "ok", detail)


def topics(expected: Iterable[str], partitions: Mapping[str, int], raw: Iterable[str]) -> Finding:
    """Every topic exists; the raw topics have one partition count (they are read together)."""
    missing = [t for t in expected if t not in partitions]
    if missing:
        return Finding("topics", "fail", f"missing: {', '.join(missing)}",
                       "start a worker (it creates them) or create them (deploy/README.md)")  # fmt: skip
    counts = {partitions[t] for t in raw}
    if len(counts) > 1:
        return Finding("topics", "fail", f"the raw topics have different partition counts: {sorted(counts)}",
                       "give the taskpulse.events.* raw topics one partition count")  # fmt: skip
    return ok("topics", f"{len(partitions)} topics; raw topics {counts.pop() if counts else 0} partitions each")


def lag(role: str, group: str, ends: Mapping[tuple[str, int], int], committed: Mapping[tuple[str, int], int] | None,
        topics_read: Iterable[str], max_lag: int) -> Finding:  # fmt: skip
    """A role's consumer lag: messages in its topics past its group's committed offsets."""
    check = f"lag: {role}"
    parts = [(tp, end) for tp, end in ends.items() if tp[0] in set(topics_read)]
    if not committed:
        waiting = sum(end for _, end in parts)
        if waiting == 0:
            return ok(check, f"group {group}: nothing to read yet")
        return Finding(check, "warn" if waiting <= max_lag else "fail",
                       f"group {group} has committed nothing; {waiting} messages wait in its topics",
                       f"start a worker with the {role} role (TASKPULSE_ROLES)")  # fmt: skip
    behind = {tp: max(0, end - committed.get(tp, 0)) for tp, end in parts}
    total = sum(behind.values())
    worst = max(behind.items(), key=lambda kv: kv[1]) if behind else None
    where = f" (most on {worst[0][0]}:{worst[0][1]}: {worst[1]})" if worst and worst[1] else ""
    if total > max_lag:
        return Finding(check, "fail", f"group {group} is {total} messages behind{where}; limit {max_lag}",
                       f"check that workers with the {role} role run and keep up (taskpulse status, worker logs); "
                       "add workers up to the partition count")  # fmt: skip
    return ok(check, f"group {group}: {total} messages behind")


def schema(status: Mapping[str, Any]) -> Finding:
    """The database's schema version against this code's."""
    db, code = status["db_version"], status["code_version"]
    if status["unknown"]:
        return Finding("schema", "fail", f"database at version {db}, ahead of this taskpulse ({code}): steps "
                       f"{status['unknown']} unknown", "upgrade taskpulse to the release that migrated it")  # fmt: skip
    if status["pending"]:
        names = ", ".join(f"{s['version']} ({s['name']})" for s in status["steps"] if s["state"] == "pending")
        return Finding("schema", "fail", f"database at version {db}, this taskpulse needs {code}: pending {names}",
                       "run `taskpulse migrate` (workers do at start unless TASKPULSE_AUTO_MIGRATE=false)")  # fmt: skip
    return ok("schema", f"version {db} (this taskpulse: {code})")


def ttls(status: Mapping[str, Any]) -> Finding:
    """Each table's TTL against the TASKPULSE_TTL_* settings."""
    differ = [t for t in status["ttl"] if t["state"] == "differs"]
    if differ:
        detail = "; ".join(f"{t['table']}: table {t['actual_days']} d, settings {t['wanted_days']} d" for t in differ)
        return Finding("retention", "fail", detail, "run `taskpulse migrate` to apply the TTL settings")
    unmanaged = [t["table"] for t in status["ttl"] if t["state"] == "not managed"]
    note = f" ({', '.join(unmanaged)}: not MergeTree here, TTL on the *_local tables)" if unmanaged else ""
    return ok("retention", f"every TTL matches the settings{note}")


def disk(path: str, free_bytes: int, total_bytes: int, min_free_mb: int) -> Finding:
    free_mb = free_bytes // (1024 * 1024)
    pct = 100 * free_bytes / total_bytes if total_bytes else 0
    detail = f"{path}: {free_mb:,} MiB free ({pct:.0f} %)"
    if free_mb < min_free_mb:
        return Finding("disk", "fail", f"{detail}; below {min_free_mb} MiB",
                       "free space, move TASKPULSE_DATA_DIR, or lower the TASKPULSE_TTL_* retention")  # fmt: skip
    return ok("disk", detail)


def clock(host_ms: int, newest_event_ms: int | None, server_ms: int | None, max_skew_s: float) -> list[Finding]:
    """The host's clock against ClickHouse's and against the newest event time."""
    out = []
    if server_ms is not None:
        skew = (server_ms - host_ms) / 1000
        if abs(skew) > max_skew_s:
            out.append(Finding("clock: ClickHouse", "fail", f"ClickHouse's clock is {skew:+.0f} s from this host's",
                               "synchronise the clocks (NTP / chrony)"))  # fmt: skip
        else:
            out.append(ok("clock: ClickHouse", f"{skew:+.1f} s from this host"))
    if newest_event_ms is None:
        out.append(ok("clock: events", "no events yet"))
        return out
    ahead = (newest_event_ms - host_ms) / 1000
    if ahead > max_skew_s:
        out.append(Finding("clock: events", "fail", f"the newest event time is {ahead:.0f} s ahead of this host",
                           "an emitter's clock runs ahead, or this host's behind: synchronise them; "
                           "events beyond TASKPULSE_MAX_FUTURE_SKEW_S go to the DLQ"))  # fmt: skip
    else:
        out.append(ok("clock: events", f"newest event {-ahead:.0f} s before now"))
    return out


def exit_code(findings: Iterable[Finding]) -> int:
    return 1 if any(f.level == "fail" for f in findings) else 0
