"""Creates the demo project and key, a few audiences and demo users; prints how to reach them."""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import httpx

DEMO_AUDIENCES = [
    ("Premium", "Users with plan=premium"),
    ("Active premium", "Users with plan=premium AND last_active within 7 days"),
    ("Recent buyers", "Users who completed purchase in the last 30 days"),
    ("Heavy openers", "Users who triggered event=app_open more than 10 times"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    admin = httpx.Client(base_url=args.api, headers={"Authorization": f"Bearer {args.admin_key}"})
    state_file = args.out / "demo.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}

    # Idempotent: the demo project and key are made once and remembered.
    if "project_id" not in state:
        project = admin.post("/v1/projects", json={"name": "Demo"}).raise_for_status().json()
        key = (
            admin.post(
                "/v1/keys", json={"project_id": project["id"], "scope": "admin", "name": "demo"}
            )
            .raise_for_status()
            .json()
        )
        state = {"project_id": project["id"], "key": key["key"]}
        args.out.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(state))
        state_file.chmod(0o600)
        load_dataset(
            httpx.Client(base_url=args.api, headers={"Authorization": f"Bearer {state['key']}"})
        )

    print()
    print("Audiences is up.")
    print(f"  API:        {args.api}")
    print(f"  OpenAPI:    {args.api}/docs")
    print(f"  Project:    {state['project_id']}")
    print(f"  Demo key:   {state['key']}")
    print(f"  Admin key:  {args.admin_key}  (organization key: creates projects and keys)")
    print()
    print("Try:")
    auth = f"Authorization: Bearer {state['key']}"
    print(f"  curl -s -H '{auth}' {args.api}/v1/audiences | python3 -m json.tool")
    return 0


def load_dataset(client: httpx.Client) -> None:
    rng = random.Random(7)
    for name, criteria in DEMO_AUDIENCES:
        client.post("/v1/audiences", json={"name": name, "criteria": criteria}).raise_for_status()
    identifies = []
    events = []
    for n in range(200):
        user = f"demo-user-{n:03d}"
        identifies.append(
            {
                "user_id": user,
                "traits": {
                    "plan": rng.choice(["free", "free", "premium"]),
                    "country": rng.choice(["US", "DE", "FR", "BR"]),
                    "email": f"{user}@example.com",
                },
            }
        )
        for _ in range(rng.randint(0, 15)):
            events.append({"user_id": user, "event": "app_open"})
        if rng.random() < 0.3:
            events.append({"user_id": user, "event": "purchase", "properties": {"amount": 20}})
    client.post("/v1/identify", json={"batch": identifies}).raise_for_status()
    for start in range(0, len(events), 1000):
        client.post("/v1/events", json={"batch": events[start : start + 1000]}).raise_for_status()
    time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
