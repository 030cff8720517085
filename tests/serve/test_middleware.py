"""serve.middleware: unknown chat roles get 400 naming the allowed ones; everything else passes untouched.

The ASGI wrapper runs in a real Starlette app (the framework vLLM's server is built on) without vLLM;
tests/serve/test_server.py checks it inside the real server."""

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serve.middleware import ROLES, RoleCheck, parse_json, role_error


def chat(*roles: str) -> dict:
    return {"model": "m", "messages": [{"role": r, "content": "hi"} for r in roles]}


def test_roles_are_openais():
    assert set(ROLES) == {"system", "user", "assistant", "tool", "function", "developer"}


def test_unknown_role_is_named_with_the_allowed_ones():
    error = role_error(chat("system", "wizard", "user"))
    assert error["code"] == 400 and error["param"] == "messages[1].role"
    assert "'wizard'" in error["message"] and all(role in error["message"] for role in ROLES)


@pytest.mark.parametrize("body", [chat(*ROLES), chat(), None, [], "text", {"model": "m"},
                                  {"messages": "not a list"}, {"messages": [{"content": "no role"}, 5]}])
def test_known_roles_and_other_shapes_are_left_to_vllm(body):
    assert role_error(body) is None


def test_parse_json_of_what_is_not_json_is_none():
    assert parse_json(b'{"a": 1}') == {"a": 1}
    assert parse_json(b"{not json") is None and parse_json(b"\xff\xfe") is None


async def echo(request: Request):
    """Answers with what it received, in three streamed pieces."""
    body = await request.body()

    async def pieces():
        for piece in (b"data: 1\n\n", body, b"data: [DONE]\n\n"):
            yield piece

    return StreamingResponse(pieces(), media_type="text/event-stream")


async def models(request: Request):
    return JSONResponse({"data": []})


@pytest.fixture(scope="module")
def client():
    app = Starlette(routes=[Route("/v1/chat/completions", echo, methods=["POST"]),
                            Route("/v1/completions", echo, methods=["POST"]),
                            Route("/v1/models", models)])
    app.add_middleware(RoleCheck)  # as vLLM adds a --middleware class
    return TestClient(app)


def test_unknown_role_gets_400_before_the_app(client):
    reply = client.post("/v1/chat/completions", json=chat("user", "wizard"))
    assert reply.status_code == 400 and reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert error["param"] == "messages[1].role" and all(role in error["message"] for role in ROLES)


def test_known_roles_reach_the_app_with_their_body_and_the_stream_intact(client):
    body = json.dumps(chat("system", "user")).encode()
    with client.stream("POST", "/v1/chat/completions", content=body) as reply:
        pieces = list(reply.iter_bytes())
    assert reply.status_code == 200
    assert b"".join(pieces) == b"data: 1\n\n" + body + b"data: [DONE]\n\n"


@pytest.mark.parametrize("path,content", [("/v1/chat/completions", b"{not json"),
                                          ("/v1/completions", json.dumps(chat("wizard")).encode())])
def test_other_bodies_and_paths_pass_untouched(client, path, content):
    reply = client.post(path, content=content)
    assert reply.status_code == 200 and reply.content.endswith(content + b"data: [DONE]\n\n")
    assert client.get("/v1/models").json() == {"data": []}
