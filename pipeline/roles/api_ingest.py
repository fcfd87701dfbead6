"""HTTP ingest: ``POST /api/v1/events`` (role writer) for services that do not speak Kafka.

The body (a JSON object, a JSON array or NDJSON; ``Content-Encoding: gzip`` allowed) is
bounded (``TASKPULSE_API_INGEST_MAX_BYTES`` after gzip, ``…_MAX_EVENTS``: 413), each token is
rate limited (``…_RATE_LIMIT``, the ``limits`` library's moving window: 429 with
Retry-After), every event is judged by the pipeline's decoder and published to the raw
topics (``core.ingest.http_batch``), and the answer goes out only after the broker
acknowledged every message: 503 ``broker_unavailable`` when it did not, never a 2xx for
events that were not stored.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import Counter
from pydantic import BaseModel, Field

from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.http_batch import BodyError, TooMany, batch_messages, prepare, split_body
from pipeline.errors import ConfigError, SinkUnavailable
from pipeline.roles.api_auth import COMMON_ERRORS, ApiError, ErrorResponse, JSONResponse, principal
from pipeline.roles.ingest import decode_limits
from pipeline.settings import kafka_bootstrap, redact
from pipeline.sinks.kafka import OutputProducer
from pipeline.sinks.privacy import privacy_of
from pipeline.topics import RAW_SYSTEM, RAW_TOPICS

if TYPE_CHECKING:
    from pipeline.roles.api import ApiContext

#: how long one request waits for the broker's acknowledgement before answering 503
PUBLISH_TIMEOUT_S = 15.0
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")


class EventResult(BaseModel):
    index: int = Field(description="Position of the event in the request (0-based).")
    id: str | None
    status: str = Field(description="accepted or rejected")
    reason: str | None = Field(description="The DLQ reason code of a rejected event (invalid_json, "
                               "schema_violation, bad_timestamp, …).")  # fmt: skip
    detail: str | None = Field(description="What is wrong (the field path for schema violations).")


class IngestAnswer(BaseModel):
    accepted: int = Field(description="Events published and acknowledged by the broker.")
    duplicates: int = Field(description="Events whose id came earlier in the same request (stored once).")
    rejected: int = Field(description="Events the decoder refused; they are in the DLQ with the reason.")
    results: list[EventResult]


class Ingest:
    """The shared state of HTTP ingest in one process: the producer, the limiter, the decoder."""

    def __init__(self, ctx: ApiContext) -> None:
        s = ctx.settings
        self.settings = s
        try:
            self.rates: list[RateLimitItem] = parse_many(s.api_ingest_rate_limit)
        except ValueError as exc:
            raise ConfigError(
                f"TASKPULSE_API_INGEST_RATE_LIMIT={s.api_ingest_rate_limit!r}: {exc}; write e.g. 100/second or "
                "100/second;3000/minute"
            ) from exc
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.decoder = Decoder(limits=decode_limits(s), privacy=privacy_of(s), keep_original=s.dlq_keep_original)
        self.producer = (
            OutputProducer(kafka_bootstrap(s.kafka_url), linger_ms=2, client_kwargs=ctx.kafka_kwargs)
            if s.kafka_url
            else None
        )
        self._start_lock = asyncio.Lock()
        self.requests = Counter(
            "taskpulse_http_ingest_requests_total", "HTTP ingest requests by answer (ok, or the error code)",
            ["answer"], registry=ctx.registry,
        )  # fmt: skip
        self.events = Counter(
            "taskpulse_http_ingest_events_total", "Events in answered HTTP ingest requests: accepted (and "
            "acknowledged by the broker), duplicates (an id repeated in its request), rejected (to the DLQ)",
            ["status"], registry=ctx.registry,
        )  # fmt: skip

    def check_rate(self, who: str) -> None:
        for item in self.rates:
            if not self.limiter.hit(item, "ingest", who):
                reset = self.limiter.get_window_stats(item, "ingest", who).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise ApiError(
                    429, "rate_limited",
                    f"token {who!r} sent more than {item} ingest requests (TASKPULSE_API_INGEST_RATE_LIMIT); "
                    f"retry after {wait}s",
                    {"Retry-After": str(wait)},
                )  # fmt: skip

    async def read_body(self, request: Request) -> bytes:
        """The body, gzip undone, at most ``api_ingest_max_bytes`` (413 beyond)."""
        limit = self.settings.api_ingest_max_bytes
        too_large = ApiError(
            413, "payload_too_large",
            f"the body is larger than {limit} bytes (TASKPULSE_API_INGEST_MAX_BYTES): send fewer events per request",
        )  # fmt: skip
        length = request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "x-gzip"):
            raise ApiError(415, "unsupported_media_type", f"Content-Encoding {encoding!r}: send gzip or none")
        try:
            out = await asyncio.to_thread(gunzip, body, limit)
        except zlib.error as exc:
            raise ApiError(400, "bad_request", f"the body is not valid gzip: {exc}") from exc
        if out is None:
            raise too_large
        return out

    async def publish(self, messages: list[tuple[str, bytes, bytes, bool]]) -> None:
        """Publish the events (batched per partition) and wait for the broker's acknowledgement."""
        producer = self.producer
        if producer is None:
            raise ApiError(503, "broker_unavailable", "this API has no Kafka broker: set TASKPULSE_KAFKA_URL",
                           {"Retry-After": "5"})  # fmt: skip
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                async with self._start_lock:
                    await producer.start()
                parts = {t: await producer.partitions_for(t) for t in {m[0] for m in messages}}
                lim = self.decoder.limits
                batches = batch_messages(
                    messages, lambda topic, key: producer.partition_of(key, parts[topic]),
                    lim.max_message_bytes * 9 // 10, lim.max_array_elements,
                )  # fmt: skip
                await producer.publish_acked(batches)
        except (SinkUnavailable, TimeoutError) as exc:
            await self._reset()
            why = redact(str(exc)) or f"no acknowledgement within {PUBLISH_TIMEOUT_S:g}s"
            raise ApiError(
                503, "broker_unavailable",
                f"the Kafka broker did not acknowledge the events ({why[:300]}); nothing of this request counts "
                "as stored: send it again (ids make a resend safe)",
                {"Retry-After": "2"},
            ) from exc  # fmt: skip

    async def _reset(self) -> None:
        """Drop the producer after a failure: the next request connects anew."""
        if self.producer is None:
            return
        async with self._start_lock:
            old = self.producer
            self.producer = OutputProducer(old.servers, old.linger_ms, old.client_kwargs)
            if old.started:
                asyncio.get_running_loop().create_task(_stop_quietly(old))

    async def close(self) -> None:
        if self.producer is not None:
            await _stop_quietly(self.producer)


