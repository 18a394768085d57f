"""OpenAPI examples of the gateway's answers, one module per router, and the helpers that attach
them to a route's success response."""

from typing import Any

Responses = dict[int | str, dict[str, Any]]

# Shared ids and times, so the examples of one resource agree across endpoints.
PROJECT_ID = "prj_3f9a1c2b7d4e5f60"
ORGANIZATION_ID = "org_5b6c7d8e9f0a1b2c"
AUDIENCE_ID = "aud_8c1d2e3f4a5b6c7d"
GROUP_ID = "grp_1a2b3c4d5e6f7a8b"
CREATED_AT = "2025-06-02T09:30:00.123000Z"
UPDATED_AT = "2025-06-02T09:30:01.456000Z"


def json_example(example: Any, status: int = 200) -> Responses:
    """`responses=` of a route whose success answer is JSON: the example next to its schema."""
    return {status: {"content": {"application/json": {"example": example}}}}


def no_content(description: str) -> Responses:
    """`responses=` of a route that answers 204: there is no body, so say what happened."""
    return {204: {"description": description}}
