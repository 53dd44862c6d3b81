"""Console login pieces and words (pipeline/console/auth.py, views.safe_next, i18n), without services."""

from types import SimpleNamespace

import pytest

from pipeline.client_limits import client_key
from pipeline.console import auth, i18n
from pipeline.console.views import _duration, safe_next

pytestmark = pytest.mark.unit


def test_a_password_is_stored_as_an_argon2_hash_and_checked_against_it():
    stored = auth.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert auth.password_matches(stored, "correct horse battery")
    assert not auth.password_matches(stored, "correct horse battery!")


def test_an_unknown_operator_never_matches():
    assert not auth.password_matches(None, "anything at all")


def test_short_passwords_bad_names_and_unknown_roles_are_refused():
    with pytest.raises(auth.OperatorError):
        auth.hash_password("short")
    with pytest.raises(auth.OperatorError):
        auth.check_name_and_role("Li Wei", "viewer")
    with pytest.raises(auth.OperatorError):
        auth.check_name_and_role("liwei", "admin")
    auth.check_name_and_role("li.wei", "supervisor")


def test_the_csrf_token_must_be_given_and_equal():
    assert auth.csrf_matches("abc123", "abc123")
    assert not auth.csrf_matches("abc123", "abc124")
    assert not auth.csrf_matches("abc123", None)
    assert not auth.csrf_matches("abc123", "")


def test_only_the_digest_of_a_session_token_is_kept():
    digest = auth.token_digest("a-token")
    assert len(digest) == 32 and b"a-token" not in digest


@pytest.mark.parametrize("target, expected", [
    ("/console/cases/1", "/console/cases/1"),
    ("/console/", "/console/"),
    ("https://evil.example/console/", "/console/"),
    ("//evil.example/console", "/console/"),
    ("/v1/camera-events", "/console/"),
    ("/console\\..\\x", "/console/"),
    (None, "/console/"),
])
def test_after_login_an_operator_is_only_sent_back_into_the_console(target, expected):
    assert safe_next(target) == expected


def test_every_console_text_exists_in_chinese_and_english():
    for key, (zh, en) in i18n.TEXT.items():
        assert zh and en, key
        # the same placeholders in both languages
        assert sorted(_fields(zh)) == sorted(_fields(en)), key
    for table in (i18n.STATE, i18n.SMS_STATUS, i18n.SMS_KIND, i18n.CAPTURE, i18n.ACTION):
        assert all(zh and en for zh, en in table.values())


def test_every_refusal_an_action_can_raise_has_words():
    import re
    from pathlib import Path

    import pipeline.console.actions as actions_module
    source = Path(actions_module.__file__).read_text()
    keys = set(re.findall(r'Refused\("([a-z_]+)"', source)) | set(re.findall(r'return "(evidence_[a-z_]+)"', source))
    assert keys, "no refusals found"
    missing = sorted(k for k in keys if f"refused.{k}" not in i18n.TEXT)
    assert missing == []


def test_words_fall_back_to_chinese_and_name_transitions():
    assert i18n.Words("fr")("login.submit") == "登录"
    en = i18n.Words("en")
    assert en.action("warned->ticketed") == "warned → ticketed"
    assert en.action("opened:review") == "opened: review"
    assert en.state("ticketed") == "ticketed" and i18n.Words("zh").state("ticketed") == "已开单"


def test_windows_read_in_minutes_or_seconds():
    assert _duration(600) == "10 min"
    assert _duration(30) == "30 s"
    assert _duration(90) == "90 s"


def _fields(text: str) -> list[str]:
    import string
    return [name for _, name, _, _ in string.Formatter().parse(text) if name]


def test_phone_numbers_in_free_text_are_masked_but_ticket_numbers_are_not():
    from pipeline.console.queries import scrub

    text = scrub("voided YH261126000042 after calling 13800138000; event cam-01:181512-1:000018")
    assert "13800138000" not in text and "138****8000" in text
    assert "YH261126000042" in text and "cam-01:181512-1:000018" in text


# ── limits on logins, before and around the password check ────────────────────────────────


