"""The local stack's stand-in for Google's ID tokens: a key of its own that signs tokens.

In GCP a caller gets an ID token from Google (`gcloud auth print-identity-token`, the
metadata server) whose audience is the function's URL, and Cloud Run checks it. Locally
this issuer mints the same kind of token (RS256 JWT: iss, aud, email, sub, iat, exp) for
a named caller, and `tuning.local.front_door` checks it as Cloud Run would. The key lives
in the stack's own folder (`TUNING_LOCAL_ISSUER_KEY`), readable by its owner only.

    issuer = LocalIssuer.create(Path(".local/issuer-key.pem"))
    token = issuer.mint("alice@example.com", audience="http://127.0.0.1:8101")
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

ISSUER = "https://issuer.local.gemma-tuning"
ISSUER_KEY_ENV = "TUNING_LOCAL_ISSUER_KEY"
KEY_ID = "local-1"
TOKEN_LIFETIME_SECONDS = 3600  # as Google's ID tokens


class LocalIssuer:
    """Signs and checks the local stack's ID tokens."""

    def __init__(self, key_path: Path | str) -> None:
        self.key_path = Path(key_path)
        self._pem = self.key_path.read_bytes()

    def __repr__(self) -> str:
        return f"LocalIssuer({str(self.key_path)!r})"

    @classmethod
    def create(cls, key_path: Path | str) -> LocalIssuer:
        """The issuer whose key is at `key_path`, made there first when absent."""
        path = Path(key_path)
        if not path.is_file():
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            os.replace(partial, path)  # atomic: a concurrent reader sees the whole key or none
        return cls(path)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> LocalIssuer | None:
        path = (os.environ if environ is None else environ).get(ISSUER_KEY_ENV)
        return cls(path) if path and Path(path).is_file() else None

    def public_key_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(self._pem, password=None)
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def mint(
        self,
        caller: str,
        *,
        audience: str,
        lifetime_seconds: int = TOKEN_LIFETIME_SECONDS,
        now: float | None = None,
        **claims: Any,
    ) -> str:
        """An ID token naming `caller` for `audience`."""
        from google.auth import crypt, jwt

        issued = int(time.time() if now is None else now)
        payload = {
            "iss": ISSUER,
            "aud": audience,
            "sub": caller,
            "email": caller,
            "email_verified": True,
            "iat": issued,
            "exp": issued + lifetime_seconds,
            **claims,
        }
        signer = crypt.RSASigner.from_string(self._pem, key_id=KEY_ID)
        return jwt.encode(signer, payload).decode()

    def verify(self, token: str, *, audience: str) -> dict[str, Any]:
        """The claims of a token this issuer signed for `audience`; ValueError otherwise."""
        from google.auth import exceptions, jwt

        try:
            claims = jwt.decode(token, certs={KEY_ID: self.public_key_pem()}, audience=audience)
        except exceptions.GoogleAuthError as error:  # e.g. a malformed token
            raise ValueError(str(error)) from None
        if claims.get("iss") != ISSUER:
            raise ValueError(f"the token was not issued by {ISSUER}")
        return dict(claims)
