"""Integrators: HTTP ingest of camera events and car-park counts, API keys, rate limits, and the
command-line tools to validate and publish files of events (see docs/integrators.md)."""
