"""FastAPI dependencies: the container and the authenticated caller."""

from typing import Annotated

from fastapi import Depends, Request

from audience_api.container import Container
from audience_api.services import Principal


def container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


async def principal(
    request: Request, services: Annotated[Container, Depends(container)]
) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    presented = credential.strip() if scheme.lower() == "bearer" else None
    caller = await services.keys.authenticate(presented)
    request.state.principal = caller
    return caller


ContainerDep = Annotated[Container, Depends(container)]
PrincipalDep = Annotated[Principal, Depends(principal)]
