"""Who may post, at what cost to PostgreSQL, and what happens while it is away (pipeline/ingest/keys.py,
ratelimit.py, database.py, and the key check in views.py), on a fake pool that counts the questions."""

import asyncio
from types import SimpleNamespace

import pytest

from pipeline.config import Settings
from pipeline.ingest.database import DatabaseAway
from pipeline.ingest.keys import KeyBook, key_digest, new_key
from pipeline.ingest.ratelimit import LocalBuckets, RateLimiter
from pipeline.ingest.views import Ingest, Refuse

from tests.unit.conftest import Ticking

pytestmark = pytest.mark.unit


class FakePool:
    """Answers the integrator lookup from ``integrators`` (digest -> (id, name, kind)) and the rate-limit
    statement with an open bucket; refuses connections while ``away``. Counts what it was asked."""

    def __init__(self, integrators: dict[bytes, tuple] | None = None):
        self.integrators = integrators or {}
        self.away = False
        self.asked: list[str] = []

    def acquire(self, timeout=None):
        pool = self

        class Connection:
            async def __aenter__(self):
                if pool.away:
                    raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 55432)")
                return self

            async def __aexit__(self, *exc):
                return False

            async def fetchrow(self, sql, *args, timeout=None):
                if "integrators" in sql:
                    pool.asked.append("key")
                    found = pool.integrators.get(args[0])
                    return None if found is None else dict(zip(("id", "name", "kind"), found))
                pool.asked.append("bucket")
                return {"allowed": True, "tokens": 1.0}

        return Connection()


def run(coro):
    return asyncio.run(coro)


def book_with(*names: str, ttl: float = 10, timer=None, **kwargs) -> tuple[KeyBook, FakePool, dict[str, str]]:
    keys = {name: new_key() for name in names}
    pool = FakePool({key_digest(k): (i, name, "publisher") for i, (name, k) in enumerate(keys.items(), 1)})
    return KeyBook(pool, ttl, timer=timer or Ticking(), **kwargs), pool, keys


# ── the key book ───────────────────────────────────────────────────────────────────────────


def test_given_the_same_unknown_key_a_hundred_times_then_postgresql_is_asked_once():
    book, pool, _ = book_with("cam-vendor")
    stranger = new_key()

    answers = [run(book.integrator_for(stranger)) for _ in range(100)]

    assert answers == [None] * 100
    assert pool.asked == ["key"] and book.lookups == 1


def test_given_a_string_not_shaped_like_a_key_then_it_is_unknown_without_asking():
    book, pool, _ = book_with("cam-vendor")

    for junk in ("pwk_not-a-key", "x" * 47, "pwk_" + "é" * 43, ""):
        assert run(book.integrator_for(junk)) is None

    assert pool.asked == []


def test_given_a_flood_of_random_keys_then_the_known_keys_stay_trusted_without_asking_again():
    book, pool, keys = book_with("cam-vendor", unknown_size=10)
    assert run(book.integrator_for(keys["cam-vendor"])).name == "cam-vendor"

    for _ in range(100):
        assert run(book.integrator_for(new_key())) is None
    asked = len(pool.asked)

    assert run(book.integrator_for(keys["cam-vendor"])).name == "cam-vendor"
    assert book.trusted(keys["cam-vendor"]).name == "cam-vendor"
    assert len(pool.asked) == asked, "the known key came from the cache"


def test_given_postgresql_away_then_keys_seen_valid_keep_working_and_others_cannot_be_answered():
    timer = Ticking()
    book, pool, keys = book_with("cam-vendor", "car-parks", ttl=10, timer=timer)
    assert run(book.integrator_for(keys["cam-vendor"])).name == "cam-vendor"

    timer.now += 3600
    pool.away = True

    assert run(book.integrator_for(keys["cam-vendor"])).name == "cam-vendor", "its last known answer"
    with pytest.raises(DatabaseAway):
        run(book.integrator_for(keys["car-parks"]))
    assert book.trusted(keys["cam-vendor"]) is None, "not trusted as fresh: PostgreSQL is asked again when back"


def test_given_a_key_revoked_then_it_is_no_longer_served_from_the_last_known_answer_during_an_outage():
    timer = Ticking()
    book, pool, keys = book_with("cam-vendor", ttl=10, timer=timer)
    assert run(book.integrator_for(keys["cam-vendor"])) is not None
    pool.integrators.clear()
    timer.now += 11
    assert run(book.integrator_for(keys["cam-vendor"])) is None

    timer.now += 3600
    pool.away = True

    with pytest.raises(DatabaseAway):
        run(book.integrator_for(keys["cam-vendor"]))


def test_given_postgresql_just_failed_then_the_next_second_does_not_wait_for_it_again():
    timer = Ticking()
    book, pool, keys = book_with("cam-vendor", timer=timer)
    pool.away = True
    with pytest.raises(DatabaseAway):
        run(book.integrator_for(keys["cam-vendor"]))
    pool.away = False

    with pytest.raises(DatabaseAway):
        run(book.integrator_for(keys["cam-vendor"]))
    assert pool.asked == []
    timer.now += 1.5
    assert run(book.integrator_for(keys["cam-vendor"])).name == "cam-vendor"


