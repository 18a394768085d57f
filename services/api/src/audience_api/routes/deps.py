"""FastAPI dependencies: the container and the authenticated caller."""

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from audience_api.container import Container
from audience_api.errors import RateLimited
from audience_api.rate_limit_headers import STATE_KEY
from audience_api.services import Principal


def presented_key(header: str | None) -> str | None:
    """The API key from `Bearer <key>`, or from HTTP Basic with the key as the username (the
    "write key" convention of Segment-style SDKs; the password is ignored)."""
    scheme, _, credential = (header or "").partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer":
        return credential or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


def container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


async def principal(
    request: Request, services: Annotated[Container, Depends(container)]
) -> Principal:
    caller = await services.keys.authenticate(presented_key(request.headers.get("authorization")))
    request.state.principal = caller
    admit(request, services, caller)
    return caller


def admit(request: Request, services: Container, caller: Principal) -> None:
    """Take a token from the key's bucket; the decision becomes the response's RateLimit-*
    headers (see rate_limit_headers), and an empty bucket a 429."""
    decision = services.rate_limits.take(caller.key_id, caller.rate_limit)
    setattr(request.state, STATE_KEY, decision)
    if not decision.allowed:
        raise RateLimited(decision.retry_after_s)


ContainerDep = Annotated[Container, Depends(container)]
PrincipalDep = Annotated[Principal, Depends(principal)]