def test_login_attempts_are_limited_per_address_and_refill_with_time():
    clock = FakeClock()
    limiter = auth.AddressLimiter(per_minute=3, clock=clock)
    assert [limiter.take("10.0.0.1") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("10.0.0.1") == pytest.approx(20.0)  # one attempt back every 20 s
    assert limiter.take("10.0.0.2") == 0, "another address has its own attempts"
    clock.now += 20
    assert limiter.take("10.0.0.1") == 0
    assert limiter.take("10.0.0.1") > 0


def test_the_address_limiter_remembers_a_bounded_number_of_addresses():
    limiter = auth.AddressLimiter(per_minute=1, capacity=100, clock=FakeClock())
    for i in range(1000):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) == 100


def test_an_ipv6_client_counts_per_64_block_and_a_mapped_ipv4_as_itself():
    def key(remote):
        return client_key(SimpleNamespace(remote=remote, headers={}), ())
    assert key("2001:db8:1:2:aaaa::1") == key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert key("::ffff:192.0.2.7") == "192.0.2.7"
    assert key("192.0.2.7") == "192.0.2.7"
    assert key(None) == "unknown"


class HeldChecks:
    """Password checks that last until the test lets them end, counting those that started."""

    def __init__(self, monkeypatch):
        import threading

        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        real = auth.password_matches

        def held(stored_hash, password):
            self.started.release()
            self.release.wait(30)
            return real(stored_hash, password)

        monkeypatch.setattr(auth, "password_matches", held)

    async def wait_started(self, n: int) -> None:
        import asyncio

        for _ in range(n):
            assert await asyncio.to_thread(self.started.acquire, timeout=30), "a password check did not start"


async def test_password_checks_run_off_the_event_loop_and_beyond_the_bound_are_refused_at_once(monkeypatch):
    import asyncio

    stored = auth.hash_password("correct horse battery")
    held = HeldChecks(monkeypatch)
    checks = auth.PasswordChecks(concurrency=2)

    async def login(password):
        async with checks.slot() as slot:
            return await slot.matches(stored, password)

    try:
        first = asyncio.create_task(login("correct horse battery"))
        second = asyncio.create_task(login("wrong"))
        await held.wait_started(2)  # the loop runs on while both checks hold their threads
        with pytest.raises(auth.LoginBusy):
            checks.slot()
        assert not first.done() and not second.done()
        held.release.set()
        assert await first is True and await second is False
        async with checks.slot() as slot:  # the slots are free again
            assert not await slot.matches(None, "anything")
    finally:
        held.release.set()
        checks.close()


async def test_password_checks_give_way_to_everything_else_on_the_machine(monkeypatch):
    import os
    import threading

    seen = []
    monkeypatch.setattr(auth, "password_matches", lambda stored_hash, password: seen.append(
        os.getpriority(os.PRIO_PROCESS, threading.get_native_id())) or False)
    checks = auth.PasswordChecks(concurrency=1)
    try:
        async with checks.slot() as slot:
            assert not await slot.matches(None, "guess")
    finally:
        checks.close()
    assert seen == [19]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19, "the event loop's thread keeps its priority"


async def test_a_slot_whose_client_went_away_stays_taken_until_its_check_ends(monkeypatch):
    import asyncio

    held = HeldChecks(monkeypatch)
    checks = auth.PasswordChecks(concurrency=1)

    async def login():
        async with checks.slot() as slot:
            return await slot.matches(None, "guess")

    try:
        task = asyncio.create_task(login())
        await held.wait_started(1)
        task.cancel()  # the client hung up: its request ends while the thread still hashes
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(auth.LoginBusy):
            checks.slot()
        held.release.set()
        while checks.in_progress:
            await asyncio.sleep(0.01)
        checks.slot()
    finally:
        held.release.set()
        checks.close()


async def test_a_refreshed_value_is_read_once_per_interval_whoever_asks():
    import asyncio

    from pipeline.console.metrics import Refreshed

    reads = []

    async def read():
        reads.append(1)
        await asyncio.sleep(0.01)
        return len(reads)

    value = Refreshed(3600, read)
    assert await asyncio.gather(*(value.get() for _ in range(20))) == [1] * 20
    assert await value.get() == 1 and len(reads) == 1
    value.seconds = 0
    assert await value.get() == 2


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
