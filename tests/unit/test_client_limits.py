"""Who a request comes from, for limits per client address (pipeline/client_limits.py), and reading a
driver-page code as typed."""

import pytest

from pipeline.cases.store import CODE_ALPHABET, DRIVER_CODE_LENGTH, new_driver_code
from pipeline.client_limits import bucket_key, client_address, parse_networks
from pipeline.ingest.ratelimit import LocalBuckets
from pipeline.sms.driver_page import read_code

from tests.unit.conftest import Ticking

pytestmark = pytest.mark.unit


def test_an_ipv6_client_is_counted_by_its_slash_64_so_it_cannot_rotate_addresses_within_it():
    limiter = LocalBuckets(rate_per_second=1 / 60, burst=2, timer=Ticking())

    assert limiter.take(bucket_key("2001:db8:1:2::1")) == 0.0
    assert limiter.take(bucket_key("2001:db8:1:2:ffff::9")) == 0.0
    assert limiter.take(bucket_key("2001:db8:1:2:abcd::5")) == pytest.approx(60.0)
    assert limiter.take(bucket_key("2001:db8:1:3::1")) == 0.0, "another /64 is another client"
    assert bucket_key("::ffff:203.0.113.7") == bucket_key("203.0.113.7") == "203.0.113.7"


def test_the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy():
    proxies = parse_networks("10.0.0.0/8, 192.0.2.1")

    assert client_address("198.51.100.4", "1.2.3.4", proxies) == "198.51.100.4", "a stranger's header is ignored"
    assert client_address("10.1.1.1", "1.2.3.4", ()) == "10.1.1.1", "no trusted proxies: the header is ignored"
    assert client_address("10.1.1.1", "6.6.6.6, 1.2.3.4", proxies) == "1.2.3.4", "entries before the proxy's are forgeable"
    assert client_address("10.1.1.1", "1.2.3.4, 192.0.2.1", proxies) == "1.2.3.4", "two proxies in a row"
    assert client_address("10.1.1.1", None, proxies) == "10.1.1.1"


def test_a_driver_code_is_ten_characters_from_an_alphabet_without_look_alikes_and_read_as_typed():
    codes = {new_driver_code() for _ in range(2000)}

    assert len(codes) == 2000
    assert all(len(c) == DRIVER_CODE_LENGTH == 10 and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert not set("01IO") & set(CODE_ALPHABET)
    code = next(iter(codes))
    assert read_code(f" {code[:5].lower()}-{code[5:]} ") == code
    assert read_code(code[:5]) is None and read_code(code + "2") is None and read_code("O" * 10) is None
