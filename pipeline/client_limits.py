"""Limits per client address for pages anyone may call (the driver page): a token bucket per address,
in this worker's memory.

Each request takes a token; a bucket holds at most ``burst`` tokens and refills at ``per_minute``.
The buckets are per worker (no database round trip per request), so behind a load balancer that
spreads one client over N workers the client gets up to N times the rate. An IPv6 client is counted
by its /64 network (one host usually holds a whole /64). At most ``max_clients`` buckets are kept;
the longest idle goes first.

Behind a reverse proxy every request comes from the proxy's address: list the proxies in
``PW_TRUSTED_PROXIES`` and the client's address is read from ``X-Forwarded-For`` instead.
"""

import ipaddress
import time
from collections import OrderedDict

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.1, 10.1.0.0/16"`` -> networks; raises ``ValueError`` naming a bad entry."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[Network, ...]) -> str:
    """The address a request comes from: the TCP peer, or, when the peer is a trusted proxy, the last
    ``X-Forwarded-For`` entry that is not itself a trusted proxy (the entries before it are the
    client's to write, so they are not believed)."""
    address = peer or "unknown"
    if not trusted_proxies or not _within(address, trusted_proxies):
        return address
    for entry in reversed([e.strip() for e in (forwarded_for or "").split(",") if e.strip()]):
        address = entry
        if not _within(entry, trusted_proxies):
            break
    return address


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def bucket_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AddressLimiter:
    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000, clock=time.monotonic):
        self.rate = per_minute / 60
        self.burst = max(1, burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, address: str) -> float:
        """Take a token for ``address``: 0.0 when allowed, else the seconds until one is free."""
        key, now = bucket_key(address), self.clock()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        allowed = tokens >= 1
        self._buckets[key] = (tokens - 1 if allowed else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return 0.0 if allowed else (1 - tokens) / self.rate
