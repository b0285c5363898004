"""The key ring for secrets at rest: SECRETS_KEY, or in dev mode a key kept under DEV_DATA_DIR."""

from __future__ import annotations

import uuid
from pathlib import Path

from shared.secrets import KeyRing
from shared.settings import Settings

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
