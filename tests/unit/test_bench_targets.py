"""The bench's target table reads the figures from where the bench writes them."""

from bench.targets import verdicts


def test_each_target_is_met_missed_or_not_measured() -> None:
    results = {
        "direct-batched": {"pipeline_events_per_s": 51_000, "ratio": 0.4, "peak_rss_mib": 700,
                           "peers": {"quix": {"taskpulse_over_peer": 6.0}}},
        "direct-latency": {"p99_s": 0.8},
        "correlation-e2e": {"events_per_s": 9_000, "tasks_per_s": 800, "peak_rss_mib": 900},
    }  # fmt: skip
    got = {what: verdict for what, _, _, verdict in verdicts(results)}
    assert got["SDK batches of 100: events/s"] == "met"
    assert got["SDK batches of 100: ÷ aiokafka ceiling"] == "missed"
    assert got["one event per message: events/s"] == "not measured"
    assert got["p99 publish → ClickHouse at 5,000 events/s"] == "met"  # lower is better
    assert got["peak RSS, ingest alone"] == "missed"
    assert got["peak RSS, ingest + correlate"] == "met"  # the bound itself is within
    assert got["× Quix Streams, batches of 100"] == "met"
    assert got["ingest + correlate: events/s"] == "missed"
