"""Identity keys (external id, email, phone) and their links to users, normalized one way."""

import re
from collections.abc import Mapping
from typing import Any

# Traits that identify a person: the sync service maps list records to users by them.
IDENTITY_TRAITS = ("external_id", "email", "phone")

_PHONE_NOISE = re.compile(r"[\s().-]")


def normalize_email(value: str) -> str:
    return value.strip().lower()


def normalize_phone(value: str) -> str:
    return _PHONE_NOISE.sub("", value.strip())


def identity_keys(
    external_id: str | None = None, email: str | None = None, phone: str | None = None
) -> list[str]:
    """Keys in the order they are trusted: `external_id:E1`, `email:a@b.c`, `phone:+1555...`."""
    keys = []
    if external_id:
        keys.append(f"external_id:{external_id}")
    if email and normalize_email(email):
        keys.append(f"email:{normalize_email(email)}")
    if phone and normalize_phone(phone):
        keys.append(f"phone:{normalize_phone(phone)}")
    return keys


def trait_identity_keys(traits: Mapping[str, Any]) -> list[str]:
    """The identity keys a profile's traits carry (a non-string value carries none)."""

    def text(name: str) -> str | None:
        value = traits.get(name)
        return value if isinstance(value, str) else None

    return identity_keys(text("external_id"), text("email"), text("phone"))


def link_id(project_id: str, key: str) -> str:
    """`_id` of the `identity_links` document of a key: every lookup of a key pins `_id`."""
    return f"{project_id}|{key}"
