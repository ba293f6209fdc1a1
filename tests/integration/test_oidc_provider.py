"""The test OpenID Connect provider (tests/support/oidc_provider.py) on loopback, driven as a relying party
would drive it: discovery, the sign-in form, the code exchange with the client secret, the ID token's
signature against the published keys, userinfo. The lab test signs in to the real Open WebUI through it."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.oidc_provider import Client, serve_provider

REDIRECT = "https://chat.example.org/oauth/oidc/login/callback"
PEOPLE = {"carol": {"email": "carol@example.org", "name": "Carol", "realm_access": {"roles": ["chat-admin"]},
                    "teams": ["staff"]}}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def call(url: str, form: dict | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with OPENER.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture()
def provider():
    with serve_provider("127.0.0.1", Client("webui", "right-secret", [REDIRECT]), PEOPLE) as idp:
        yield idp


def authorize(provider, username: str = "carol") -> str:
    metadata = json.loads(call(provider.discovery_url)[2])
    query = urllib.parse.urlencode({"response_type": "code", "client_id": "webui", "redirect_uri": REDIRECT,
                                    "scope": "openid email profile", "state": "st4te", "nonce": "n0nce"})
    url = f"{metadata['authorization_endpoint']}?{query}"
    status, _, form = call(url)
    assert status == 200 and b"<form" in form
    status, headers, _ = call(url, {"username": username})
    assert status == 302, status
    location = urllib.parse.urlsplit(headers["Location"])
    params = dict(urllib.parse.parse_qsl(location.query))
    assert location._replace(query="").geturl() == REDIRECT and params["state"] == "st4te"
    return params["code"]


def basic(secret: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"webui:{secret}".encode()).decode()}


def test_code_flow_gives_a_signed_id_token_with_every_claim(provider):
    metadata = json.loads(call(provider.discovery_url)[2])
    assert metadata["issuer"] == provider.issuer and provider.discovery_url.startswith("http://127.0.0.1:")
    code = authorize(provider)
    status, _, body = call(metadata["token_endpoint"], {"grant_type": "authorization_code", "code": code,
                                                        "redirect_uri": REDIRECT}, basic("right-secret"))
    assert status == 200, body
    token = json.loads(body)
    keys = KeySet.import_key_set(json.loads(call(metadata["jwks_uri"])[2]))
    claims = jwt.decode(token["id_token"], keys).claims
    assert claims["iss"] == provider.issuer and claims["aud"] == ["webui"] and claims["nonce"] == "n0nce"
    assert claims["email"] == "carol@example.org" and claims["teams"] == ["staff"]
    assert claims["realm_access"] == {"roles": ["chat-admin"]} and claims["sub"] == "carol"
    status, _, body = call(metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {token['access_token']}"})
    assert status == 200 and json.loads(body)["teams"] == ["staff"]


def test_a_wrong_secret_a_reused_code_and_an_unknown_person_are_refused(provider):
    code = authorize(provider)
    token_url = f"{provider.issuer}/token"
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    assert call(token_url, form, basic("wrong-secret"))[0] == 401
    assert call(token_url, form, basic("right-secret"))[0] == 200
    assert call(token_url, form, basic("right-secret"))[0] == 400
    query = urllib.parse.urlencode({"response_type": "code", "client_id": "webui", "redirect_uri": REDIRECT,
                                    "scope": "openid"})
    assert call(f"{provider.issuer}/authorize?{query}", {"username": "nobody"})[0] == 403
    assert provider.signed_in == ["carol"]
