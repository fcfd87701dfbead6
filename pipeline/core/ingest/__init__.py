"""Ingest: raw messages → decoded, deduplicated events, window aggregates (rollups) and the
rows of ``events``, ``rollups`` and ``dlq``, with the watermarks that make replays exact."""
