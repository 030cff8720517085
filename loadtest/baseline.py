"""The single-request baseline: every planned prompt sent alone, greedy and non-streaming, before the load
starts. Accuracy under load is then read against what the same server gives the same prompts unloaded,
so a low figure says "load broke it" only when the baseline was high."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import requests

from loadtest.plan import PATHS, payload
from longctx.passkey import first_number
from loadtest.server import auth

TIMEOUT_S = 900  # one request alone; an 8k prompt takes over a minute on a contended 2-core CPU


def answer_text(endpoint: str, response: dict) -> str:
    """The generated text of a non-streaming chat or completions response."""
    choice = response["choices"][0]
    return (choice.get("message") or {}).get("content") or "" if endpoint == "chat" else choice.get("text") or ""


def baseline_row(prompt: dict, text: str, failure: str | None, seconds: float) -> dict:
    """One baseline trial, with the fields summary.md groups by (bucket, kind, depth)."""
    ok = failure is None and first_number(text) == prompt["key"]
    return {"bucket": prompt["bucket"], "kind": prompt.get("kind", "spread"), "depth": prompt["depth"],
            "key": prompt["key"], "key_at": prompt.get("key_at"), "failure": failure, "passkey_ok": ok,
            "answer": text[:80], "e2e": seconds}


def ask_once(host: str, api_key: str | None, plan: dict, prompt: dict) -> dict:
    """Send one planned prompt alone and judge the answer; transport errors are recorded, not raised."""
    salt = uuid.uuid4().hex if plan["cache_salt"] else None
    start = time.perf_counter()
    try:
        resp = requests.post(f"{host}{PATHS[plan['endpoint']]}", json=payload(plan, prompt, salt, stream=False),
                             headers=auth(api_key), timeout=TIMEOUT_S)
    except requests.RequestException as e:
        return baseline_row(prompt, "", f"connect: {type(e).__name__}", time.perf_counter() - start)
    if resp.status_code != 200:
        return baseline_row(prompt, "", f"http {resp.status_code}", time.perf_counter() - start)
    return baseline_row(prompt, answer_text(plan["endpoint"], resp.json()), None, time.perf_counter() - start)


def run_baseline(host: str, api_key: str | None, plan: dict, out: Path, log=print) -> list[dict]:
    """Every planned prompt, one at a time; rows also go to `out` (JSON lines) as they come."""
    rows = []
    with open(out, "w") as f:
        for i, prompt in enumerate(plan["prompts"]):
            rows.append(ask_once(host, api_key, plan, prompt))
            f.write(json.dumps(rows[-1]) + "\n")
            f.flush()
            if (i + 1) % 10 == 0 or i + 1 == len(plan["prompts"]):
                log(f"loadtest: baseline {i + 1}/{len(plan['prompts'])} prompts, "
                    f"{sum(r['passkey_ok'] for r in rows)} correct")
    return rows
