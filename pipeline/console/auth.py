"""Operators, their passwords and their console sessions.

Passwords are stored as argon2id hashes (argon2-cffi's defaults). A session is a random token in
an HttpOnly, SameSite=Strict cookie; PostgreSQL keeps only the token's SHA-256, with the session's
own CSRF token, so any worker can serve any operator and a stolen database holds no usable cookie.
Roles: a ``viewer`` may look; a ``supervisor`` may also act.
"""

import functools
import hashlib
import hmac
import re
import secrets
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
    """Too many failed logins for this name lately; the next try is possible in ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class LoginLimit:
    """At most ``max_failures`` failed logins per name within ``period``."""

    max_failures: int = 5
    period: timedelta = timedelta(minutes=15)


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
    if not NAME.match(name):
        raise OperatorError("an operator name is 2-32 characters: a-z, 0-9, '.', '_', '-' (lower case)")
    if role not in ROLES:
        raise OperatorError(f"role must be one of {', '.join(ROLES)}")


# ── operators ───────────────────────────────────────────────────────────────────────────────


async def add_operator(conn: asyncpg.Connection, name: str, role: str, password: str, replace: bool = False) -> None:
    """Create an operator (or, with ``replace``, reset its role and password, end its sessions and
    forget its failed logins)."""
    check_name_and_role(name, role)
    digest = hash_password(password)
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


async def log_in(conn: asyncpg.Connection, name: str, password: str, now: datetime,
                 lifetime: timedelta, limit: LoginLimit = LoginLimit()) -> tuple[str, Session] | None:
    """Check the password; on success start a session and return (cookie token, session).

    Raises ``TooManyFailures`` (without checking the password) when the name had
    ``limit.max_failures`` failed logins within ``limit.period``, whether or not it exists.
    """
    name = name[:64]
    recent = await conn.fetch("SELECT at FROM login_failures WHERE name = $1 AND at > $2 ORDER BY at DESC",
                              name, now - limit.period)
    if len(recent) >= limit.max_failures:
        lifts_at = recent[limit.max_failures - 1]["at"] + limit.period
        raise TooManyFailures(max(1, int((lifts_at - now).total_seconds()) + 1))
    row = await conn.fetchrow("SELECT name, role, password_hash FROM operators WHERE name = $1", name)
    if not password_matches(row["password_hash"] if row else None, password):
        async with conn.transaction():
            await conn.execute("DELETE FROM login_failures WHERE at <= $1", now - limit.period)
            await conn.execute("INSERT INTO login_failures (name, at) VALUES ($1, $2)", name, now)
        return None
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = now + lifetime
    async with conn.transaction():
        await conn.execute("DELETE FROM login_failures WHERE name = $1", name)
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
