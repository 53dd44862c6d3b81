"""Operators, their passwords and their console sessions.

Passwords are stored as argon2id hashes (argon2-cffi's defaults). A session is a random token in
an HttpOnly, SameSite=Strict cookie; PostgreSQL keeps only the token's SHA-256, with the session's
own CSRF token, so any worker can serve any operator and a stolen database holds no usable cookie.
Roles: a ``viewer`` may look; a ``supervisor`` may also act.

A login costs a stranger more than it costs the worker, in this order:
1. ``AddressLimiter``: attempts per client address, in memory, before any other work (429);
2. ``PasswordChecks``: at most N logins being checked at once per worker, each argon2 check in a
   thread of its own (never on the event loop); a login beyond them is refused at once (503);
3. ``log_in``: failed logins per name *and* client address, checked and counted in one statement
   (429 once there were too many), so failures from elsewhere never lock an operator out;
4. the argon2 check itself, the same cost whether or not the name exists (a dummy hash).
"""

import asyncio
import concurrent.futures
import functools
import hashlib
import hmac
import os
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("viewer", "supervisor")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")
MIN_PASSWORD = 8
COOKIE = "pw_session"
COOKIE_PATH = "/console"

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


class OperatorError(ValueError):
    """A name, role or password that cannot be used."""