def gunzip(data: bytes, limit: int) -> bytes | None:
    """``data`` gunzipped (every member of a multi-member file), None past ``limit`` bytes;
    ``zlib.error`` when it is not gzip or is cut short."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits=31)
        out += inflater.decompress(data, limit + 1 - len(out))
        if len(out) > limit or inflater.unconsumed_tail:
            return None
        if not inflater.eof:
            raise zlib.error("the gzip stream is cut short")
        data = inflater.unused_data
    return bytes(out)


async def _stop_quietly(producer: OutputProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 5)
    except Exception:  # noqa: BLE001, S110 - a producer that cannot flush is dropped either way
        pass


_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One event object, a JSON array of them, or NDJSON (one event or array per line); "
        "optionally Content-Encoding: gzip.",
        "content": {
            "application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/EventEnvelope"},
                {"type": "array", "items": {"$ref": "#/components/schemas/EventEnvelope"}},
            ]}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "One JSON event per line."}},
        },
    }
}  # fmt: skip


async def _ingest(ingest: Ingest, request: Request) -> dict[str, Any]:
    who = principal(request)
    name = who.name if who is not None else "http"
    ingest.check_rate(name)
    body = await ingest.read_body(request)
    ndjson = request.headers.get("Content-Type", "").split(";")[0].strip().lower() in NDJSON_TYPES
    try:
        items = await asyncio.to_thread(split_body, body, ndjson, ingest.settings.api_ingest_max_events)
    except TooMany as exc:
        raise ApiError(413, "too_many_events", str(exc)) from exc
    except BodyError as exc:
        raise ApiError(400, "bad_request", str(exc)) from exc
    now_ms = int(time.time() * 1000)
    prepared = await asyncio.to_thread(prepare, items, ingest.decoder, name, RAW_TOPICS, RAW_SYSTEM, now_ms)
    if prepared.messages:
        await ingest.publish(prepared.messages)
    return prepared.answer()


def router(ingest: Ingest) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["ingest"])

    @r.post(
        "/events", response_model=IngestAnswer, openapi_extra=_BODY_DOC,
        responses={
            **COMMON_ERRORS,
            413: {"model": ErrorResponse, "description": "Body or event count over the limit."},
            415: {"model": ErrorResponse, "description": "Not JSON / NDJSON, or an encoding other than gzip."},
            429: {"model": ErrorResponse, "description": "The token's rate limit; see Retry-After."},
            503: {"model": ErrorResponse, "description": "The broker did not acknowledge: nothing counts as stored."},
        },
    )  # fmt: skip
    async def post_events(request: Request) -> JSONResponse:
        """Publish events to the pipeline (role writer).  Answers once the broker acknowledged
        every accepted event, with each event's result and the DLQ reason of the rejected ones;
        the token's name becomes each event's `metadata.source`."""
        try:
            answer = await _ingest(ingest, request)
        except ApiError as exc:
            ingest.requests.labels(exc.code).inc()
            raise
        ingest.requests.labels("ok").inc()
        for status in ("accepted", "duplicates", "rejected"):
            ingest.events.labels(status).inc(answer[status])
        return JSONResponse(answer)

    return r
