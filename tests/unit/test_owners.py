"""plate -> phone: looked up on the caller's connection, cached with a TTL (misses too)."""

from pipeline.lookups.owners import PostgresOwnerDirectory


class Connection:
    def __init__(self, phones: dict[str, str]):
        self.phones = phones
        self.queries = 0

    async def fetchval(self, sql: str, plate: str):
        self.queries += 1
        return self.phones.get(plate)


async def test_the_owner_s_phone_is_looked_up_on_the_caller_s_connection_never_a_second_one():
    """A second connection from the pool, taken while the caller's transaction holds one, could
    wait on itself forever when the pool is busy (issue 9); the directory has no pool at all."""
    conn = Connection({"浙A12345": "13800138000"})
    owners = PostgresOwnerDirectory(max_size=10, ttl_seconds=60)
    assert await owners.phone_for("浙A12345", conn) == "13800138000"
    assert await owners.phone_for("浙B00000", conn) is None
    assert await owners.phone_for("浙A12345", conn) == "13800138000"
    assert await owners.phone_for("浙B00000", conn) is None
    assert conn.queries == 2, "hits and misses are cached"
