"""Dependencies of the node's routes: the runtime the app was created over."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inference_node.server.runtime import NodeRuntime


async def get_node(request: Request) -> NodeRuntime:
    return request.app.state.node


NodeDep = Annotated[NodeRuntime, Depends(get_node)]
