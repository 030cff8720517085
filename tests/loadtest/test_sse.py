"""TTFT / ITL / TPOT / E2E from recorded vLLM streams, with role, empty-delta and usage chunks."""

from pathlib import Path

import pytest

from loadtest.sse import DONE, parse_line, stream_metrics

FIXTURES = Path(__file__).parent / "fixtures"


def timed(name: str, start: float = 100.0, first: float = 0.5, step: float = 0.1) -> list[tuple[float, str]]:
    """The fixture's lines; the i-th data line arrives at start + first + i * step, blank lines with it."""
    events, i = [], -1
    for line in (FIXTURES / name).read_text().splitlines():
        i += line.startswith("data:")
        events.append((start + first + max(i, 0) * step, line))
    return events


def test_chat_stream():
    r = stream_metrics(timed("chat_stream.sse"), start=100.0)
    # data lines: 0 role, 1 " 31", 2 "", 3 "415", 4 ".", 5 " Remember", 6 finish, 7 usage, 8 [DONE]
    assert r.text == " 31415. Remember"
    assert r.ttft == pytest.approx(0.6)
    assert r.itl == pytest.approx([0.2, 0.1, 0.1])
    assert r.e2e == pytest.approx(1.3)
    assert r.output_tokens == 6 and r.prompt_tokens == 412  # from the usage chunk, not the 4 text chunks
    assert r.tpot == pytest.approx((1.3 - 0.6) / 5)
    assert r.done and r.error is None


def test_completions_stream():
    r = stream_metrics(timed("completions_stream.sse", first=0.25, step=0.05), start=100.0)
    assert r.text == " 2718"
    assert r.ttft == pytest.approx(0.25)
    assert r.itl == pytest.approx([0.05])
    assert r.e2e == pytest.approx(0.45)
    assert r.tpot == pytest.approx(0.2 / 2)


def test_truncated_and_error_streams():
    cut = timed("chat_stream.sse")[:7]  # up to the "415" chunk
    r = stream_metrics(cut, start=100.0)
    assert not r.done and r.error == "stream ended without [DONE]"
    assert r.output_tokens == 2 and r.tpot == pytest.approx((0.8 - 0.6) / 1)  # no usage: count text chunks
    err = [(1.0, 'data: {"error": {"message": "EngineCore died", "code": 500}}'), (1.1, "data: [DONE]")]
    assert stream_metrics(err, start=0.5).error == "EngineCore died"


def test_parse_line():
    assert parse_line(b"data: [DONE]") == DONE
    assert parse_line(": keep-alive") is None and parse_line("") is None
    assert parse_line('data: {"a": 1}') == {"a": 1}


def test_server_timing_rides_on_the_usage_chunk():
    # the final chunk as vLLM (--enable-per-request-metrics) serializes it: usage plus `metrics`, nulls left out
    usage = ('data: {"id":"c","object":"text_completion","created":1,"model":"m","choices":[],'
             '"usage":{"prompt_tokens":9,"total_tokens":11,"completion_tokens":2},'
             '"metrics":{"time_to_first_token_ms":80.5,"generation_time_ms":20.0,"queue_time_ms":12.25}}')
    lines = [(1.0, 'data: {"choices":[{"index":0,"text":" 4"}]}'), (1.1, 'data: {"choices":[{"index":0,"text":"2"}]}'),
             (1.2, usage), (1.2, "data: [DONE]")]
    r = stream_metrics(lines, start=0.5)
    assert r.server == {"time_to_first_token_ms": 80.5, "generation_time_ms": 20.0, "queue_time_ms": 12.25}
    assert r.text == " 42" and r.output_tokens == 2
    assert stream_metrics(timed("chat_stream.sse"), start=100.0).server == {}
