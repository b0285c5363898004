"""Secrets at rest: AES-256-GCM with a key ring, and webhook secrets in the Standard Webhooks format.

``SECRETS_KEY`` is a comma-separated list of ``kid:base64key`` (32-byte keys); the first encrypts, all
decrypt, so a key is rotated by putting a new one first and re-encrypting at leisure. Each stored value
carries the id of the key that sealed it: ``kid:base64(nonce || ciphertext)``.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import InvalidInput
from shared.model import SECRET_MASK, HttpTarget, Target
from shared.settings import Settings
from shared.validation import url_origin

WEBHOOK_SECRET_PREFIX = "whsec_"


class SecretsError(ValueError):
    """A key ring or a sealed value that cannot be used."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    keys: dict[str, bytes]
    current: str

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            kid, sep, encoded = item.partition(":")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error as exc:
                raise SecretsError(f"key {kid!r} is not base64") from exc
            if not sep or not kid or len(key) != 32:
                raise SecretsError(f"{kid or item!r}: expected kid:base64 of a 32-byte key")
            keys[kid] = key
            order.append(kid)
        if not order:
            raise SecretsError("no key")
        return cls(keys, order[0])

    @staticmethod
    def new_key_spec(kid: str) -> str:
        return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"

    def seal(self, plaintext: str, context: str) -> str:
        """Encrypt; ``context`` (e.g. the schedule id) is authenticated, so a value cannot be moved to another row."""
        nonce = os.urandom(12)
        sealed = AESGCM(self.keys[self.current]).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.current}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, value: str, context: str) -> str:
        kid, _, encoded = value.partition(":")
        key = self.keys.get(kid)
        if key is None:
            raise SecretsError(f"sealed with unknown key {kid!r}")
        raw = base64.b64decode(encoded)
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag as exc:
            raise SecretsError("sealed value does not authenticate") from exc


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def seal_target(target: Target, keys: KeyRing, schedule_id: str, previous: Target | None) -> Target:
    """``target`` as stored: secret header values sealed; a masked value keeps the ``previous`` sealed one.

    A kept value stays bound to the origin (scheme, host, port) it was set for: an editor who may change the URL
    but was never shown the secret must not be able to send it to a host of their choosing.
    """
    if not isinstance(target, HttpTarget) or not target.http.secret_headers:
        return target
    kept = previous.http.secret_headers if isinstance(previous, HttpTarget) else {}
    masked = [name for name, value in target.http.secret_headers.items() if value == SECRET_MASK]
    if masked and isinstance(previous, HttpTarget):
        was, now = url_origin(previous.http.url), url_origin(target.http.url)
        if was != now:
            raise InvalidInput.field(
                "target.http.secretHeaders",
                f"the URL's origin changed from {_show(was)} to {_show(now)}: send the values of "
                f"{', '.join(sorted(masked))} again (a kept secret only goes to the origin it was set for)",
            )
    sealed = {}
    for name, value in target.http.secret_headers.items():
        if value == SECRET_MASK:
            if name not in kept:
                raise InvalidInput.field(f"target.http.secretHeaders.{name}", "is masked but has no stored value")
            sealed[name] = kept[name]
        else:
            sealed[name] = keys.seal(value, f"{schedule_id}:{name}")
    return _with_secret_headers(target, sealed)


def open_target(target: Target, keys: KeyRing, schedule_id: str) -> Target:
    """``target`` as sent: secret header values in clear (the worker, at delivery)."""
    if not isinstance(target, HttpTarget) or not target.http.secret_headers:
        return target
    opened = {n: keys.open(v, f"{schedule_id}:{n}") for n, v in target.http.secret_headers.items()}
    return _with_secret_headers(target, opened)


def mask_target(target: Target) -> Target:
    """``target`` as the API shows it: secret header values replaced by the mask."""
    if not isinstance(target, HttpTarget) or not target.http.secret_headers:
        return target
    return _with_secret_headers(target, dict.fromkeys(target.http.secret_headers, SECRET_MASK))


def _with_secret_headers(target: HttpTarget, values: dict[str, str]) -> HttpTarget:
    return HttpTarget(http=msgspec.structs.replace(target.http, secret_headers=values))


# --- the configured key ring -------------------------------------------------------------------------------

DEV_SECRETS_FILE = "dev-secrets-key"


def dev_secrets_spec(data_dir: Path) -> str:
    path = data_dir / DEV_SECRETS_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(KeyRing.new_key_spec("dev"))
        tmp.chmod(0o600)
        tmp.replace(path)  # atomic: concurrent first uses agree on one key
    return path.read_text().strip()


def key_ring(settings: Settings, required: bool = True) -> KeyRing:
    """The configured key ring. Not ``required`` (workers): without one, an empty ring that opens nothing, so
    schedules without secrets are still delivered and the others fail with a clear error."""
    if settings.secrets_key:
        return KeyRing.parse(settings.secrets_key)
    if settings.auth_mode == "dev":
        return KeyRing.parse(dev_secrets_spec(settings.dev_dir))
    if not required:
        return KeyRing({}, "")
    raise SystemExit("SECRETS_KEY is required unless AUTH_MODE=dev")


def _show(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    return f"{scheme}://{host}:{port}"


REDACTED = "[redacted]"


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every occurrence of each secret (longest first, so one inside another goes too) replaced."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
