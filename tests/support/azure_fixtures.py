"""Fixtures of the tests that drive the real Azure SDK against the ARM stand-in: its CA, an SSH key pair,
and the running emulator with the environment that sends the SDK's sign-in and requests to it.

Example (a test module)::

    from tests.support.azure_fixtures import arm, ca, keys  # noqa: F401 (fixtures)
"""

from __future__ import annotations

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ollastack.cloud import plan
from tests.support.azure_emulator import AzureEmulator

SUB = "00000000-0000-0000-0000-00000000c0de"
SECRET = "emulator-secret"


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def keys(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = tmp_path / "id_ed25519", tmp_path / "id_ed25519.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b" test@ollastack\n")
    return public, private


@pytest.fixture
def arm(ca, monkeypatch, tmp_path):
    with AzureEmulator(ca, client_secret=SECRET) as emulator:
        for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.ca_bundle())
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", emulator.url)
        monkeypatch.setenv("AZURE_TENANT_ID", "ollastack-tests")
        monkeypatch.setenv("AZURE_CLIENT_ID", emulator.client_id)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
        # Only EnvironmentCredential: no managed-identity probe of 169.254.169.254, no az CLI.
        monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential")
        monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
        monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv(plan.POLL_ENV, "0")
        yield emulator
