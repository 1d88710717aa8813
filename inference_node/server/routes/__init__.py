"""The node's routers: the OpenAI-compatible API and the node's own endpoints."""

from fastapi import APIRouter

from inference_node.server.routes import node, openai

router = APIRouter()
router.include_router(openai.router)
router.include_router(node.router)
