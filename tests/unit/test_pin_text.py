"""How ``ollastack pin`` edits a stack file: two values change, every other byte stays."""

from __future__ import annotations

import tomllib

import pytest

from ollastack.pin import pinned_text, release_version

SHA = "b" * 64


def test_values_change_in_place_with_comments_order_and_spacing_kept():
    text = ('# top comment\n[stack]\nname = "demo"   # aligned comment\n\n'
            '[ollama]\n# why this pin\nversion = "0.13.3"\nmodels = ["llama3.2:1b"]\nsha256 = "' + "a" * 64 + '"  # from sha256sum.txt\n\n'
            '[nginx]\nclient_max_body_size = "50m"\n')
    assert pinned_text(text, "0.14.0", SHA) == text.replace('"0.13.3"', '"0.14.0"').replace("a" * 64, SHA)


def test_missing_keys_join_their_table():
    text = '[ollama]\nmodels = []\n\n[nginx]\nclient_max_body_size = "50m"\n'
    data = tomllib.loads(pinned_text(text, "0.14.0", SHA))
    assert data == {"ollama": {"models": [], "version": "0.14.0", "sha256": SHA}, "nginx": {"client_max_body_size": "50m"}}


@pytest.mark.parametrize("text", [
    'ollama = { version = "0.13.3", models = [] }\n[stack]\nname = "demo"\n',
    'ollama.version = "0.13.3"\nollama.models = []\n[stack]\nname = "demo"\n',
])
def test_inline_and_dotted_tables_stay_what_they_are(text):
    pinned = pinned_text(text, "0.14.0", SHA)
    assert tomllib.loads(pinned) == {"ollama": {"version": "0.14.0", "models": [], "sha256": SHA}, "stack": {"name": "demo"}}
    assert pinned.startswith("ollama") and "[ollama]" not in pinned


@pytest.mark.parametrize("text, version", [("0.14.0", "0.14.0"), ("v0.34.2", "0.34.2"), ("10.0.12", "10.0.12")])
def test_release_versions(text, version):
    assert release_version(text) == version


@pytest.mark.parametrize("text", ["0.14", "V0.14.0", " 0.14.0", "0.14.0 ", "0.14.0\n", "0.1.2.3", "0.14.0-rc1", "1234567.0.0"])
def test_anything_else_is_not_a_release_version(text):
    with pytest.raises(ValueError, match="not an Ollama release number"):
        release_version(text)
