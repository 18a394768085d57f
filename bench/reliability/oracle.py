"""The event log a scenario sends, and the memberships it must produce, replayed independently."""

import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# The audiences every membership scenario defines; the oracle below mirrors their rules.
OPENS_AUDIENCE = "Users who triggered event=app_open at least 5 times"
PLAN_AUDIENCE = "Users with plan=premium"
AUDIENCES = {"opens": OPENS_AUDIENCE, "premium": PLAN_AUDIENCE}
OPENS_NEEDED = 5


@dataclass(frozen=True)
class Stream:
    """Wire payloads of user events (as on `user.events.v1`), in sending order."""

    project_id: str
    events: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.events)


def make_stream(project_id: str, events: int, users: int, seed: int) -> Stream:
    """Mostly app_open tracks, some other tracks, and identifies switching the plan.

    Timestamps are distinct and increase with the position, so "the latest identify wins" has one
    answer whatever order the evaluator sees the events in.
    """
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=1)
    out: list[dict[str, Any]] = []
    for n in range(events):
        user = f"u{rng.randrange(users)}"
        body: dict[str, Any] = {
            "project_id": project_id,
            "user_id": user,
            "event_id": f"{project_id}-e{n}",
            "timestamp": (start + timedelta(milliseconds=n)).isoformat(),
        }
        if rng.random() < 0.2:
            body |= {"type": "identify", "traits": {"plan": rng.choice(["free", "premium"])}}
        else:
            name = rng.choice(["app_open"] * 4 + ["page_view"])
            body |= {"type": "track", "event": name, "properties": {"n": n}}
        out.append(body)
    return Stream(project_id, out)


def expected_members(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Replay the whole log: each event_id counts once, the latest identify sets the plan."""
    opens: Counter[str] = Counter()
    plan: dict[str, tuple[str, str]] = {}  # user -> (timestamp, plan)
    seen: set[str] = set()
    for event in events:
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        user = event["user_id"]
        if event["type"] == "track" and event["event"] == "app_open":
            opens[user] += 1
        elif (
            event["type"] == "identify"
            and "plan" in event.get("traits", {})
            # ISO timestamps of one offset sort as strings.
            and (user not in plan or event["timestamp"] > plan[user][0])
        ):
            plan[user] = (event["timestamp"], event["traits"]["plan"])
    return {
        "opens": {user for user, n in opens.items() if n >= OPENS_NEEDED},
        "premium": {user for user, (_, value) in plan.items() if value == "premium"},
    }


def http_item(event: dict[str, Any]) -> dict[str, Any]:
    """The same event as a body item of POST /v1/events or /v1/identify."""
    return {k: v for k, v in event.items() if k not in ("type", "project_id")}
