"""Connectors: turn each channel's traffic into contact events on contacts.v1.

Pure mapping lives in plain functions (``connectors.contact``); I/O (HTTP, Kafka) at the edges
(``connectors.gateway``, ``connectors.producer``).
"""