class TooManyFailures(Exception):
    """Too many failed logins for this name from this address lately; the next try is possible in
    ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


class LoginBusy(Exception):
    """Every password-check slot of this worker is taken: the login is refused at once, not queued."""


@dataclass(frozen=True)
class LoginLimit:
    """At most ``max_failures`` failed logins per name and client address within ``period``."""

    max_failures: int = 5
    period: timedelta = timedelta(minutes=15)


class AddressLimiter:
    """Login attempts per client address on this worker, in memory: a token bucket per address
    holding ``per_minute`` attempts and refilled at ``per_minute`` a minute.

    At most ``capacity`` addresses are remembered, the least recently seen forgotten first, so the
    memory stays bounded whatever the number of addresses trying.
    """

    def __init__(self, per_minute: int, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.size = float(per_minute)
        self.per_second = per_minute / 60.0
        self.capacity = capacity
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, address: str) -> float:
        """0 when an attempt from ``address`` may go ahead now (it is counted); otherwise the
        seconds until one may."""
        now = self.clock()
        tokens, at = self._buckets.pop(address, (self.size, now))
        tokens = min(self.size, tokens + (now - at) * self.per_second)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.per_second
        self._buckets[address] = (tokens - 1 if wait == 0 else tokens, now)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)
        return wait


CHECK_NICENESS = 19
"""Password checks run at the lowest CPU priority (Linux: per thread, inherited by argon2's lanes),
so that guesses give way to the pipeline, PostgreSQL and Kafka on a busy machine."""


def _lower_priority() -> None:
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CHECK_NICENESS)


class PasswordChecks:
    """Argon2 checks off the event loop: at most ``concurrency`` logins in progress per worker,
    each password checked in a thread of this pool (argon2-cffi releases the GIL while it hashes),
    at the lowest CPU priority.

    ``slot()`` is taken before any database work and refused at once (``LoginBusy``) when all are
    taken. A slot whose check is still running when its request goes away (a client that hung up)
    is freed only when the check ends, so the threads never have a queue.
    """

    def __init__(self, concurrency: int):
        self.concurrency = concurrency
        self.in_progress = 0
        self._threads = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="password-check",
                                                              initializer=_lower_priority)

    def slot(self) -> "_Slot":
        if self.in_progress >= self.concurrency:
            raise LoginBusy()
        self.in_progress += 1
        return _Slot(self)

    def _free(self) -> None:
        self.in_progress -= 1

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


class _Slot:
    def __init__(self, checks: PasswordChecks):
        self._checks = checks
        self._job: concurrent.futures.Future | None = None

    async def __aenter__(self) -> "_Slot":
        return self

    async def __aexit__(self, *exc) -> None:
        if self._job is None or self._job.done():
            self._checks._free()
        else:
            loop = asyncio.get_running_loop()
            self._job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._checks._free))

    async def matches(self, stored_hash: str | None, password: str) -> bool:
        """``password_matches`` in one of the pool's threads (one check per slot)."""
        if self._job is not None:
            raise RuntimeError("one password check per slot")
        self._job = self._checks._threads.submit(password_matches, stored_hash, password)
        return await asyncio.wrap_future(self._job)


@dataclass(frozen=True)
class Operator:
    name: str
    role: str

    @property
    def can_act(self) -> bool:
        return self.role == "supervisor"

    @property
    def actor(self) -> str:
        """How the audit log names this operator."""
        return f"operator:{self.name}"


@dataclass(frozen=True)
class Session:
    operator: Operator
    csrf_token: str
    expires_at: datetime


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise OperatorError(f"a password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def password_matches(stored_hash: str | None, password: str) -> bool:
    """Constant work whether or not the operator exists (an unknown name checks a dummy hash)."""
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode())


def check_name_and_role(name: str, role: str) -> None:
    if not NAME.fullmatch(name):
        raise OperatorError("an operator name is 2-32 characters: a-z, 0-9, '.', '_', '-' (lower case)")
    if role not in ROLES:
        raise OperatorError(f"role must be one of {', '.join(ROLES)}")


# ── operators ───────────────────────────────────────────────────────────────────────────────


async def add_operator(conn: asyncpg.Connection, name: str, role: str, password: str, replace: bool = False) -> None:
    """Create an operator (or, with ``replace``, reset its role and password, end its sessions and
    forget its failed logins from every address)."""
    check_name_and_role(name, role)
    digest = await asyncio.to_thread(hash_password, password)
    async with conn.transaction():
        if replace:
            await conn.execute("DELETE FROM operator_sessions WHERE operator = $1", name)
            await conn.execute("DELETE FROM login_failures WHERE name = $1", name)
            await conn.execute(
                """INSERT INTO operators (name, role, password_hash) VALUES ($1, $2, $3)
                   ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, password_hash = EXCLUDED.password_hash""",
                name, role, digest)
        elif await conn.fetchval(
                "INSERT INTO operators (name, role, password_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true",
                name, role, digest) is None:
            raise OperatorError(f"operator {name!r} exists already")


async def remove_operator(conn: asyncpg.Connection, name: str) -> bool:
    return await conn.fetchval("DELETE FROM operators WHERE name = $1 RETURNING true", name) is not None


async def list_operators(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT o.name, o.role, o.created_at, count(s.*) FILTER (WHERE s.expires_at > now()) AS sessions
           FROM operators o LEFT JOIN operator_sessions s ON s.operator = o.name GROUP BY o.name ORDER BY o.name""")


# ── sessions ────────────────────────────────────────────────────────────────────────────────


async def log_in(conn: asyncpg.Connection, name: str, password: str, address: str, now: datetime,
                 lifetime: timedelta, matches: Callable[[str | None, str], Awaitable[bool]],
                 limit: LoginLimit = LoginLimit()) -> tuple[str, Session] | None:
    """Check the password with ``matches`` (``PasswordChecks``: off the event loop); on success start
    a session and return (cookie token, session).

    The attempt is counted as a failure of (name, ``address``) before the password is checked, in
    the same statement that checks the count, so concurrent guesses cannot slip past the limit; a
    success forgets that address's failures for the name. Raises ``TooManyFailures`` (without
    checking the password) when (name, address) had ``limit.max_failures`` failed logins within
    ``limit.period`` by PostgreSQL's clock, whether or not the name exists. Failures from other
    addresses never refuse this one.
    """
    name = name[:64]
    counted = await conn.fetchval(
        """INSERT INTO login_failures AS f (name, address, failed_at, last_at) VALUES ($1, $2, ARRAY[now()], now())
           ON CONFLICT (name, address) DO UPDATE
              SET failed_at = ARRAY(SELECT t FROM unnest(f.failed_at) t WHERE t > now() - $3::interval ORDER BY t)
                              || now(),
                  last_at = now()
            WHERE (SELECT count(*) FROM unnest(f.failed_at) t WHERE t > now() - $3::interval) < $4
           RETURNING true""",
        name, address, limit.period, limit.max_failures)
    if counted is None:
        wait = await conn.fetchval(
            """SELECT extract(epoch FROM min(t) + $3::interval - now()) FROM login_failures f, unnest(f.failed_at) t
               WHERE f.name = $1 AND f.address = $2 AND t > now() - $3::interval""",
            name, address, limit.period)
        raise TooManyFailures(max(1, int(wait or 0) + 1))
    row = await conn.fetchrow("SELECT name, role, password_hash FROM operators WHERE name = $1", name)
    if not await matches(row["password_hash"] if row else None, password):
        await conn.execute("DELETE FROM login_failures WHERE last_at <= now() - $1::interval", limit.period)
        return None
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = now + lifetime
    async with conn.transaction():
        await conn.execute("DELETE FROM login_failures WHERE name = $1 AND address = $2", name, address)
        await conn.execute("DELETE FROM operator_sessions WHERE expires_at < $1", now)
        await conn.execute(
            """INSERT INTO operator_sessions (token_sha256, operator, csrf_token, created_at, seen_at, expires_at)
               VALUES ($1, $2, $3, $4, $4, $5)""",
            token_digest(token), row["name"], csrf, now, expires)
    return token, Session(Operator(row["name"], row["role"]), csrf, expires)


async def session_for(conn: asyncpg.Connection, token: str | None, now: datetime) -> Session | None:
    """The live session a cookie token belongs to, or None (unknown, expired, operator removed)."""
    if not token or len(token) > 100:
        return None
    row = await conn.fetchrow(
        """SELECT s.csrf_token, s.expires_at, s.seen_at, o.name, o.role FROM operator_sessions s
           JOIN operators o ON o.name = s.operator WHERE s.token_sha256 = $1 AND s.expires_at > $2""",
        token_digest(token), now)
    if row is None:
        return None
    if now - row["seen_at"] > timedelta(minutes=1):
        await conn.execute("UPDATE operator_sessions SET seen_at = $2 WHERE token_sha256 = $1", token_digest(token), now)
    return Session(Operator(row["name"], row["role"]), row["csrf_token"], row["expires_at"])


async def log_out(conn: asyncpg.Connection, token: str | None) -> None:
    if token:
        await conn.execute("DELETE FROM operator_sessions WHERE token_sha256 = $1", token_digest(token))
