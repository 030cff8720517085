"""The few HTTP calls made before and after a run: probe the server, tokenize through it, scrape /metrics.

Every failure here becomes a `ServerError` with one message that says what to fix, so a bad host or key
stops the run before Locust starts instead of flooding it with failures."""

from __future__ import annotations

from dataclasses import dataclass

import requests

from loadtest.prompts import Tokenizer, request_fields

TIMEOUT_S = 30


class ServerError(Exception):
    """The server cannot be load tested as asked; the message names the fix."""


@dataclass(frozen=True)
class ServerInfo:
    """What /v1/models says about the served model."""

    model: str
    max_model_len: int | None
    root: str | None = None
    """Where the server loaded the model from (vLLM's `root`), when it says."""


def auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _call(method: str, url: str, api_key: str | None, **kwargs) -> requests.Response:
    try:
        resp = requests.request(method, url, headers=auth(api_key), timeout=TIMEOUT_S, **kwargs)
    except requests.RequestException as e:
        raise ServerError(f"cannot reach {url} ({type(e).__name__}): is the server running, and is --host right?")
    if resp.status_code in (401, 403):
        raise ServerError(f"{url} rejected the API key (HTTP {resp.status_code}): "
                          "pass the server's key with --api-key or OPENAI_API_KEY")
    return resp


def probe(host: str, api_key: str | None) -> ServerInfo:
    """The first served model and its max_model_len (vLLM adds it to /v1/models; others may not)."""
    resp = _call("GET", f"{host}/v1/models", api_key)
    if resp.status_code != 200:
        raise ServerError(f"{host}/v1/models answered HTTP {resp.status_code}: is this an OpenAI-compatible server?")
    models = resp.json().get("data") or []
    if not models:
        raise ServerError(f"{host}/v1/models lists no model")
    return ServerInfo(model=models[0]["id"], max_model_len=models[0].get("max_model_len"), root=models[0].get("root"))


def _post(host: str, path: str, api_key: str | None, body: dict) -> dict:
    resp = _call("POST", f"{host}{path}", api_key, json=body)
    if resp.status_code == 404:
        raise ServerError(f"{host}{path} not found: token-exact prompts need vLLM's /tokenize and /detokenize, "
                          f"or --tokenizer FOLDER with the served model's tokenizer")
    if resp.status_code != 200:
        raise ServerError(f"{host}{path} answered HTTP {resp.status_code}: {resp.text[:200]}")
    return resp.json()


def http_tokenizer(host: str, api_key: str | None, model: str, endpoint: str) -> Tokenizer:
    """The served model's tokenizer; `render` renders the request as `endpoint` will (chat template, BOS)."""
    def encode(text: str) -> list[int]:
        return _post(host, "/tokenize", api_key, {"model": model, "prompt": text, "add_special_tokens": False})["tokens"]

    def decode(ids: list[int]) -> str:
        return _post(host, "/detokenize", api_key, {"model": model, "tokens": ids})["prompt"]

    def render(text: str) -> list[int]:
        return _post(host, "/tokenize", api_key, {"model": model, **request_fields(endpoint, text)})["tokens"]

    return Tokenizer(encode=encode, decode=decode, render=render)


def scrape(host: str, api_key: str | None) -> str | None:
    """The Prometheus text of /metrics, or None where the server has none."""
    try:
        resp = requests.get(f"{host}/metrics", headers=auth(api_key), timeout=TIMEOUT_S)
    except requests.RequestException:
        return None
    return resp.text if resp.status_code == 200 else None
