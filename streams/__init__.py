"""Stream processors (faust-streaming), run by ``threadline worker``.

The rules are plain functions and dataclasses (``streams.identity``); ``streams.app`` only wires
them to topics and tables.
"""