# ── rate limits ────────────────────────────────────────────────────────────────────────────


def test_given_postgresql_away_then_the_rate_limit_holds_in_the_workers_memory_instead_of_failing():
    pool = FakePool()
    pool.away = True
    limiter = RateLimiter(pool, rate_per_second=0.5, burst=3)

    takes = [run(limiter.take("cam-vendor")) for _ in range(4)]

    assert takes[:3] == [0, 0, 0] and takes[3] == pytest.approx(2, abs=0.05)
    assert run(limiter.take("car-parks")) == 0, "other keys have their own bucket"


def test_given_local_buckets_then_a_name_refills_at_the_rate_up_to_the_burst_and_waiting_takes_nothing():
    timer = Ticking()
    buckets = LocalBuckets(rate_per_second=1, burst=2, timer=timer)

    assert [buckets.take("a"), buckets.take("a")] == [0, 0]
    assert buckets.wait("a") == buckets.take("a") == pytest.approx(1)
    timer.now += 0.5
    assert buckets.wait("a") == pytest.approx(0.5)
    timer.now += 100
    assert [buckets.take("a"), buckets.take("a"), buckets.wait("a")] == [0, 0, pytest.approx(1)]


# ── the key check on a request ─────────────────────────────────────────────────────────────


def ingest_for(pool: FakePool, **settings) -> Ingest:
    ready = asyncio.Event()
    ready.set()
    runtime = SimpleNamespace(settings=Settings(**settings), ready=ready, web_pool=pool, pool=None, producer=None)
    return Ingest(runtime)


def request(key: str | None, address: str = "203.0.113.7"):
    return SimpleNamespace(headers={"Authorization": f"Bearer {key}"} if key else {}, remote=address)


def refusal(ingest: Ingest, req) -> Refuse:
    with pytest.raises(Refuse) as info:
        run(ingest.caller(req))
    return info.value


def test_given_too_many_bad_keys_from_one_address_then_429_before_any_database_work():
    key = new_key()
    pool = FakePool({key_digest(key): (1, "cam-vendor", "publisher")})
    ingest = ingest_for(pool, ingest_bad_keys_per_address=3, ingest_bad_key_seconds=60)
    assert run(ingest.caller(request(key))).name == "cam-vendor"
    asked = len(pool.asked)

    statuses = [refusal(ingest, request(k)).status for k in (new_key(), None, "pwk_short")]
    flooded = refusal(ingest, request(new_key()))

    assert statuses == [401, 401, 401]
    assert flooded.status == 429 and int(dict(flooded.headers)["Retry-After"]) == 20
    assert "valid API key" in flooded.message
    assert pool.asked[asked:] == ["key"], "one lookup for the first bad key, none after the limit"
    assert run(ingest.caller(request(key))).name == "cam-vendor", "a key this worker trusts still gets in"
    assert refusal(ingest, request(new_key(), "198.51.100.1")).status == 401, "other addresses have their own count"


def test_given_a_trusted_proxy_then_bad_keys_are_counted_per_forwarded_client_and_per_ipv6_64():
    ingest = ingest_for(FakePool(), ingest_bad_keys_per_address=1, ingest_bad_key_seconds=60, trusted_proxies="10.0.0.0/8")

    def behind_proxy(client: str):
        req = request(None, "10.0.0.2")
        req.headers["X-Forwarded-For"] = client
        return refusal(ingest, req).status

    assert [behind_proxy("198.51.100.1"), behind_proxy("198.51.100.1")] == [401, 429]
    assert behind_proxy("198.51.100.2") == 401, "another client behind the same proxy has its own count"
    assert [behind_proxy("2001:db8:5:5::1"), behind_proxy("2001:db8:5:5:ffff::9")] == [401, 429], "one /64, one client"
    forged = [request(None, "203.0.113.9"), request(None, "203.0.113.9")]
    forged[0].headers["X-Forwarded-For"], forged[1].headers["X-Forwarded-For"] = "192.0.2.1", "192.0.2.2"
    assert [refusal(ingest, r).status for r in forged] == [401, 429], "a stranger's header is not believed"


def test_given_postgresql_away_then_a_key_never_seen_gets_503_with_retry_after_and_a_known_key_gets_in():
    known, stranger = new_key(), new_key()
    pool = FakePool({key_digest(known): (1, "cam-vendor", "publisher")})
    ingest = ingest_for(pool, ingest_key_cache_seconds=0.001)
    assert run(ingest.caller(request(known))).name == "cam-vendor"
    pool.away = True
    asyncio.run(asyncio.sleep(0.01))

    away = refusal(ingest, request(stranger))

    assert away.status == 503 and int(dict(away.headers)["Retry-After"]) >= 1
    assert run(ingest.caller(request(known))).name == "cam-vendor"


def test_given_a_request_then_the_ingest_asks_the_web_pool_not_the_pipelines():
    key = new_key()
    pool = FakePool({key_digest(key): (1, "cam-vendor", "publisher")})
    ingest = ingest_for(pool)

    assert run(ingest.caller(request(key))).name == "cam-vendor"

    assert pool.asked == ["key", "bucket"]
