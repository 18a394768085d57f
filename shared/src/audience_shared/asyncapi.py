"""The AsyncAPI 3.0 document of the Kafka topics, built from the message contracts; run as a
module to write it to a file (`docs/asyncapi.json` by default)."""

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from audience_shared.commands import (
    DatasetImportRequested,
    ExportRequested,
    ImportRequested,
    SyncRequested,
)
from audience_shared.events import (
    AudienceChanged,
    DeadLetter,
    EventTracked,
    IntentSignalled,
    ListMembershipChanged,
    MembershipChanged,
    TraitsIdentified,
    UsersAliased,
)
from audience_shared.topics import PARTITIONS, Topic

Document = dict[str, Any]

DEFAULT_PATH = Path("docs/asyncapi.json")
KAFKA_BINDING_VERSION = "0.5.0"


@dataclass(frozen=True)
class TopicContract:
    """What travels on one topic, how it is keyed, and who writes and reads it."""

    channel: str
    description: str
    messages: tuple[type[BaseModel], ...]
    key: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]


CONTRACTS: dict[Topic, TopicContract] = {
    Topic.USER_EVENTS: TopicContract(
        channel="userEvents",
        description="What users did and who they are: identify, track, intent, alias and list "
        "membership facts, discriminated by `type`.",
        messages=(
            TraitsIdentified,
            EventTracked,
            IntentSignalled,
            UsersAliased,
            ListMembershipChanged,
        ),
        key="`{project_id}/{user_id}`: one user's events stay ordered on one partition",
        producers=("api", "sync"),
        consumers=("evaluator",),
    ),
    Topic.AUDIENCE_CHANGES: TopicContract(
        channel="audienceChanges",
        description="An audience was created, had its rule changed, was archived or asked to "
        "refresh; the evaluator (re)materializes it.",
        messages=(AudienceChanged,),
        key="`{audience_id}`",
        producers=("api", "sync"),
        consumers=("evaluator",),
    ),
    Topic.MEMBERSHIP_CHANGES: TopicContract(
        channel="membershipChanges",
        description="A user entered or exited an audience: the output for downstream systems.",
        messages=(MembershipChanged,),
        key="`{project_id}/{user_id}`",
        producers=("evaluator",),
        consumers=("downstream",),
    ),
    Topic.DEAD_LETTERS: TopicContract(
        channel="deadLetters",
        description="Messages a consumer could not process (permanent errors), with the "
        "original bytes and the error.",
        messages=(DeadLetter,),
        key="the original message's key",
        producers=("evaluator", "sync"),
        consumers=(),
    ),
    Topic.SYNC_REQUESTS: TopicContract(
        channel="syncRequests",
        description="Commands for the sync service: pull a synced list, import a CSV, unload "
        "an audience, import a dataset; the run or import record already exists in the store.",
        messages=(SyncRequested, ImportRequested, ExportRequested, DatasetImportRequested),
        key="`{audience_id}`; `{project_id}|{dataset}` for dataset imports",
        producers=("api", "sync"),
        consumers=("sync",),
    ),
}


def build_asyncapi() -> Document:
    """The whole document; deterministic, so a committed copy can be compared with it."""
    models = sorted(
        {model for contract in CONTRACTS.values() for model in contract.messages},
        key=lambda model: model.__name__,
    )
    # Serialization mode: the payload as producers write it (`model_dump(mode="json")`).
    _, definitions = models_json_schema(
        [(model, "serialization") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    messages: Document = {
        model.__name__: {
            "name": model.__name__,
            "title": model.__name__,
            "summary": (model.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
        }
        for model in models
    }
    channels: Document = {}
    operations: Document = {}
    for topic, contract in CONTRACTS.items():
        refs = {
            m.__name__: {"$ref": f"#/components/messages/{m.__name__}"} for m in contract.messages
        }
        channels[contract.channel] = {
            "address": topic.value,
            "description": f"{contract.description} Kafka key: {contract.key}.",
            "messages": refs,
            "bindings": {
                "kafka": {
                    "topic": topic.value,
                    "partitions": PARTITIONS[topic],
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        channel_ref = {"$ref": f"#/channels/{contract.channel}"}
        message_refs = [{"$ref": f"#/channels/{contract.channel}/messages/{name}"} for name in refs]
        operations[f"send_{contract.channel}"] = {
            "action": "send",
            "channel": channel_ref,
            "summary": f"Written by: {', '.join(contract.producers)}",
            "messages": message_refs,
        }
        if contract.consumers:
            operations[f"receive_{contract.channel}"] = {
                "action": "receive",
                "channel": channel_ref,
                "summary": f"Read by: {', '.join(contract.consumers)}",
                "messages": message_refs,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Audiences topics",
            "version": "1.0.0",
            "description": "The Kafka topics between the Audiences services and their message "
            "contracts (audience_shared.events and audience_shared.commands). Topic names are "
            "versioned: a breaking payload change gets a new topic.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": definitions["$defs"]},
    }


def render() -> str:
    return json.dumps(build_asyncapi(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_PATH
    path.write_text(render(), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
