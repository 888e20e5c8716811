"""The `vllm-server` engine: its client logic against a tiny fake OpenAI-compatible server (always
run), and against a real `vllm serve` this test starts on localhost (when vLLM is installed)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engines_support import smollm2_folder, tiny_world
from rm_lab.config import ConfigError
from rm_lab.policy.base import EngineConfig, GenerationConfig, flatten
from rm_lab.policy.engines import load_engine
from rm_lab.policy.engines.vllm import vllm_available
from rm_lab.policy.engines.vllm_server import (ServerError, ServerUnreachable, VLLMServerEngine,
                                               parse_chat_response)
from rm_lab.policy.prompts import conversations


class _Fake(BaseHTTPRequestHandler):
    """Answers like vLLM: n choices whose tokens depend on the request's seed, every other one cut."""

    requests: list = []
    models = ["smol"]
    fail_with: int | None = None
    token_ids = True

    def log_message(self, *a):
        pass

    def _send(self, code: int, obj: dict):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in type(self).models]})
        else:
            self._send(404, {"error": "no such route"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if type(self).fail_with:
            self._send(type(self).fail_with, {"error": {"message": "This model's maximum context length is 8"}})
            return
        seed = body["seed"]
        choices = []
        for i in range(body["n"]):
            toks = [100 + (seed + i) % 50, 101, 2] if i % 2 == 0 else [100 + (seed + i) % 50, 102, 103]
            toks = toks[:body["max_tokens"]]
            content = [{"token": f"token_id:{t}", "logprob": -0.1 * (k + 1), "top_logprobs": []}
                       for k, t in enumerate(toks)]
            ch = {"index": i, "message": {"role": "assistant", "content": f" reply {seed}-{i} "},
                  "logprobs": {"content": content}, "finish_reason": "stop" if i % 2 == 0 else "length"}
            if type(self).token_ids:
                ch["token_ids"] = toks
            choices.append(ch)
        self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"], "choices": choices,
                         "prompt_token_ids": [1, 2, 3], "usage": {}})


@pytest.fixture
def fake():
    _Fake.requests, _Fake.models, _Fake.fail_with, _Fake.token_ids = [], ["smol"], None, True
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def world():
    return tiny_world(3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_sends_the_generation_config_and_reads_n_completions(fake, world):
    contexts, chars = world
    eng = load_engine(EngineConfig(engine="vllm-server", url=fake + "/v1/"))
    assert eng.model == "smol"  # the server's first model by default
    convs = conversations(contexts, chars)
    cfg = GenerationConfig(n=2, temperature=0.7, top_p=0.9, max_new_tokens=3, seed=4)
    groups = eng.generate(convs, cfg)
    assert [len(g) for g in groups] == [2, 2, 2]
    bodies = sorted(_Fake.requests, key=lambda b: b["seed"])
    assert len(bodies) == 3 and len({b["seed"] for b in bodies}) == 3  # each conversation its own seed
    b = bodies[0]
    assert (b["n"], b["temperature"], b["top_p"], b["max_tokens"], b["ignore_eos"]) == (2, 0.7, 0.9, 3, False)
    assert b["logprobs"] is True and b["return_token_ids"] is True
    sent = {json.dumps(x["messages"]) for x in _Fake.requests}
    assert sent == {json.dumps(c) for c in convs}  # the card as system prompt, then the history
    for g in groups:
        first, second = g
        assert first.finished and first.token_ids[-1] == 2 and first.logprobs == pytest.approx((-0.1, -0.2, -0.3))
        assert not second.finished and first.prompt_token_ids == (1, 2, 3)
        assert first.text.startswith("reply")  # stripped
    again = eng.generate(convs, cfg)
    assert [c.text for c in flatten(groups)] == [c.text for c in flatten(again)]


def test_client_keeps_conversation_order_and_stop_at_eos(fake, world):
    contexts, chars = world
    eng = VLLMServerEngine(fake, max_concurrency=3)
    convs = conversations(contexts, chars)
    groups = eng.generate(convs, GenerationConfig(n=1, max_new_tokens=2, seed=0, stop_at_eos=False))
    seeds = [int(g[0].text.split()[1].split("-")[0]) for g in groups]
    from rm_lab.policy.engines.vllm import prompt_seed

    assert seeds == [prompt_seed(0, i) for i in range(3)]
    assert all(b["ignore_eos"] is True for b in _Fake.requests)
    assert eng.generate([], GenerationConfig()) == []


def test_token_ids_come_from_logprob_tokens_when_the_server_omits_them(fake, world):
    _Fake.token_ids = False
    contexts, chars = world
    eng = VLLMServerEngine(fake)
    g = eng.generate(conversations(contexts, chars)[:1], GenerationConfig(n=1, max_new_tokens=3, seed=1))
    assert g[0][0].token_ids[1:] == (101, 2)


def test_unreachable_server_is_one_clear_error():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ServerUnreachable, match=f"vllm-server {url} is unreachable") as e:
        load_engine(EngineConfig(engine="vllm-server", url=url))
    assert isinstance(e.value, ConfigError) and "\n" not in str(e.value)


