"""The machine-readable contracts: every OpenAPI operation shows an example of its success
answer and of its request body, the body examples are valid requests, and the AsyncAPI document
describes every topic and is the one committed in docs/."""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from audience_api.main import create_app
from audience_api.routes import (
    audiences,
    campaigns,
    datasets,
    groups,
    health,
    ingest,
    insights,
    ops,
    segment,
    sync,
    tenancy,
)
from audience_api.schemas import IdentifyItem, TrackItem
from audience_shared.asyncapi import build_asyncapi, render
from audience_shared.topics import Topic

ROOT = Path(__file__).resolve().parents[3]

# These bodies are declared `Any` (one item or a batch); their items are these models.
ITEM_MODELS: dict[str, type[BaseModel]] = {"/v1/identify": IdentifyItem, "/v1/events": TrackItem}
# The routers whose routes carry the bodies (the app wraps included routers in private types).
ROUTERS = [
    audiences,
    campaigns,
    datasets,
    groups,
    health,
    ingest,
    insights,
    ops,
    segment,
    sync,
    tenancy,
]


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app()


@pytest.fixture(scope="module")
def openapi(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _operations(openapi: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
    ]


def _resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A body schema with its `$ref`, or the `$ref` of an optional body, followed."""
    for option in [schema, *schema.get("anyOf", [])]:
        if "$ref" in option:
            name = option["$ref"].rsplit("/", 1)[-1]
            return openapi["components"]["schemas"][name]  # type: ignore[no-any-return]
    return schema


def _has_example(media: dict[str, Any]) -> bool:
    return "example" in media or bool(media.get("examples"))


def test_openapi__every_operation__has_a_success_example(openapi: dict[str, Any]) -> None:
    missing = []
    for name, operation in _operations(openapi):
        success = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        assert len(success) == 1, name
        [(code, response)] = success.items()
        if code == "204":
            # No body to show; the description says what happened instead.
            ok = response["description"] != "Successful Response"
        else:
            ok = any(_has_example(media) for media in response.get("content", {}).values())
        if not ok:
            missing.append(name)
    assert missing == []


def test_openapi__every_request_body__has_an_example(openapi: dict[str, Any]) -> None:
    missing = []
    for name, operation in _operations(openapi):
        body = operation.get("requestBody")
        if body is None:
            continue
        media = body["content"]["application/json"]
        if not (_has_example(media) or _has_example(_resolve(openapi, media["schema"]))):
            missing.append(name)
    assert missing == []


def _body_examples(route: APIRoute) -> tuple[type[BaseModel], list[Any]]:
    assert route.body_field is not None
    field_info = route.body_field.field_info
    annotation = field_info.annotation
    model = ITEM_MODELS.get(route.path)
    if model is not None:
        return model, list(field_info.examples or [])
    for candidate in getattr(annotation, "__args__", (annotation,)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            extra = candidate.model_config.get("json_schema_extra")
            assert isinstance(extra, dict), route.path
            return candidate, list(extra["examples"])  # type: ignore[arg-type]
    raise AssertionError(f"{route.path}: no model for the body")


def test_openapi__request_examples__validate_against_their_models(
    openapi: dict[str, Any],
) -> None:
    validated = set()
    for module in ROUTERS:
        for route in module.router.routes:
            if not isinstance(route, APIRoute) or route.body_field is None:
                continue
            model, examples = _body_examples(route)
            assert examples, route.path
            for example in examples:
                for item in example.get("batch", [example]):
                    model.model_validate(item)
            validated |= {f"{method} {route.path}" for method in route.methods or ()}
    with_body = {name for name, operation in _operations(openapi) if "requestBody" in operation}
    assert with_body <= validated


def test_asyncapi__every_topic__has_a_channel_with_message_schemas() -> None:
    document = build_asyncapi()
    channels = {channel["address"]: channel for channel in document["channels"].values()}
    assert set(channels) == {topic.value for topic in Topic}
    components = document["components"]
    for topic, channel in channels.items():
        assert channel["messages"], topic
        for ref in channel["messages"].values():
            message = components["messages"][ref["$ref"].rsplit("/", 1)[-1]]
            schema = components["schemas"][message["payload"]["$ref"].rsplit("/", 1)[-1]]
            assert "type" in schema["properties"], topic
    assert document["asyncapi"] == "3.0.0"


def test_asyncapi__committed_document__matches_the_contracts() -> None:
    committed = (ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8")
    assert committed == render(), "docs/asyncapi.json is stale: run `make asyncapi`"


def test_asyncapi__served_without_a_key(app: FastAPI) -> None:
    # No `with`: the lifespan (broker, store) is not needed to serve a static document.
    response = TestClient(app).get("/asyncapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(render())
