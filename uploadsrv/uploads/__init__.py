"""The upload lifecycle: sessions, the ingest pipeline, hash states and locks."""
