"""Identity links from folded profiles: how the sync service finds users it did not create."""

from collections.abc import Sequence

from audience_evaluator.ports import Document
from audience_evaluator.profiles import Profile
from audience_shared.events import TraitsIdentified, UserEventBase
from audience_shared.identity import IDENTITY_TRAITS, link_id, trait_identity_keys


def identity_links(profile: Profile, events: Sequence[UserEventBase]) -> list[Document]:
    """`identity_links` documents for the profile's identity traits, when these events set one.

    Written from the folded profile (not the event), so a key always names the traits the
    profile holds; only an identify naming external_id, email or phone costs a write.
    """
    if profile.get("merged_into") or not any(
        isinstance(event, TraitsIdentified)
        and any(name in event.traits for name in IDENTITY_TRAITS)
        for event in events
    ):
        return []
    project_id, user_id = profile["project_id"], profile["user_id"]
    return [
        {"_id": link_id(project_id, key), "project_id": project_id, "user_id": user_id}
        for key in trait_identity_keys(profile.get("traits") or {})
    ]
