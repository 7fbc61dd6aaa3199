"""threadline/tools/demo.py: the local demo's secrets, privacy keys included, made once in the
state folder and never given as values."""

from __future__ import annotations

import os

from pydantic import SecretStr

from schemas.keystore import make_keyring, pseudonymizer_from, wrapper_from
from threadline.settings import Settings
from threadline.tools.demo import with_demo_secrets


def test_the_local_demo_runs_with_privacy_on_under_keys_made_once_in_the_state_folder(tmp_path):
    base = Settings(home=tmp_path)
    assert make_keyring(base) is None  # privacy off unless keys are given
    first = with_demo_secrets(base)
    key_file = first.privacy.master_key_file
    assert key_file is not None and key_file.parent == first.state_dir / "secrets"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert first.privacy.master_key is None  # a file, not a value in the settings' environment
    assert wrapper_from(first) is not None and pseudonymizer_from(first) is not None
    again = with_demo_secrets(base)
    assert again.privacy.master_key_file.read_text() == key_file.read_text()  # kept: records stay readable
    assert again.privacy.pseudonym_key_file.read_text() != key_file.read_text()


def test_configured_privacy_keys_are_used_as_given(tmp_path):
    given = SecretStr(os.urandom(32).hex())
    s = with_demo_secrets(Settings(home=tmp_path, privacy_master_key=given, privacy_pseudonym_key=given))
    assert s.privacy.master_key_file is None and s.privacy.master_key == given
    assert not (s.state_dir / "secrets" / "privacy_master_key").exists()
