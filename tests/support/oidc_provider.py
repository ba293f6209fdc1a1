"""A local OpenID Connect provider for tests, built on Authlib's authorization server (Flask integration).

One registered client, an in-memory list of people and the authorization-code flow with signed ID
tokens (RS256, keys published at ``jwks_uri``), discovery at ``/.well-known/openid-configuration`` and a
userinfo endpoint. Signing in is a form: ``GET /authorize`` shows it, ``POST /authorize`` with
``username`` (and the same query) sends the browser back to the client's redirect URI with a code.
Every claim of a person (``roles``, ``groups`` ...) goes into the ID token and userinfo.

Example::

    with serve_provider("10.213.0.1", Client("webui", "s3cret", ["https://h/oauth/oidc/callback"]),
                        {"carol": {"email": "carol@example.org", "name": "Carol", "groups": ["staff"]}}) as idp:
        idp.discovery_url   # http://10.213.0.1:<port>/.well-known/openid-configuration
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector, current_token
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, request
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

SCOPES = "openid email profile"


@dataclass
class Client:
    """The one registered client (a confidential web app)."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in SCOPES.split())

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    nonce: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class Token:
    access_token: str
    client_id: str
    scope: str
    user: str
    expires_at: int

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_at - int(time.time())

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return False


class Provider:
    """The provider's state: its client, people, issued codes and tokens, and its signing key."""

    def __init__(self, issuer: str, client: Client, people: dict[str, dict[str, Any]]):
        self.issuer = issuer
        self.client = client
        self.people = people
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Token] = {}
        self.signed_in: list[str] = []
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def claims(self, user: str) -> dict[str, Any]:
        return {"sub": user, **self.people[user]}

    def metadata(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "userinfo_endpoint": f"{self.issuer}/userinfo",
                "jwks_uri": f"{self.issuer}/jwks", "response_types_supported": ["code"],
                "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": SCOPES.split(),
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]}


def app_of(provider: Provider) -> Flask:
    """The provider's Flask app: discovery, jwks, authorize (form and grant), token, userinfo."""
    app = Flask(__name__)

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def save_authorization_code(self, code, req):
            provider.codes[code] = Code(code, req.client.client_id, req.payload.redirect_uri, req.payload.scope,
                                        req.user, req.payload.data.get("nonce"))

        def query_authorization_code(self, code, client):
            found = provider.codes.get(code)
            return found if found and found.client_id == client.client_id else None

        def delete_authorization_code(self, authorization_code):
            provider.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code):
            return authorization_code.user

    class IdToken(OpenIDCode):
        def exists_nonce(self, nonce, req):
            return any(c.nonce == nonce for c in provider.codes.values())

        def resolve_client_private_key(self, client):
            return provider.key

        def get_client_claims(self, client):
            return {"iss": provider.issuer, "aud": [client.client_id]}

        def get_client_algorithm(self, client):
            return "RS256"

        def get_encode_header(self, client):
            return {"alg": "RS256", "kid": "test-key"}

        def generate_user_info(self, user, scope):
            return UserInfo(provider.claims(user))

    def save_token(token: dict, req) -> None:
        provider.tokens[token["access_token"]] = Token(token["access_token"], req.client.client_id, token["scope"],
                                                       req.user, int(time.time()) + token["expires_in"])

    server = AuthorizationServer(app, query_client=lambda cid: provider.client if cid == provider.client.client_id else None,
                                 save_token=save_token)
    server.register_grant(CodeGrant, [IdToken(require_nonce=False)])

    class Validator(BearerTokenValidator):
        def authenticate_token(self, token_string):
            return provider.tokens.get(token_string)

    protect = ResourceProtector()
    protect.register_token_validator(Validator())

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return jsonify(provider.metadata())

    @app.get("/jwks")
    def jwks():
        return jsonify(KeySet([provider.key]).as_dict(private=False))

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize():
        if request.method == "GET":
            server.get_consent_grant(end_user=None)
            return '<form method="post"><input name="username"><button>Sign in</button></form>'
        user = request.form.get("username", "")
        if user not in provider.people:
            return "unknown user", 403
        provider.signed_in.append(user)
        return server.create_authorization_response(grant_user=user)

    @app.post("/token")
    def token():
        return server.create_token_response()

    @app.get("/userinfo")
    @protect("openid")
    def userinfo():
        return jsonify(provider.claims(current_token.user))

    return app


@contextmanager
def serve_provider(address: str, client: Client, people: dict[str, dict[str, Any]]) -> Iterator[Provider]:
    """Run a provider over plain HTTP on ``address`` (a free port) for the ``with`` block.

    Authlib's server refuses plain HTTP beyond loopback unless AUTHLIB_INSECURE_TRANSPORT is set: the lab
    bridge's gateway is a private link between this machine and its lab hosts, so it is set while the
    provider runs (nothing else in the test process uses Authlib).
    """
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    server = make_server(address, 0, Flask(__name__), threaded=True)
    provider = Provider(f"http://{address}:{server.server_port}", client, people)
    server.app = app_of(provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        thread.join()
        os.environ.pop("AUTHLIB_INSECURE_TRANSPORT", None)
