"""Streaming latencies from a recorded server-sent-event stream of an OpenAI-compatible server.

Definitions follow `vllm bench serve`: TTFT is the first chunk that carries output text (the role chunk
and empty deltas do not count); ITL is each gap between text chunks; TPOT is (E2E - TTFT) / (tokens - 1);
E2E ends at the last data line of the stream. A vLLM server started with `--enable-per-request-metrics`
adds its own timing to the final usage chunk (`metrics`: queue_time_ms, time_to_first_token_ms counted
from scheduling, mean_itl_ms, ...; vLLM PR #46768)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

DONE = "[DONE]"


@dataclass(frozen=True)
class StreamResult:
    """What one streamed request produced and how long each part took (seconds from sending)."""

    text: str = ""
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)
    tpot: float | None = None
    e2e: float = 0.0
    prompt_tokens: int | None = None
    output_tokens: int = 0
    done: bool = False
    """The stream ended with `data: [DONE]`."""
    error: str | None = None
    """An error the server sent inside the stream, or a stream that ended early."""
    server: dict = field(default_factory=dict)
    """The server's own per-request timing (vLLM's `metrics` object), empty where it sends none."""


def parse_line(line: str | bytes) -> dict | str | None:
    """One SSE line: its JSON payload, DONE, or None for blank lines, comments and other fields."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    return DONE if data == DONE else json.loads(data)


def chunk_text(chunk: dict) -> str:
    """Output text of a chat (`delta.content`) or completions (`text`) chunk; "" for usage-only chunks."""
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    return (choice.get("delta") or {}).get("content") or choice.get("text") or ""


def stream_metrics(events: list[tuple[float, str | bytes]], start: float) -> StreamResult:
    """Latencies and output of a stream, given each line with the time it arrived and the send time."""
    text, times, usage, server, done, error, last = [], [], {}, {}, False, None, start
    for t, line in events:
        payload = parse_line(line)
        last = t if payload is not None else last
        if payload == DONE:
            done = True
        elif isinstance(payload, dict):
            if "error" in payload:
                error = str(payload["error"].get("message", payload["error"]))
            usage = payload.get("usage") or usage
            server = payload.get("metrics") or server
            if piece := chunk_text(payload):
                text.append(piece)
                times.append(t - start)
    e2e = last - start
    n_out = usage.get("completion_tokens") or len(times)
    ttft = times[0] if times else None
    tpot = (e2e - ttft) / (n_out - 1) if ttft is not None and n_out > 1 else None
    if error is None and not done:
        error = "stream ended without [DONE]"
    return StreamResult(text="".join(text), ttft=ttft, itl=[b - a for a, b in zip(times, times[1:])], tpot=tpot,
                        e2e=e2e, prompt_tokens=usage.get("prompt_tokens"), output_tokens=n_out, done=done,
                        error=error, server=server)
