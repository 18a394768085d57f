"""Every collection and index of the Audiences database, in one place.

Each service applies the whole schema at startup with `ensure_schema`, which issues DDL only for
what is missing: the first service to start creates everything, the others change nothing.
"""

from pymongo import ASCENDING

from audience_shared.store import IndexKeys

A = ASCENDING

INDEXES: dict[str, list[IndexKeys]] = {
    "organizations": [],
    "projects": [[("organization_id", A)]],
    "api_keys": [[("organization_id", A), ("project_id", A)]],
    "audiences": [
        [("project_id", A), ("archived", A), ("_id", A)],
        [("project_id", A), ("sync_source.list_id", A)],
        [("project_id", A), ("group_id", A)],
    ],
    "audience_state": [],
    # The evaluator's exactly-once member counters: an audience's base document (`_id` = audience
    # id) and one per counting slot (see counters.py).
    "audience_counts": [],
    # Size-history points, `_id = f"{audience_id}|{hour}"`: read by enumerating the hours.
    "audience_history": [],
    # One document per requested refresh, `_id = f"{audience_id}|{rule_version}"`: inserting it
    # is the claim (a duplicate _id is atomic on every store; a guarded update is not on FerretDB).
    "audience_refreshes": [],
    # Seed 002 groups (loyalty tiers): the group's audiences carry its id in `group_id`.
    "audience_groups": [],
    # Seed 003 segment numbers: `{project_id}|next` proposes, `{project_id}|{no}` claims.
    "segment_numbers": [],
    "profiles": [
        [("project_id", A), ("_id", A)],
        [("due_at", A)],
        # Members of an audience in user_id order: a membership is held by its profile.
        [("audiences", A), ("user_id", A)],
        [("lists", A)],
        [("project_id", A), ("traits.external_id", A)],
        [("project_id", A), ("traits.email", A)],
        [("project_id", A), ("traits.phone", A)],
    ],
    "sync_runs": [[("status", A), ("created_at", A)], [("audience_id", A), ("created_at", A)]],
    "imports": [[("status", A), ("created_at", A)], [("audience_id", A), ("created_at", A)]],
    "exports": [[("status", A), ("created_at", A)], [("audience_id", A), ("created_at", A)]],
    # Seed 001 datasets, `_id = f"{project_id}|{name}"`, and their CSV imports.
    "datasets": [[("project_id", A), ("_id", A)]],
    "dataset_imports": [[("status", A), ("created_at", A)], [("dataset_id", A), ("created_at", A)]],
    "list_members": [[("audience_id", A), ("member", A), ("last_seen_run", A)]],
    "identity_links": [],
    # `_id = f"{profile_id}|{version}"`: the outbox that profile version was written with went
    # out (the evaluator clears delivered outboxes lazily, and must not deliver one twice).
    "delivered_outboxes": [],
    # `_id = f"{kind}|{record_id}|{attempt}"`: inserting it claims a sync/import/export attempt.
    "job_claims": [],
    "sync_states": [],
    "schedules": [],
    "schedule_leases": [],
    "integrations": [],
    # Campaign audiences (seed 004): a campaign document holds its audiences in priority order;
    # experiments are found by `_id = f"{project_id}|{experiment_id}"`, impressions (cap
    # counters) by `f"{project_id}|{audience_id}|{user_id}|{period}"`, replayed resolutions by
    # `f"{project_id}|{campaign_id}|{request_id}"`, exposures by `f"{project_id}|{eid}|{user}"`.
    "campaigns": [[("project_id", A), ("_id", A)]],
    "campaign_experiments": [],
    "campaign_impressions": [],
    "campaign_resolutions": [],
    "experiment_exposures": [[("project_id", A), ("experiment_id", A)]],
}

UNIQUE: dict[str, list[IndexKeys]] = {
    "api_keys": [[("hash", A)]],
}
