"""Where a worker says it waits for PostgreSQL: every host of PW_DATABASE_URL, never the password. A
multi-host URL (a primary and its standby, ``target_session_attrs=read-write``) must not stop the worker."""

from pipeline.bootstrap import database_address
from pipeline.config import Settings


def address(url: str) -> str:
    return database_address(Settings(database_url=url))


def test_a_multi_host_url_names_every_host_without_the_password():
    said = address("postgresql://parkwarden:s3cret@127.0.0.1:46221,127.0.0.1:46222/pw?target_session_attrs=read-write")
    assert said == "127.0.0.1:46221,127.0.0.1:46222/pw"


def test_one_host_with_and_without_its_port():
    assert address("postgresql://parkwarden:s3cret@db.example:6543/pw") == "db.example:6543/pw"
    assert address("postgresql://parkwarden:s3cret@db.example/pw") == "db.example:5432/pw"
    assert address("postgresql://db1,db2:5433/pw") == "db1:5432,db2:5433/pw"
