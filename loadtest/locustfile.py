"""Locust users that stream chat/completions requests and report streaming latencies and passkey answers.

Run by `python -m loadtest` (which plans the prompts and sets LOADTEST_PLAN), or by hand for the web UI:
`LOADTEST_SCENARIO=chat locust -f loadtest/locustfile.py --host http://127.0.0.1:8000` (plans at start).
Each request fires separate Locust request events, named `<kind>@<bucket>`:
POST `chat@1k` (time to headers: Locust's own stream=True timing), TTFT, ITL (one per gap), TPOT, E2E,
and PASSKEY (success or failure of the answer)."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # `locust -f loadtest/locustfile.py` puts loadtest/, not the repo, on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locust import HttpUser, LoadTestShape, constant, events, task

from loadtest.plan import PATHS, load_plan, make_plan, payload, user_queue
from longctx.passkey import first_number
from loadtest.scenarios import SCENARIOS, ramp_users
from loadtest.sse import StreamResult, stream_metrics

SCENARIO = os.environ.get("LOADTEST_SCENARIO", "chat")
API_KEY = os.environ.get("LOADTEST_API_KEY") or os.environ.get("OPENAI_API_KEY")
RECORDS = os.environ.get("LOADTEST_RECORDS")
PLAN: dict = {}
FAILURE_PAUSE_S = 1.0
USERS_STARTED = itertools.count()  # numbers the users as they start (one gevent process)


class PasskeyMismatch(Exception):
    """The model's answer did not contain the hidden passkey."""


@events.init.add_listener
def _load_plan(environment, **_kwargs) -> None:
    """Read the runner's plan, or plan here when Locust was started by hand."""
    path = os.environ.get("LOADTEST_PLAN")
    if path:
        PLAN.update(load_plan(Path(path)))
    else:
        buckets = os.environ.get("LOADTEST_BUCKETS")
        PLAN.update(make_plan(environment.host, API_KEY, SCENARIO, buckets.split(",") if buckets else None,
                              per_bucket=8, max_tokens=int(os.environ.get("LOADTEST_MAX_TOKENS", "32"))))


def record(row: dict) -> None:
    """Append one request's record for summary.md (one gevent process: appends do not interleave)."""
    if RECORDS:
        with open(RECORDS, "a") as f:
            f.write(json.dumps(row) + "\n")


class LLMUser(HttpUser):
    """A closed-loop user: sends the next planned prompt as soon as the last answer has streamed."""

    abstract = True
    wait_time = constant(0)
    bucket_role: str | None = None  # "long_bucket"/"short_bucket" in long-vs-short; None: all buckets

    def on_start(self) -> None:
        wanted = PLAN.get(self.bucket_role) if self.bucket_role else None
        self.prompts = itertools.cycle(user_queue(PLAN["prompts"], wanted, next(USERS_STARTED)))
        if API_KEY:
            self.client.headers["Authorization"] = f"Bearer {API_KEY}"

    @task
    def ask(self) -> None:
        prompt = next(self.prompts)
        salt = uuid.uuid4().hex if PLAN["cache_salt"] else None
        name = f"{PLAN['endpoint']}@{prompt['bucket']}"
        start, lines = time.perf_counter(), []
        wall = time.time()
        with self.client.post(PATHS[PLAN["endpoint"]], json=payload(PLAN, prompt, salt), stream=True,
                              catch_response=True, name=name) as resp:
            kind = self.read(resp, lines)
            result = stream_metrics(lines, start) if kind is None else StreamResult(error=kind)
            kind = kind or ("stream" if result.error else None)
            if kind:
                resp.failure(f"{kind}: {result.error}" if kind == "stream" else kind)
            else:
                resp.success()
        self.report(prompt, result, kind, wall, (time.perf_counter() - start) if kind else result.e2e)
        if kind and not kind.startswith("stream"):
            time.sleep(FAILURE_PAUSE_S)  # a dead server would otherwise take thousands of failures a second

    def read(self, resp, lines: list) -> str | None:
        """Collect the stream's lines with their arrival times; the failure kind if there is no stream."""
        if not resp.status_code:  # Locust reports a refused or reset connection as status 0
            return f"connect: {type(resp.error).__name__}"
        if resp.status_code != 200:
            return f"http {resp.status_code}"
        try:
            for line in resp.iter_lines():
                lines.append((time.perf_counter(), line))
        except Exception as e:  # a connection dropped mid-stream is a transport failure, not a crash
            return f"stream: {type(e).__name__}"
        return None

    def report(self, prompt: dict, r: StreamResult, kind: str | None, wall: float, e2e: float) -> None:
        """Fire the latency and passkey events and write the request's record."""
        bucket, fire = prompt["bucket"], self.environment.events.request.fire
        if not kind:
            latencies = [("TTFT", r.ttft), *(("ITL", gap) for gap in r.itl), ("TPOT", r.tpot), ("E2E", r.e2e)]
            for metric, value in latencies:
                if value is not None:
                    fire(request_type=metric, name=f"{metric.lower()}@{bucket}", response_time=value * 1000,
                         response_length=0, exception=None, context={})
        answer = first_number(r.text)
        ok = not kind and answer == prompt["key"]
        fire(request_type="PASSKEY", name=f"passkey@{bucket}", response_time=e2e * 1000,
             response_length=len(r.text), context={},
             exception=None if ok else PasskeyMismatch(f"no answer ({kind})" if kind else "wrong passkey"))
        record({"start": wall, "user": type(self).__name__, "bucket": bucket, "prompt_tokens": prompt["tokens"],
                "kind": prompt.get("kind", "spread"), "depth": prompt["depth"], "key_at": prompt.get("key_at"),
                "failure": kind, "ttft": r.ttft, "itl": r.itl, "tpot": r.tpot, "e2e": e2e,
                "output_tokens": r.output_tokens, "passkey_ok": ok, "answer": r.text[:80],
                # vLLM's own split of TTFT: waiting to be scheduled, then scheduled to first token (prefill)
                "queue": _seconds(r.server.get("queue_time_ms")),
                "prefill": _seconds(r.server.get("time_to_first_token_ms"))})


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


class MixedUser(LLMUser):
    """Draws prompts of every bucket in turn (chat, completions, ramp, shared-prefix)."""

    abstract = SCENARIO == "long-vs-short"


class LongUser(LLMUser):
    """long-vs-short: the one user sending prompts near max_model_len."""

    abstract = SCENARIO != "long-vs-short"
    fixed_count = 1
    bucket_role = "long_bucket"


class ShortUser(LLMUser):
    """long-vs-short: the users sending the shortest prompts beside the long one."""

    abstract = SCENARIO != "long-vs-short"
    bucket_role = "short_bucket"


class RampShape(LoadTestShape):
    """ramp: equal steps up to --users over the run (LOADTEST_USERS, LOADTEST_DURATION_S)."""

    abstract = not SCENARIOS[SCENARIO].ramp

    def tick(self) -> tuple[int, float] | None:
        users = ramp_users(int(os.environ.get("LOADTEST_USERS", "8")),
                           float(os.environ.get("LOADTEST_DURATION_S", "300")), self.get_run_time())
        return None if users is None else (users, float(users))
