import pytest

from shared.secrets import KeyRing, SecretsError, new_webhook_secret


def test_seal_and_open_with_rotation():
    old_spec = KeyRing.new_key_spec("k1")
    old = KeyRing.parse(old_spec)
    sealed = old.seal("s3cret", "schedule-1")
    assert sealed.startswith("k1:") and "s3cret" not in sealed
    both = KeyRing.parse(f"{KeyRing.new_key_spec('k2')},{old_spec}")
    assert both.open(sealed, "schedule-1") == "s3cret"  # old values stay readable after rotation
    assert both.seal("x", "c").startswith("k2:")


def test_tampering_and_wrong_context_are_detected():
    ring = KeyRing.parse(KeyRing.new_key_spec("k1"))
    sealed = ring.seal("s3cret", "schedule-1")
    with pytest.raises(SecretsError):
        ring.open(sealed, "schedule-2")
    with pytest.raises(SecretsError, match="unknown key"):
        ring.open("k9:" + sealed.split(":", 1)[1], "schedule-1")


def test_bad_key_rings_are_refused():
    for text in ("", "k1:notbase64!", "k1:" + "QUFB", "nokid"):
        with pytest.raises(SecretsError):
            KeyRing.parse(text)


def test_webhook_secrets_are_standard():
    secret = new_webhook_secret()
    assert secret.startswith("whsec_") and secret != new_webhook_secret()
