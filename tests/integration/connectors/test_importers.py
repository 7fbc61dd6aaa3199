"""mbox and Asterisk CDR imports, the IMAP poller against a real IMAP server (pymap), and the
traffic generator, all producing to the real broker."""

from __future__ import annotations

import imaplib
import subprocess
import sys
import time
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import UTC, datetime, timedelta

import pytest

from connectors import asterisk_cdr, mbox
from connectors.base import MapContext
from connectors.importer import Ledger, ledger_path, run_import
from connectors.sink import Sink
from fixtures.providers import raw
from threadline.process import free_port


@pytest.fixture
def sink(connector_settings, topics):
    from schemas.codec import make_codec
    from threadline.kafka import make_producer

    s = Sink(
        make_producer(connector_settings),
        make_codec(connector_settings),
        contacts_topic=topics["contacts"],
        dlq_topic=topics["dlq"],
        component="importer",
    )
    yield s
    s.producer.close(10)


def _import(records_fn, data, sink, ledger, kind):
    ctx = MapContext()
    return run_import(((w, item) for w, _, item in records_fn(data, ctx)), sink, ledger, connector=kind, source="test")


def test_an_mbox_import_produces_its_messages_and_reports_rejects_by_line(sink, contacts, dlq, tmp_path):
    summary = _import(mbox.records, raw("inbox.mbox"), sink, Ledger(tmp_path / "mbox.ids"), "mbox")
    assert summary.as_row() == {"read": 3, "produced": 2, "duplicates": 0, "rejected": 1}
    assert summary.rejected == [("line 31", "no valid From address")]
    records = contacts.decoded(2)
    assert [r["thread"]["message_id"] for r in records if r["identities"][0]["value"] == "kasia.nowak@example.pl"] == [
        "<mbox.2@mail.example.pl>"
    ]
    assert {r["event_id"] for r in records} == set(summary.event_ids)
    (bad,) = dlq.read(1)
    assert dict((k, v.decode()) for k, v in bad.headers)["where"] == "line 31"


def test_re_importing_an_mbox_gives_the_same_event_ids_and_the_ledger_skips_them(sink, contacts, tmp_path):
    ledger = tmp_path / "mbox.ids"
    first = _import(mbox.records, raw("inbox.mbox"), sink, Ledger(ledger), "mbox")
    again = _import(mbox.records, raw("inbox.mbox"), sink, Ledger(ledger), "mbox")
    assert (again.produced, again.duplicates) == (0, 2)
    fresh = _import(mbox.records, raw("inbox.mbox"), sink, Ledger(None), "mbox")  # no ledger: produced again
    assert fresh.event_ids == first.event_ids
    assert sorted(r["event_id"] for r in contacts.decoded(4)) == sorted(first.event_ids * 2)


def test_re_importing_a_cdr_file_gives_the_same_event_ids(sink, contacts, dlq, tmp_path):
    first = _import(asterisk_cdr.records, raw("Master.csv"), sink, Ledger(None), "asterisk-cdr")
    second = _import(asterisk_cdr.records, raw("Master.csv"), sink, Ledger(None), "asterisk-cdr")
    assert first.as_row() == {"read": 5, "produced": 3, "duplicates": 0, "rejected": 2}
    assert second.event_ids == first.event_ids
    records = contacts.decoded(6)
    assert sorted(r["channel"] for r in records) == ["ivr", "ivr", "voice", "voice", "voice", "voice"]
    assert sorted(r["event_id"] for r in records) == sorted(first.event_ids * 2)
    assert [dict((k, v.decode()) for k, v in r.headers)["where"] for r in dlq.read(4)] == ["line 3", "line 5"] * 2


