"""Reference data as streams: the compacted reference topics (our JSON or Debezium change events),
materialized into PostgreSQL by the workers (``feed``), decoded by ``decode``, written by ``tables``."""
