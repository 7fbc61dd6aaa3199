"""threadline/logging.py: JSON lines, and no message bodies or personal data above debug."""

from __future__ import annotations

import json
import logging

import pytest

from threadline.logging import _drop_body_fields, configure_logging, get_logger
from threadline.settings import Settings

SENSITIVE = {
    "text": "Il mio ordine è rotto",
    "body": "{...}",
    "payload": "raw",
    "identities": [{"kind": "email"}],
    "email": "giulia.rossi@example.it",
    "phone": "+393471234567",
}


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_format_emits_one_json_object_per_line(restore_logging, capsys):
    configure_logging(Settings(log_format="json", log_level="INFO"), force=True)
    log = get_logger("threadline.test")
    log.info("contact_accepted", event_id="e-1", topic="contacts.v1", partition=2, offset=41)
    log.warning("contact_not_acknowledged", event_id="e-2")
    log.debug("not_shown_at_info")
    lines = _json_lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == ["contact_accepted", "contact_not_acknowledged"]
    assert lines[0] | {"timestamp": None} == {
        "event": "contact_accepted",
        "event_id": "e-1",
        "topic": "contacts.v1",
        "partition": 2,
        "offset": 41,
        "level": "info",
        "timestamp": None,
    }
    assert lines[1]["level"] == "warning" and lines[0]["timestamp"].endswith("Z")


def test_json_logs_redact_bodies_at_info(restore_logging, capsys):
    configure_logging(Settings(log_format="json", log_level="INFO"), force=True)
    get_logger("threadline.test").info("contact_accepted", event_id="e-1", text="Il mio ordine è rotto")
    (line,) = _json_lines(capsys.readouterr().err)
    assert line["text"] == "<redacted>" and line["event_id"] == "e-1"


def test_standard_library_loggers_are_rendered_as_json_too(restore_logging, capsys):
    configure_logging(Settings(log_format="json", log_level="INFO"), force=True)
    logging.getLogger("kafka.conn").warning("broker %s unreachable", "127.0.0.1:19092")
    (line,) = _json_lines(capsys.readouterr().err)
    assert line["event"] == "broker 127.0.0.1:19092 unreachable" and line["level"] == "warning"


@pytest.mark.parametrize("method", ["info", "warning", "error", "critical"])
def test_bodies_and_identities_are_redacted_above_debug(method):
    out = _drop_body_fields(None, method, {"event": "x", "event_id": "e-1", **SENSITIVE})
    assert {k: out[k] for k in SENSITIVE} == dict.fromkeys(SENSITIVE, "<redacted>")
    assert out["event_id"] == "e-1" and out["event"] == "x"


def test_bodies_and_identities_are_kept_at_debug():
    out = _drop_body_fields(None, "debug", {"event": "x", **SENSITIVE})
    assert out == {"event": "x", **SENSITIVE}


def test_redaction_leaves_events_without_sensitive_fields_unchanged():
    event = {"event": "x", "customer_id": "c-1", "offset": 4}
    assert _drop_body_fields(None, "info", dict(event)) == event


def _fail_deep():
    raise ValueError("broken on purpose")


@pytest.mark.parametrize("via", ["stdlib", "structlog"])
def test_an_exception_logged_as_json_carries_its_traceback(restore_logging, capsys, via):
    configure_logging(Settings(log_format="json", log_level="INFO"), force=True)
    try:
        _fail_deep()
    except ValueError:
        if via == "stdlib":
            logging.getLogger("aiokafka.consumer").exception("fetch failed")
        else:
            get_logger("threadline.test").exception("projection_failed", offset=7)
    (line,) = _json_lines(capsys.readouterr().err)
    assert "traceback object" not in json.dumps(line)
    assert line["exception"].startswith("Traceback (most recent call last)")
    assert "_fail_deep" in line["exception"] and "ValueError: broken on purpose" in line["exception"]
