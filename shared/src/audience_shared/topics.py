"""Kafka topic names and partition counts: the one place they are spelled."""

from enum import StrEnum


class Topic(StrEnum):
    """Versioned topic names; a breaking payload change gets a new name."""

    USER_EVENTS = "user.events.v1"
    AUDIENCE_CHANGES = "audience.changes.v1"
    MEMBERSHIP_CHANGES = "membership.changes.v1"
    DEAD_LETTERS = "dead.letters.v1"
    SYNC_REQUESTS = "sync.requests.v1"


# User data is keyed by user id, so more partitions means more evaluator parallelism.
PARTITIONS: dict[Topic, int] = {
    Topic.USER_EVENTS: 6,
    Topic.AUDIENCE_CHANGES: 3,
    Topic.MEMBERSHIP_CHANGES: 6,
    Topic.DEAD_LETTERS: 1,
    Topic.SYNC_REQUESTS: 3,
}

EVALUATOR_GROUP = "audiences-evaluator"
