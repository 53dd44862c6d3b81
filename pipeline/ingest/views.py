"""The integrator API, served by every worker's web server (Faust's aiohttp):

    POST /v1/camera-events     one event (JSON object), a batch (JSON array) or JSON lines
    POST /v1/car-park-status   the same, for car parks' free-space counts
    GET  /v1/schemas           the JSON Schema files (and /v1/schemas/<Name>.schema.json)
    GET  /v1/examples/<Name>.json   an example of each message
    GET  /v1/dead-letters      what the pipeline could not use of the caller's own (operator keys only)

The contract for callers (docs/integrators.md): every event is validated on its own; accepted
events are written to Kafka and acknowledged by the broker (acks=all) *before* the reply; the reply
lists every refused event with its index, the field and the reason. 202 when all were accepted,
422 when any was refused (the others were still accepted), 401 without a valid key, 413 for a body
over the limit, 415 for a Content-Type that is neither JSON nor JSON lines, 429 with Retry-After
over the per-key rate or after too many bad keys from one address, 403 naming the camera (or car
park) when an event is for one the caller does not own (nothing of that request is sent: the
camera registry, ``pipeline.cameras``), 503 with Retry-After when Kafka
did not acknowledge or PostgreSQL (which holds the keys) is away and the key was never seen valid by
this worker (resend: event ids make it safe).
"""

import asyncio
import logging

import faust
from faust.web import Request, Response, View
from pydantic import TypeAdapter

from pipeline.ingest import database, deadletters
from pipeline.ingest.batch import JSON, JSON_LINES, Batch, BodyError, TooManyEvents, kafka_address, read_body
from pipeline.ingest.database import DatabaseAway
from pipeline.ingest.keys import Integrator, KeyBook
from pipeline.client_limits import client_key
from pipeline.ingest.ratelimit import LocalBuckets, RateLimiter, retry_after_header
from schemas import contract, topics
from schemas.codec import car_park_status_adapter, encode
from schemas.events import CarParkStatus, camera_event_adapter, validation_context

log = logging.getLogger(__name__)

SCHEMA_MEDIA_TYPE = "application/schema+json"
DATABASE_RETRY_AFTER = "5"


