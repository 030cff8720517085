"""The baseline a user of the LongLoRA reference code would serve with: HF transformers `generate` behind
a minimal OpenAI-compatible API (FastAPI + uvicorn). A baseline, not a product.

    python benchmarks/hf_server.py [MODEL_DIR] [--port 8766]

One model, in `longctx.hardware.best_dtype` (float32 on this CPU), default attention (sdpa). Requests are
handled as a plain HF server does: one `generate` at a time behind a lock, no batching, no KV-cache
sharing; other requests wait for the lock. Streaming uses `TextIteratorStreamer`, which releases text at
word boundaries, so a chunk may hold more than one token.

Endpoints are the ones `python -m loadtest` calls, in vLLM's shapes: GET /v1/models (with max_model_len),
POST /tokenize and /detokenize (chat template applied as vLLM does: rendered to text, then tokenized
without special tokens), POST /v1/chat/completions (streaming with a usage chunk, or not)."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from longctx import cli  # noqa: E402

DEFAULT_PORT = 8766  # beside the benchmarks' 8765 (vLLM); never `make serve`'s 8000
PROG = "python benchmarks/hf_server.py"


@dataclass(frozen=True)
class Settings:
    """What to serve, and where; every field is a flag (MODEL positional)."""

    model: Path | None = None
    """checkpoint (default: the embedded default model)"""
    host: str = "127.0.0.1"
    """address to listen on; 127.0.0.1 keeps the server private to this machine"""
    port: int = DEFAULT_PORT
    """TCP port"""

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"--port must be from 0 to 65535, not {self.port}")


def chat_prompt_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = True,
                    continue_final_message: bool = False) -> list[int]:
    """The prompt ids of a chat request, rendered as vLLM renders it (template text, no added specials);
    `continue_final_message` leaves the last (assistant) message open for the model to continue, as the load
    tester's answer prefix asks."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         continue_final_message=continue_final_message)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def body_chat_ids(tokenizer, body: dict) -> list[int]:
    """The prompt ids of a chat body, with vLLM's defaults for its template flags."""
    return chat_prompt_ids(tokenizer, body["messages"], body.get("add_generation_prompt", True),
                           body.get("continue_final_message", False))


def request_ids(tokenizer, body: dict) -> list[int]:
    """Token ids of a /tokenize body: a chat (`messages`) or a plain `prompt`, as vLLM's /tokenize reads it."""
    if "messages" in body:
        return body_chat_ids(tokenizer, body)
    return tokenizer(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))["input_ids"]


def chunk(rid: str, model: str, created: int, delta: dict | None = None, finish: str | None = None,
          usage: dict | None = None) -> str:
    """One server-sent event of a streamed chat completion (a usage chunk has no choices)."""
    body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": []}
    if usage is None:
        body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    else:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


def finish_reason(generated: int, max_tokens: int) -> str:
    return "length" if generated >= max_tokens else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Generator:
    """The model, its tokenizer, and the one lock every `generate` call takes."""

    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from longctx.hardware import best_dtype, cuda_available

        self.device = "cuda" if cuda_available() else "cpu"
        self.dtype = best_dtype(cuda_available())
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, self.dtype))
        self.model.to(self.device).eval()
        self.name = model_dir.name
        self.max_model_len = self.model.config.max_position_embeddings
        self.lock = threading.Lock()

    def stream(self, ids: list[int], max_tokens: int, ignore_eos: bool = False
               ) -> tuple[Iterator[str], threading.Thread, dict]:
        """Start greedy generation in a thread; yields text pieces; `out["tokens"]` is set when it ends.
        `ignore_eos` (vLLM's request field of that name) generates exactly `max_tokens`."""
        import torch
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        out: dict = {}

        def run() -> None:
            with self.lock, torch.inference_mode():
                try:
                    seq = self.model.generate(torch.tensor([ids], device=self.device), max_new_tokens=max_tokens,
                                              min_new_tokens=max_tokens if ignore_eos else None,
                                              do_sample=False, streamer=streamer)
                    out["tokens"] = seq.shape[1] - len(ids)  # (1, prompt + generated)
                except Exception as e:  # the streamer would otherwise wait forever
                    out["error"] = repr(e)
                    streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return iter(streamer), thread, out


def make_app(gen: Generator):
    """The FastAPI app over one Generator."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": gen.name, "object": "model", "owned_by": "hf-generate",
                                            "max_model_len": gen.max_model_len}]}

    @app.post("/tokenize")
    def tokenize(body: dict) -> dict:
        ids = request_ids(gen.tokenizer, body)
        return {"count": len(ids), "max_model_len": gen.max_model_len, "tokens": ids, "token_strs": None}

    @app.post("/detokenize")
    def detokenize(body: dict) -> dict:
        return {"prompt": gen.tokenizer.decode(body["tokens"])}

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        ids = body_chat_ids(gen.tokenizer, body)
        max_tokens = body.get("max_tokens") or 16
        if len(ids) + max_tokens > gen.max_model_len:
            return JSONResponse({"error": {"message": f"{len(ids)} prompt + {max_tokens} output tokens exceed "
                                                      f"max_model_len {gen.max_model_len}"}}, status_code=400)
        pieces, thread, out = gen.stream(ids, max_tokens, bool(body.get("ignore_eos")))
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.get("stream"):
            events = sse(pieces, thread, out, rid, gen.name, created, len(ids), max_tokens,
                         (body.get("stream_options") or {}).get("include_usage", False))
            return StreamingResponse(events, media_type="text/event-stream")
        text = "".join(pieces)
        thread.join()
        n = out.get("tokens", 0)
        return {"id": rid, "object": "chat.completion", "created": created, "model": gen.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish_reason(n, max_tokens)}], "usage": usage(len(ids), n)}

    return app


def sse(pieces: Iterator[str], thread: threading.Thread, out: dict, rid: str, model: str, created: int,
        prompt_tokens: int, max_tokens: int, include_usage: bool) -> Iterator[str]:
    """The event stream: role chunk, text chunks, finish chunk, usage chunk if asked, [DONE]."""
    yield chunk(rid, model, created, {"role": "assistant", "content": ""})
    for text in pieces:
        if text:
            yield chunk(rid, model, created, {"content": text})
    thread.join()
    if "error" in out:
        yield f"data: {json.dumps({'error': {'message': out['error']}})}\n\n"
    n = out.get("tokens", 0)
    yield chunk(rid, model, created, finish=finish_reason(n, max_tokens))
    if include_usage:
        yield chunk(rid, model, created, usage=usage(prompt_tokens, n))
    yield "data: [DONE]\n\n"


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: serve(cli.parse(Settings, argv, PROG, __doc__, positional=("model",))))


def serve(args: Settings) -> None:
    import uvicorn

    from longctx.default_model import ensure_default_model

    gen = Generator((args.model or ensure_default_model()).resolve())
    print(f"hf_server: {gen.name} in {gen.dtype} on {gen.device}, one generate at a time, "
          f"http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(make_app(gen), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    sys.exit(main())
