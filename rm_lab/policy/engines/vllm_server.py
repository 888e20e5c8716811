"""The `vllm-server` engine: any OpenAI-compatible server by URL (`vllm serve MODEL`), so generation
can run on other machines than training.

It speaks `/v1/chat/completions`: the server applies the model's chat template to the same
messages the other engines render locally, so no tokenizer is needed here. vLLM's extensions are
requested and used when present — `return_token_ids` (token ids of prompt and reply),
`return_tokens_as_token_ids`, `ignore_eos` — so a vLLM server gives full `Completion`s; a plain
OpenAI-compatible server gives text, `finished` and (if it reports them) log-probs. Start the server
with ``--logprobs-mode processed_logprobs`` for log-probs defined as the other engines define them.

Requests (one per conversation, carrying all n samples) run concurrently, so the server can batch
them; each carries its own seed (`cfg.seed` and the conversation's index), so results do not depend
on the order the server takes them in. Standard library HTTP only: no client package needed.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from rm_lab.config import ConfigError
from rm_lab.policy.base import Completion, Conversation, EngineConfig, GenerationConfig
from rm_lab.policy.engines.vllm import prompt_seed


class ServerUnreachable(ConfigError):
    """The configured server URL does not answer (a user-input error: one `error:` line in the CLI)."""


class ServerError(ConfigError):
    """The server answered with an error (bad model name, a prompt too long, ...)."""


def _base(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[:-3]
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"vllm-server url {url!r}: expected http://host:port (or https://)")
    return url


class VLLMServerEngine:
    name = "vllm-server"

    def __init__(self, url: str, model: str | None = None, timeout_s: float = 600.0, max_concurrency: int = 16,
                 api_key: str | None = None):
        if not url:
            raise ConfigError("the vllm-server engine needs a url (url=http://host:port)")
        self.url, self.timeout_s, self.api_key = _base(url), float(timeout_s), api_key
        self.max_concurrency = max(1, int(max_concurrency))
        served = self.models()  # fail now, not at the first generate, when the server is not there
        if model is None:
            if not served:
                raise ServerError(f"vllm-server {self.url}: /v1/models lists no model")
            model = served[0]
        elif served and model not in served:
            raise ServerError(f"vllm-server {self.url}: serves {served}, not {model!r}")
        self.model = model

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> "VLLMServerEngine":
        return cls(cfg.url or "", model=cfg.served_model, timeout_s=cfg.timeout_s)

    # -- HTTP

    def _request(self, path: str, body: dict | None = None, timeout: float | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout_s) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300].replace("\n", " ")
            raise ServerError(f"vllm-server {self.url}{path}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as e:
            why = getattr(e, "reason", e)
            raise ServerUnreachable(f"vllm-server {self.url} is unreachable ({why}); start one with "
                                    f"`vllm serve MODEL --port PORT` or fix url=") from None
        except ValueError as e:  # not JSON: not an OpenAI-compatible server
            raise ServerError(f"vllm-server {self.url}{path}: the answer is not JSON ({e})") from None

    def models(self) -> list[str]:
        out = self._request("/v1/models", timeout=min(30.0, self.timeout_s))
        return [str(m.get("id")) for m in out.get("data", []) if isinstance(m, dict) and m.get("id")]

    # -- the Engine protocol

    def _body(self, conv: Conversation, cfg: GenerationConfig, index: int) -> dict:
        return {"model": self.model, "messages": [dict(m) for m in conv], "n": int(cfg.n),
                "temperature": float(cfg.temperature), "top_p": float(cfg.top_p),
                "max_tokens": int(cfg.max_new_tokens), "seed": prompt_seed(cfg.seed, index, cfg.n),
                "logprobs": True, "top_logprobs": 0, "return_token_ids": True,
                "return_tokens_as_token_ids": True, "ignore_eos": not cfg.stop_at_eos,
                "skip_special_tokens": True}

    def generate(self, conversations: Sequence[Conversation], cfg: GenerationConfig) -> list[list[Completion]]:
        conversations = list(conversations)
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations))) as pool:
            answers = list(pool.map(lambda ic: self._request("/v1/chat/completions", self._body(ic[1], cfg, ic[0])),
                                    enumerate(conversations)))
        return [parse_chat_response(a, cfg.n, self.url) for a in answers]

    def close(self) -> None:
        pass  # the server belongs to whoever started it

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _token_id(tok) -> int | None:
    if isinstance(tok, str) and tok.startswith("token_id:"):
        try:
            return int(tok.split(":", 1)[1])
        except ValueError:
            return None
    return None


def parse_chat_response(answer: dict, n: int, where: str = "server") -> list[Completion]:
    """An OpenAI chat-completion answer -> `n` `Completion`s, in choice order."""
    choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != n:
        raise ServerError(f"vllm-server {where}: asked for n={n} replies, got {len(choices)}")
    prompt_ids = tuple(int(t) for t in (answer.get("prompt_token_ids") or []))
    out = []
    for ch in choices:
        content = ((ch.get("logprobs") or {}).get("content")) or []
        lps = tuple(float(e.get("logprob")) for e in content if e.get("logprob") is not None)
        ids = ch.get("token_ids")
        if ids is None:
            parsed = [_token_id(e.get("token")) for e in content]
            ids = parsed if content and all(t is not None for t in parsed) else []
        text = ((ch.get("message") or {}).get("content")) or ""
        out.append(Completion(text=text.strip(), token_ids=tuple(int(t) for t in ids),
                              logprobs=lps if len(lps) == len(ids) or not ids else lps[:len(ids)],
                              finished=ch.get("finish_reason") == "stop", prompt_token_ids=prompt_ids))
    return out