def test_server_errors_are_named(fake, world):
    contexts, chars = world
    with pytest.raises(ServerError, match="serves \\['smol'\\], not 'other'"):
        VLLMServerEngine(fake, model="other")
    eng = VLLMServerEngine(fake)
    _Fake.fail_with = 400
    with pytest.raises(ServerError, match="HTTP 400.*maximum context length"):
        eng.generate(conversations(contexts, chars), GenerationConfig(n=1))
    with pytest.raises(ConfigError, match="needs a url"):
        load_engine(EngineConfig(engine="vllm-server"))
    with pytest.raises(ConfigError, match="expected http://host:port"):
        VLLMServerEngine("localhost:8000")


def test_a_short_answer_is_an_error():
    with pytest.raises(ServerError, match="asked for n=3 replies, got 1"):
        parse_chat_response({"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]}, 3)


# --------------------------------------------------------------------------- a real `vllm serve`


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.skipif(vllm_available() is not None, reason=str(vllm_available()))
def test_against_a_real_vllm_server(world, tmp_path):
    """`vllm serve` SmolLM2 on localhost; the engine's log-probs match the hf training forward."""
    import torch

    from rm_lab.models import load_policy
    from rm_lab.policy.logprobs import pack_completions, sequence_logprobs

    folder = smollm2_folder()
    port = _free_port()
    env = {**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
                             "--served-model-name", "smollm2", "--dtype", "float32", "--max-model-len", "1024",
                             "--port", str(port), "--host", "127.0.0.1", "--logprobs-mode", "processed_logprobs",
                             "--compilation-config", '{"mode": 0}'],  # eager: no minutes of warm-up
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 1100
        while True:
            if proc.poll() is not None:
                pytest.fail("vllm serve exited: " + (tmp_path / "server.log").read_text()[-2000:])
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("vllm serve did not come up: " + (tmp_path / "server.log").read_text()[-2000:])
                time.sleep(2)
        contexts, chars = world
        eng = load_engine(EngineConfig(engine="vllm-server", url=url))
        assert eng.model == "smollm2"
        cfg = GenerationConfig(n=2, max_new_tokens=8, temperature=0.8, seed=3)
        convs = conversations(contexts, chars)[:2]
        groups = eng.generate(convs, cfg)
        comps = flatten(groups)
        assert [len(g) for g in groups] == [2, 2] and all(c.n_tokens and c.prompt_token_ids for c in comps)
        assert all(len(c.logprobs) == c.n_tokens for c in comps)
        assert [c.token_ids for c in comps] == [c.token_ids for c in flatten(eng.generate(convs, cfg))]
        tok, model = load_policy(folder)
        batch = pack_completions(comps, tok.pad_token_id, (tok.eos_token_id,))
        with torch.no_grad():
            lp, mask = sequence_logprobs(model, batch, temperature=cfg.temperature)
        ref = torch.zeros_like(lp)
        for r, c in enumerate(comps):
            ref[r, :c.n_tokens] = torch.tensor(c.logprobs)
        assert ((lp - ref) * mask).abs().max().item() < 1e-3
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
