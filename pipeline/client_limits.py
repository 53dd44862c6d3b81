"""Who a request comes from, for every limit per client address: the console's login, HTTP ingest's
bad-key limit, the driver pages' code and ticket lookups. One way for all: ``client_key(request,
settings.trusted_proxy_networks)``.

The limits themselves are token buckets in the worker's memory (``LocalBuckets`` in
``pipeline.ingest.ratelimit``, the console's ``AddressLimiter``), keyed by ``client_key``: an IPv6
client is counted by its /64 network (one host usually holds a whole /64), so it cannot step around
the limit by changing its address within it.

Behind a reverse proxy every request comes from the proxy's address: list the proxies in
``PW_TRUSTED_PROXIES`` and the client's address is read from ``X-Forwarded-For`` instead.
"""

import ipaddress

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
    """What a limit counts: the address, or for IPv6 its /64 network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_key(request, trusted_proxies: tuple[Network, ...]) -> str:
    """What a per-client limit counts for ``request`` (anything with ``remote`` and ``headers``, e.g. an
    aiohttp request): the client's address (``client_address``: the peer, or behind a trusted proxy the
    ``X-Forwarded-For`` entry it vouches for), as ``bucket_key`` counts it (IPv4 address, IPv6 /64)."""
    return bucket_key(client_address(request.remote, request.headers.get("X-Forwarded-For"), trusted_proxies))