def test_the_cli_imports_with_a_progress_bar_and_a_summary_and_a_rerun_is_safe(connector_settings, topics):
    env = {**connector_settings.to_env(), "THREADLINE_LOG_FORMAT": "json", "COLUMNS": "200"}
    path = str(raw.__globals__["HERE"] / "Master.csv")
    cmd = [
        sys.executable,
        "-m",
        "threadline.tools.cli",
        "ingest",
        "asterisk-cdr",
        path,
        "--contacts-topic",
        topics["contacts"],
        "--dlq-topic",
        topics["dlq"],
    ]
    runs = [subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]

    def counts(stdout: str) -> list[str]:
        row = [line for line in stdout.splitlines() if line.startswith("│")][0]
        return [c.strip() for c in row.strip("│").split("│")]

    assert counts(runs[0].stdout) == ["5", "3", "0", "2"]  # read, produced, duplicates, rejected
    assert counts(runs[1].stdout) == ["5", "0", "3", "2"]
    assert "rejected line 3: neither src nor dst is a phone number" in " ".join(runs[0].stderr.split())
    assert ledger_path(connector_settings.state_dir, "asterisk-cdr").exists()


# ---------------------------------------------------------------------------------------- IMAP


@pytest.fixture(scope="module")
def imap_server():
    """pymap, a real IMAP4rev1 server, with its in-memory backend (user demouser / demopass)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pymap.main import main; sys.exit(main())",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-tls",
            "dict",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = imaplib.IMAP4("127.0.0.1", port, timeout=5)
            conn.login("demouser", "demopass")
            conn.logout()
            break
        except (OSError, imaplib.IMAP4.error):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "pymap did not answer"
            time.sleep(0.2)
    yield port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _append(port: int, mailbox: str, n: int, start: int) -> list[str]:
    conn = imaplib.IMAP4("127.0.0.1", port)
    conn.login("demouser", "demopass")
    conn.create(mailbox)
    ids = []
    for i in range(start, start + n):
        msg = EmailMessage()
        msg["From"] = f"Daan Jansen <daan.jansen{i}@example.nl>"
        msg["To"] = "support@shop.example"
        msg["Subject"] = f"Bestelling {700000 + i}"
        msg["Date"] = format_datetime(datetime(2026, 11, 22, 9, 0, tzinfo=UTC) + timedelta(minutes=i))
        msg["Message-ID"] = f"<imap.{i}@example.nl>"
        msg.set_content(f"Mijn bestelling {700000 + i} is nog niet bezorgd.\n")
        typ, _ = conn.append(mailbox, None, None, bytes(msg))
        assert typ == "OK"
        ids.append(msg["Message-ID"])
    conn.logout()
    return ids


def test_the_imap_poller_restarted_neither_skips_nor_repeats(imap_server, connector_settings, sink, contacts, tmp_path):
    from connectors.imap import ImapAccount, ImapPoller

    mailbox = f"Support{int(time.time() * 1000) % 10**8}"
    account = ImapAccount("127.0.0.1", imap_server, "demouser", "demopass", mailbox, ssl=False)
    first_ids = _append(imap_server, mailbox, 3, 0)
    poller = ImapPoller(account, sink, MapContext(), tmp_path)
    assert poller.poll_once().produced == 3
    assert poller.poll_once().produced == 0  # nothing new: nothing produced
    second_ids = _append(imap_server, mailbox, 2, 3)
    restarted = ImapPoller(account, sink, MapContext(), tmp_path)  # a new process, the same state folder
    summary = restarted.poll_once()
    assert (summary.read, summary.produced) == (2, 2)
    records = contacts.decoded(5)
    assert sorted(r["thread"]["message_id"] for r in records) == sorted(first_ids + second_ids)
    assert all(r["channel"] == "email" and r["metadata"]["source"] == "imap" for r in records)
    assert contacts.count() == 5


# ----------------------------------------------------------------------------------- generator


def test_generated_traffic_through_the_gateway_is_accepted(gateway, contacts, dlq):
    from connectors.generate import journeys, population, render
    from connectors.table import CONNECTORS
    from connectors.signatures import signed_headers
    from fixtures.providers import SECRETS

    steps = journeys(population(10, seed=9), seed=9)
    statuses = []
    for step in steps:
        connector, content = render(step)
        url = f"http://testserver/webhooks/{connector}"
        statuses.append(
            gateway.post(
                url,
                content=content,
                headers=signed_headers(connector, content, url, SECRETS[CONNECTORS[connector].secret]),
            ).status_code
        )
    assert set(statuses) == {202}
    records = contacts.decoded(len(steps))
    assert {r["channel"] for r in records} >= {"twitter", "email", "voice", "chat", "web_form", "whatsapp", "store"}
    assert dlq.count() == 0
