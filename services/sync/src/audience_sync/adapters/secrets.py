"""Encryption at rest of integration API keys (Fernet, key derived from AUDIENCES_SECRET_KEY)."""

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# The api encrypts with the same derivation (audience_api.adapters.sync_store); a unit test
# checks that a key one side encrypts the other decrypts.
KDF_INFO = b"audiences/integration-keys/v1"


def integration_cipher(secret: str) -> Fernet:
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KDF_INFO).derive(
        secret.encode()
    )
    return Fernet(base64.urlsafe_b64encode(material))
