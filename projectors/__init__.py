"""Projectors: materialize read models in PostgreSQL from the event topics, effectively once."""
