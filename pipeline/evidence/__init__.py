"""Evidence images: each sighting a case uses as evidence has its image fetched once, off the hot path,
checked and kept in PostgreSQL (``fetch``, ``store``)."""
