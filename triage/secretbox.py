"""Small secrets kept at rest (second-factor seeds), sealed with AES-256-GCM.

The key is derived (HKDF-SHA256) from ``MIATARI_SECRET_KEY``, so a copy of the
database alone (a backup, a dump) does not give anyone the seeds of the
authenticator apps. Each sealed value is bound to its place (``context``, e.g.
``"user:7:totp"``): a sealed value copied into another row does not open there.

Format: ``v1:`` + URL-safe base64 of (12-byte nonce, ciphertext and 16-byte tag).
A value without the ``v1:`` prefix is a seed stored before sealing existed; it is
returned as it is, and the caller seals it again on its next use.

Changing ``MIATARI_SECRET_KEY`` makes every sealed value unreadable
(:class:`SecretUnreadable`): the people concerned then need their second factor
reset by an administrator.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1:"
_NONCE_BYTES = 12
_SALT = b"miatari secretbox"
_INFO = b"miatari sealed secrets v1"


class SecretUnreadable(Exception):
    """A sealed value does not open with this key and context (key changed, or tampered with)."""


def _key(secret_key: str) -> bytes:
    if not secret_key:
        raise ValueError("a secret key is needed to seal secrets")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO)
    return hkdf.derive(secret_key.encode("utf-8"))


def is_sealed(value: str | None) -> bool:
    return value is not None and value.startswith(PREFIX)


def seal(secret_key: str, plaintext: str, *, context: str) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_key(secret_key)).encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal(secret_key: str, value: str, *, context: str) -> str:
    """The plaintext of a sealed value (a value stored before sealing is returned as it is)."""
    if not is_sealed(value):
        return value
    try:
        raw = base64.urlsafe_b64decode(value[len(PREFIX):].encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise SecretUnreadable("the sealed value is damaged") from exc
    if len(raw) <= _NONCE_BYTES + 16:
        raise SecretUnreadable("the sealed value is damaged")
    try:
        plain = AESGCM(_key(secret_key)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode("utf-8"))
    except InvalidTag as exc:
        raise SecretUnreadable("the sealed value does not open with this secret key") from exc
    return plain.decode("utf-8")