class Refuse(Exception):
    """An answer that ends a request early: status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class Ingest:
    """What the views share: the keys, the rate limits, the runtime's Kafka producer and the web pool."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.settings = s = runtime.settings
        self._keys: KeyBook | None = None
        self._limiter: RateLimiter | None = None
        self.bad_keys = LocalBuckets(s.ingest_bad_keys_per_address / s.ingest_bad_key_seconds,
                                     s.ingest_bad_keys_per_address)
        self.schemas = {p.name: p.read_bytes() for p in contract.SCHEMA_DIR.glob("*.schema.json")}
        self.examples = {p.name: p.read_bytes() for p in contract.EXAMPLES_DIR.glob("*.json")}
        self.validation = validation_context(self.settings.evidence_schemes)

    def _ready(self) -> None:
        if not self.runtime.ready.is_set():
            raise Refuse(503, "this worker is starting; retry in a few seconds", (("Retry-After", "5"),))
        if self._keys is None:
            s = self.settings
            self._keys = KeyBook(self.runtime.web_pool, s.ingest_key_cache_seconds,
                                 s.ingest_unknown_key_cache_seconds, unknown_size=s.ingest_unknown_key_cache_size)
            self._limiter = RateLimiter(self.runtime.web_pool, s.ingest_rate_per_second, s.ingest_rate_burst)

    async def caller(self, request: Request) -> Integrator:
        """The integrator whose key is on the request: 401 without one, 429 over its rate or after too
        many bad keys from the request's address, 503 when PostgreSQL is away and the key is new here."""
        self._ready()
        scheme, _, key = request.headers.get("Authorization", "").strip().partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        integrator = self._keys.trusted(key)
        if integrator is None:
            integrator = await self._check_key(key, client_key(request, self.settings.trusted_proxy_networks))
        wait = await self._limiter.take(integrator.name)
        if wait > 0:
            retry = retry_after_header(wait)
            raise Refuse(429, f"over the rate limit of {self.settings.ingest_rate_per_second:g} requests per "
                              f"second for {integrator.name}: retry after {retry} s, or send batches",
                         (("Retry-After", retry),))
        return integrator

    async def _check_key(self, key: str, address: str) -> Integrator:
        """A key this worker does not trust yet: the address's bad-key limit first, then the key book."""
        if (wait := self.bad_keys.wait(address)) > 0:
            retry = retry_after_header(wait)
            raise Refuse(429, f"too many requests without a valid API key from {address}: retry after {retry} s",
                         (("Retry-After", retry),))
        if not key:
            self.bad_keys.take(address)
            raise Refuse(401, "missing API key: send the header 'Authorization: Bearer <your key>' "
                              "(the operator makes keys with `parkwarden integrators add NAME`)",
                         (("WWW-Authenticate", 'Bearer realm="parkwarden"'),))
        try:
            integrator = await self._keys.integrator_for(key)
        except DatabaseAway:
            raise Refuse(503, "parkwarden cannot check API keys right now (its database is unreachable); nothing "
                              f"in this request was taken: resend it after {DATABASE_RETRY_AFTER} s",
                         (("Retry-After", DATABASE_RETRY_AFTER),)) from None
        if integrator is None:
            self.bad_keys.take(address)
            raise Refuse(401, "unknown or revoked API key: check it was copied whole (it starts with pwk_), "
                              "or ask the operator for a new one",
                         (("WWW-Authenticate", 'Bearer realm="parkwarden", error="invalid_token"'),))
        return integrator

    async def body(self, request: Request) -> bytes:
        limit = self.settings.ingest_max_body_bytes
        too_big = Refuse(413, f"body over {limit} bytes: split it into smaller batches")
        if request.content_length is not None and request.content_length > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def receive(self, request: Request, adapter: TypeAdapter) -> tuple[int, dict]:
        integrator = await self.caller(request)
        media_type = request.content_type
        if media_type != JSON and media_type not in JSON_LINES:
            raise Refuse(415, f"Content-Type {media_type!r} is not accepted: use {JSON} (one event or an array) "
                              f"or {JSON_LINES[0]} (JSON lines)")
        body = await self.body(request)
        if not body.strip():
            raise Refuse(400, "empty body: send one event (a JSON object), a JSON array, or JSON lines")
        try:
            batch = read_body(body, media_type, adapter, self.settings.ingest_max_events, self.validation)
        except BodyError as exc:
            raise Refuse(400, str(exc)) from None
        except TooManyEvents as exc:
            raise Refuse(413, str(exc)) from None
        await self.check_provenance(batch, integrator)
        await self.publish(batch, integrator)
        reply = {"accepted": len(batch.events), "rejected": [r.as_json() for r in batch.refused]}
        return (422 if batch.refused else 202), reply

    async def check_provenance(self, batch: Batch, integrator: Integrator) -> None:
        """403 naming the first camera (or car park) of the batch that is not the caller's: unknown,
        removed or another integrator's. Nothing of the request is sent then. The registry is the one
        the worker last read; what it refuses is read again from PostgreSQL first (while PostgreSQL is
        away, the last reading stands)."""
        registry = self.runtime.registry

        def refusal(event) -> str | None:
            if isinstance(event, CarParkStatus):
                return registry.car_park_refusal(event.car_park_id, integrator.name)
            return registry.camera_refusal(event.camera_id, integrator.name)

        doubtful = [event for _, event in batch.events if refusal(event) is not None]
        if not doubtful:
            return
        try:
            async with database.connection(self.runtime.web_pool) as conn:
                await registry.reread(conn, [e.camera_id for e in doubtful if not isinstance(e, CarParkStatus)],
                                      [e.car_park_id for e in doubtful if isinstance(e, CarParkStatus)])
        except DatabaseAway as away:
            log.warning("ingest: camera registry not read again (%s); refusing on the last reading", away)
        for event in doubtful:
            if (problem := refusal(event)) is not None:
                raise Refuse(403, f"{problem}; nothing in this request was accepted")

    async def publish(self, batch: Batch, integrator: Integrator) -> None:
        """Write the accepted events to Kafka and wait for the broker's acknowledgement (acks=all)."""
        if not batch.events:
            return
        producer = self.runtime.producer
        headers = [("parkwarden-source", f"http:{integrator.name}".encode())]
        camera_events = self.settings.topic(topics.CAMERA_EVENTS.name)
        try:
            sent = []
            for _index, event in batch.events:
                topic, key = kafka_address(event)
                name = self.settings.topic(topic.name)
                if topic is topics.CAMERA_EVENTS:  # the integrator's own topic: it says who sent the event
                    await self.runtime.ensure_camera_topics({integrator.name})
                    name = topics.camera_events_of(camera_events, integrator.name)
                sent.append(await producer.send(name, encode(event), key=key.encode(), headers=headers))
            await asyncio.wait_for(asyncio.gather(*sent), self.settings.ingest_publish_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - any broker failure is the same answer to the caller
            log.error("ingest: Kafka did not acknowledge %d events from %s: %s: %s", len(batch.events),
                      integrator.name, type(exc).__name__, exc)
            raise Refuse(503, "Kafka did not acknowledge the events; nothing in this request is confirmed: "
                              "resend the whole request (event ids make a resend safe)",
                         (("Retry-After", "5"),)) from None


def _answer(view: View, status: int, body: dict, headers=()) -> Response:
    return view.json(body, status=status, headers=dict(headers) if headers else None)


async def _guarded(view: View, work) -> Response:
    try:
        status, body = await work()
        return _answer(view, status, body)
    except Refuse as refusal:
        return _answer(view, refusal.status, {"error": refusal.message}, refusal.headers)
    except DatabaseAway as away:
        log.warning("ingest: %s on %s", away, view.view_path)
        return _answer(view, 503, {"error": "parkwarden's database is unreachable right now: retry after "
                                            f"{DATABASE_RETRY_AFTER} s"}, (("Retry-After", DATABASE_RETRY_AFTER),))
    except Exception:  # noqa: BLE001 - an integrator gets a clear 500, the log gets the trace
        log.exception("ingest: unexpected error on %s", view.view_path)
        return _answer(view, 500, {"error": "internal error in parkwarden; the operator has the details. "
                                            "Resend later: event ids make a resend safe"})


def register(app: faust.App, runtime) -> None:
    """Add the integrator API to the app's web server."""
    ingest = Ingest(runtime)

    @app.page("/v1/camera-events")
    class CameraEvents(View):
        """POST ViolationDetected / VehicleObserved / VehicleDeparted events."""

        async def post(self, request: Request) -> Response:
            return await _guarded(self, lambda: ingest.receive(request, camera_event_adapter))

    @app.page("/v1/car-park-status")
    class CarParkStatuses(View):
        """POST CarParkStatus events."""

        async def post(self, request: Request) -> Response:
            return await _guarded(self, lambda: ingest.receive(request, car_park_status_adapter))

    @app.page("/v1/dead-letters")
    class DeadLetters(View):
        """GET the newest of the caller's own dead letters (``deadletters.Scope``): ``?limit=50&before=<id>``
        (operator keys only)."""

        async def get(self, request: Request) -> Response:
            async def listing():
                integrator = await ingest.caller(request)
                if not integrator.may_read_dead_letters:
                    raise Refuse(403, f"{integrator.name} is a publisher key; dead letters need an operator key")
                scope = deadletters.Scope(
                    integrator.name,
                    topics.camera_events_of(ingest.settings.topic(topics.CAMERA_EVENTS.name), integrator.name),
                    ingest.settings.topic(topics.CAR_PARK_STATUS.name))
                try:
                    limit = min(max(int(request.query.get("limit", "50")), 1), 500)
                    before = int(request.query["before"]) if "before" in request.query else None
                except ValueError:
                    raise Refuse(400, "limit and before must be whole numbers") from None
                async with database.connection(runtime.web_pool) as conn:
                    rows = await deadletters.recent(conn, limit, before, scope)
                    count = await deadletters.total(conn, scope)
                return 200, {"total": count, "dead_letters": [deadletters.as_json(r) for r in rows]}
            return await _guarded(self, listing)

    @app.page("/v1/schemas")
    class Schemas(View):
        """The list of JSON Schema files (public: the contract holds nothing secret)."""

        async def get(self, request: Request) -> Response:
            return self.json({"schema_version": contract.SCHEMA_VERSION,
                              "schemas": [f"/v1/schemas/{n}" for n in sorted(ingest.schemas)],
                              "examples": [f"/v1/examples/{n}" for n in sorted(ingest.examples)]})

    @app.page("/v1/schemas/{name}")
    class SchemaFile(View):
        async def get(self, request: Request, name: str) -> Response:
            return _file(self, ingest.schemas, name, SCHEMA_MEDIA_TYPE, "/v1/schemas")

    @app.page("/v1/examples/{name}")
    class ExampleFile(View):
        async def get(self, request: Request, name: str) -> Response:
            return _file(self, ingest.examples, name, JSON, "/v1/schemas")


def _file(view: View, files: dict[str, bytes], name: str, media_type: str, index: str) -> Response:
    if name not in files:
        return view.json({"error": f"no file {name!r}: see {index} for the list"}, status=404)
    return view.bytes(files[name], content_type=media_type)
