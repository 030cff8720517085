"""Chat messages with a role OpenAI's API does not know get HTTP 400, as OpenAI answers them.

vLLM 0.32 takes any role string (`CustomChatCompletionMessageParam.role: str` in vllm/renderers/chat_utils.py)
and renders it into the chat template, so `{"role": "wizard"}` was answered 200. `python -m serve` installs
`RoleCheck` through vLLM's `--middleware` option (a dotted path to an ASGI class: `serve.args.MIDDLEWARE`).

vLLM adds `--middleware` outside its API-key check: an unknown role gets 400 before the key is checked,
which reveals only the list of roles below, already public."""

from __future__ import annotations

import json
from typing import Any, get_args

from openai.types.chat import ChatCompletionRole

ROLES: tuple[str, ...] = get_args(ChatCompletionRole)  # developer, system, user, assistant, tool, function
CHAT_PATHS = ("/v1/chat/completions",)


def role_error(body: Any) -> dict[str, Any] | None:
    """vLLM's error object for the first message of a parsed chat request whose role is unknown, else None.

    Anything that is not a list of messages is left to vLLM's own validation."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return None
    for i, message in enumerate(messages):
        if isinstance(message, dict) and "role" in message and message["role"] not in ROLES:
            param = f"messages[{i}].role"
            return {"message": f"unknown role {message['role']!r} in {param}; use one of {', '.join(ROLES)}",
                    "type": "BadRequestError", "param": param, "code": 400}
    return None


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body, or None when it is not JSON (vLLM then answers it itself)."""
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return None


class RoleCheck:
    """ASGI middleware: a POST to a chat endpoint naming an unknown role gets 400. Everything else (other
    paths and methods, bodies that are not JSON, the response, streamed or not) passes through untouched."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
        if scope["type"] != "http" or scope.get("method") != "POST" or path not in CHAT_PATHS:
            return await self.app(scope, receive, send)
        received, body = [], b""
        while True:  # the whole body; the app gets every message back, in order, before `receive` again
            message = await receive()
            received.append(message)
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        error = role_error(parse_json(body)) if message["type"] == "http.request" else None
        if error is not None:
            return await send_json(send, 400, {"error": error})
        await self.app(scope, replay(received, receive), send)


def replay(received: list[dict], receive):
    """An ASGI `receive` that returns `received` first, then reads on (e.g. a client's disconnect)."""

    async def again() -> dict:
        return received.pop(0) if received else await receive()

    return again


async def send_json(send, status: int, content: dict) -> None:
    data = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
