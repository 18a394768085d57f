"""Outbox entries: the membership changes a profile write decided, kept in it until delivered."""

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from audience_evaluator.profiles import Profile
from audience_shared.events import MembershipChanged


def change_event_id(profile_id: str, audience_id: str, version: int) -> str:
    """The event id of the change a profile version made to an audience (at most one): the same
    change decided again, as a retry or replay does, keeps its id."""
    digest = hashlib.blake2b(f"{profile_id}|{audience_id}|{version}".encode(), digest_size=16)
    return f"evt_{digest.hexdigest()}"


# An outbox entry, one string (<aud> is the audience id, last so it may hold anything):
# "<+ entered or - exited><microseconds since EPOCH>|<version>|<reason>|<id>|<aud>", where <id> is
# the event id if it is not derived, then "@" and the token of the write that decided the change
# if this entry was carried over from an earlier write (an entry decided by the write that holds
# it has the token of its profile, `written_by`).
ENTERED_MARK, EXITED_MARK = "+", "-"
DECIDED_BY_MARK = "@"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def stored_change(
    change: MembershipChanged, profile_id: str, decided_by: str | None = None, fresh: bool = False
) -> str:
    """A change as its profile's outbox keeps it: one string, without what the profile itself
    holds (project, user) or what follows from the rest (an event id derived from profile,
    audience and version). FerretDB stores a type schema beside every field of every
    sub-document, so an entry kept as a document took ten times the bytes of its data, and the
    outbox was most of a profile, written and read on every change. A `fresh` change (decided by
    the write that stores it) has a derived id: not checked again, it costs a hash."""
    derived = fresh or change.event_id == change_event_id(
        profile_id, change.audience_id, change.version
    )
    mark = ENTERED_MARK if change.type == "membership.entered" else EXITED_MARK
    micros = (change.occurred_at - EPOCH) // MICROSECOND
    event_id = "" if derived else change.event_id  # a random id, from before ids were derived
    if decided_by:
        event_id += DECIDED_BY_MARK + decided_by
    return f"{mark}{micros}|{change.version}|{change.reason}|{event_id}|{change.audience_id}"


def deciding_write(profile: Profile, stored: str | dict[str, Any], version: int) -> str | None:
    """The token of the write that decided an outbox entry's change (of `version`), if known:
    the profile's own write, or the one the entry names; entries older versions carried over
    name none."""
    if isinstance(stored, str):
        _, separator, token = stored.split("|", 4)[3].partition(DECIDED_BY_MARK)
        if separator:
            return token
    if version == profile.get("version"):
        written_by: str | None = profile.get("written_by")
        return written_by
    return None


def restored_change(profile: Profile, stored: str | dict[str, Any]) -> MembershipChanged:
    """The change an outbox entry stands for (entries older versions wrote as documents too)."""
    if isinstance(stored, str):
        head, version, reason, event_id, audience_id = stored.split("|", 4)
        event_id = event_id.partition(DECIDED_BY_MARK)[0]
        stored = {
            "type": "membership.entered" if head[0] == ENTERED_MARK else "membership.exited",
            "occurred_at": EPOCH + int(head[1:]) * MICROSECOND,
            "version": int(version),
            "reason": reason,
            "audience_id": audience_id,
            **({"event_id": event_id} if event_id else {}),
        }
    event_id = stored.get("event_id") or change_event_id(
        profile["_id"], stored["audience_id"], stored["version"]
    )
    return MembershipChanged.model_validate(
        {
            **stored,
            "project_id": profile["project_id"],
            "user_id": profile["user_id"],
            "event_id": event_id,
        }
    )


def outbox_audience(stored: str | dict[str, Any]) -> str:
    """The audience an outbox entry changes, without restoring the whole change."""
    if isinstance(stored, str):
        return stored.split("|", 4)[4]
    return str(stored["audience_id"])


def outbox_entry_key(stored: str | dict[str, Any]) -> tuple[str, int]:
    """(audience id, version) of an outbox entry: a profile version changes an audience at most
    once, so this names the change within its profile."""
    if isinstance(stored, str):
        _head, version, _rest = stored.split("|", 2)
        return outbox_audience(stored), int(version)
    return str(stored["audience_id"]), int(stored["version"])


# A write that carries over an outbox not known to be delivered when it was read names, in
# `carried_from`, the writes that held that outbox before it ("<version>|<token>", oldest first):
# any of them may have delivered it since. Whether a change went out is then told by the
# delivered markers of the writes that held it (see MembershipService._delivered_elsewhere).
WRITER_MARK = "|"


def outbox_writers(profile: Profile) -> list[tuple[int, str]]:
    """(version, token) of each write that held this profile's outbox, oldest first: those it
    was carried from, then the profile's own write."""
    writers = []
    for named in profile.get("carried_from") or ():
        version, _, token = named.partition(WRITER_MARK)
        writers.append((int(version), token))
    if profile.get("written_by"):
        writers.append((profile.get("version", 0), profile["written_by"]))
    return writers


def carried_from(read: Profile, since_version: int) -> list[str]:
    """What a write carrying over the read profile's outbox names: the writes that held it, from
    the version that decided its oldest change on."""
    return [
        f"{version}{WRITER_MARK}{token}"
        for version, token in outbox_writers(read)
        if version >= since_version
    ]
