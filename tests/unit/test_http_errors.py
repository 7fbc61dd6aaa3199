"""threadline/http.py: an unexpected error is a JSON 500 logged without the input it quotes;
error bodies stay small; JSON we cannot carry is named."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from connectors.contact import IdentityIn
from threadline.http import MAX_FIELDS, BadJson, ServerErrors, error_response, load_json
from threadline.logging import configure_logging
from threadline.settings import LogFormat, Settings

VICTIM = "victim.identity.value@example.it"


def test_a_500_from_a_pydantic_error_logs_its_type_and_route_not_the_identity_value(restore_logging, capfd):
    configure_logging(Settings(log_format=LogFormat.JSON), force=True)
    app = FastAPI()
    app.add_middleware(ServerErrors, name="unit")

    @app.get("/boom/{n}")
    async def boom(n: int):
        IdentityIn(kind="email", value=VICTIM + "x" * 400)  # over 320: pydantic quotes the value

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom/1")
    assert r.status_code == 500 and r.json() == {
        "error": "internal_error",
        "detail": "an unexpected error; it was logged",
    }
    out, err = capfd.readouterr()
    assert "unhandled_error" in err and "ValidationError" in err and "/boom/{n}" in err
    assert VICTIM not in out + err


def test_an_error_body_lists_at_most_max_fields_and_counts_the_rest():
    fields = [{"field": f"f{i}" + "x" * 1000, "problem": "bad"} for i in range(60_000)]
    body = error_response(400, "invalid_body", "bad", fields).body
    assert len(body) < 10_000
    assert b'"fields_omitted":' + str(60_000 - MAX_FIELDS).encode() in body


@pytest.mark.parametrize(
    "raw, field",
    [
        (b"[" * 100_000 + b"]" * 100_000, "<body>"),
        (b'{"a":' * 70 + b"1" + b"}" * 70, "a." * 63 + "a"),
        (b'{"a": [1, "\\ud800"]}', "a.1"),
        (b'{"\\udc00": 1}', "<body>"),
        (b"{not json", "<body>"),
    ],
)
def test_json_we_cannot_carry_is_named(raw, field):
    with pytest.raises(BadJson) as info:
        load_json(raw)
    assert info.value.field == field


def test_surrogate_pairs_are_fine():
    assert load_json(b'{"t": "\\ud83d\\ude00"}') == {"t": "\U0001f600"}


def test_the_depth_limit_holds_exactly_whatever_the_brackets_inside_strings():
    from threadline.http import MAX_JSON_DEPTH

    deepest = b'{"a":' * (MAX_JSON_DEPTH - 1) + b"[1]" + b"}" * (MAX_JSON_DEPTH - 1)
    assert load_json(deepest) is not None  # MAX_JSON_DEPTH containers: fine
    with pytest.raises(BadJson, match="nested deeper"):
        load_json(b"[" + deepest + b"]")
    assert load_json(b'{"t": "' + b"{[" * 100 + b'"}') == {"t": "{[" * 100}  # brackets in a string: not nesting
