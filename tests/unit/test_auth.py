"""threadline/auth.py: token tables from settings or files; errors name the entry, never the token."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from threadline import auth
from threadline.errors import ConfigError
from threadline.settings import Settings

SUPPORT, BOTH = "support-token-0123456789", "sales-marketing-token-0123456789"


def test_a_table_from_a_file_grants_each_token_its_scopes(tmp_path):
    path = tmp_path / "api_tokens"
    path.write_text(f"# the API's tokens\nsupport={SUPPORT}\n\nsales, marketing = {BOTH}\n")
    tokens = auth.api_tokens(Settings(api_tokens_file=path))
    assert tokens.grants(SUPPORT) == {"support"} and tokens.grants(BOTH) == {"sales", "marketing"}
    assert tokens.grants("support-token-012345678") is None and tokens.grants(None) is None
    assert auth.token_for(Settings(api_tokens_file=path), "api_tokens", "marketing") == BOTH


def test_a_table_in_a_variable_separates_entries_with_semicolons():
    tokens = auth.contact_tokens(Settings(contact_tokens=SecretStr(f"chat,web-form={SUPPORT};api={BOTH}")))
    assert tokens.grants(SUPPORT) == {"chat", "web-form"} and tokens.grants(BOTH) == {"api"}


@pytest.mark.parametrize(
    "table, problem",
    [
        (f"owner={SUPPORT}", "unknown owner"),
        ("support=short", "16+ characters"),
        (SUPPORT, "expected <name>"),
        (f"support={SUPPORT};sales={SUPPORT}", "given twice"),
    ],
)
def test_a_bad_table_is_a_config_error_that_never_shows_the_token(table, problem):
    with pytest.raises(ConfigError) as info:
        auth.api_tokens(Settings(api_tokens=SecretStr(table)))
    assert (
        problem in str(info.value) and SUPPORT not in str(info.value) and "short" not in str(info.value).split(":")[-1]
    )


def test_no_table_means_no_token_is_valid():
    assert not auth.api_tokens(Settings()) and auth.api_tokens(Settings()).grants(SUPPORT) is None


def test_admin_reads_every_scope_and_any_is_any_token():
    assert auth.allows(frozenset({"admin"}), "sales") and auth.allows(frozenset({"support"}), auth.ANY)
    assert not auth.allows(frozenset({"support"}), "sales")
