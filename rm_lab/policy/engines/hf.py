"""The `hf` engine: transformers `generate`, batched with left padding, seeded, with per-token log-probs.

Rows (a prompt times its n samples) are sorted by prompt length and cut into batches of at most
`batch_rows` sequences, so little padding is computed; each batch samples under its own seed derived
from `cfg.seed`, so a run is reproducible for a fixed seed and batch size.

Log-probs: transformers' own warpers would hand a logits processor already temperature-scaled and
top-p-masked scores. Here generate gets no warpers of its own; the processors are, in order, a
recorder (log softmax(raw logits / T) of this step), then temperature, then top-p. A stopping
criterion, called right after each token is appended, reads the recorded log-prob of that token.
Only one step of the (rows x vocab) log-softmax is alive at a time.
"""

from __future__ import annotations

from typing import Sequence

import torch

from rm_lab.jobs import safe_point
from rm_lab.policy.base import Completion, Conversation, EngineConfig, GenerationConfig
from rm_lab.policy.engines.common import encode_prompts, eos_ids, make_completion

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _LogprobRecorder:
    """First logits processor: keeps log softmax(raw logits / T) of the current step."""

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.last = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores


class _LogprobGatherer:
    """A stopping criterion that never stops: it gathers the log-prob of each token just appended."""

    def __init__(self, recorder: _LogprobRecorder):
        self.recorder = recorder
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = self.recorder.last
        if last is not None and last.shape[0] == input_ids.shape[0]:
            self.steps.append(last.gather(1, input_ids[:, -1:]).squeeze(1))
            self.recorder.last = None
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class HFEngine:
    """A Hugging Face causal LM sampled with `generate`. `tokenizer` and `model` are public, so a
    trainer can update the very weights this engine samples from."""

    name = "hf"

    def __init__(self, tokenizer, model, batch_rows: int = 128):
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        self.tokenizer, self.model, self.batch_rows = tokenizer, model, int(batch_rows)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.eos = eos_ids(tokenizer, getattr(model, "generation_config", None))
        if not self.eos:
            raise ValueError("the policy's tokenizer has no EOS token; replies could not end")

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> "HFEngine":
        from rm_lab.models import load_policy

        if cfg.threads:
            torch.set_num_threads(cfg.threads)  # process-wide, as a job's setting should be
        tokenizer, model = load_policy(cfg.model or None, dtype=DTYPES[cfg.dtype])
        model.to(cfg.device)
        return cls(tokenizer, model, batch_rows=cfg.batch_rows)

    # -- the Engine protocol

    def generate(self, conversations: Sequence[Conversation], cfg: GenerationConfig) -> list[list[Completion]]:
        conversations = list(conversations)
        if not conversations:
            return []
        prompts = encode_prompts(self.tokenizer, conversations)
        rows = sorted(((i, j) for i in range(len(prompts)) for j in range(cfg.n)),
                      key=lambda r: (-len(prompts[r[0]]), r[0], r[1]))
        out: list[list[Completion | None]] = [[None] * cfg.n for _ in prompts]
        for b, start in enumerate(range(0, len(rows), self.batch_rows)):
            safe_point()  # a stopped job ends between batches (rm_lab.jobs)
            chunk = rows[start:start + self.batch_rows]
            ids = [prompts[i] for i, _ in chunk]
            seed = (int(cfg.seed) * 1_000_003 + b) % (2 ** 63)
            gen, lps = self._generate_batch(ids, cfg, seed)
            for k, (i, j) in enumerate(chunk):
                out[i][j] = make_completion(self.tokenizer, gen[k], lps[k], self.eos, cfg.stop_at_eos, prompts[i])
        return out  # type: ignore[return-value]

    def close(self) -> None:
        pass  # weights are freed with the object; nothing runs in the background

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- one batch

    @torch.inference_mode()
    def _generate_batch(self, prompt_ids: list[list[int]], cfg: GenerationConfig, seed: int):
        from transformers import GenerationConfig as HFGenerationConfig
        from transformers import LogitsProcessorList, StoppingCriteriaList, TemperatureLogitsWarper, TopPLogitsWarper

        device = next(self.model.parameters()).device
        pad = int(self.tokenizer.pad_token_id)
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        attention = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for r, p in enumerate(prompt_ids):
            if p:
                input_ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
                attention[r, width - len(p):] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)

        sample = cfg.temperature > 0
        temperature = float(cfg.temperature) if sample else 1.0
        recorder = _LogprobRecorder(temperature)
        processors = [recorder]
        if sample and temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if sample and cfg.top_p < 1.0:
            processors.append(TopPLogitsWarper(float(cfg.top_p)))
        gatherer = _LogprobGatherer(recorder)
        gen_cfg = HFGenerationConfig(
            max_new_tokens=int(cfg.max_new_tokens), do_sample=sample, temperature=1.0, top_p=1.0, top_k=0,
            num_beams=1, pad_token_id=pad, eos_token_id=list(self.eos) if cfg.stop_at_eos else None,
            bos_token_id=getattr(self.tokenizer, "bos_token_id", None),
            return_dict_in_generate=True, output_scores=False, output_logits=False,
        )
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            res = self.model.generate(
                input_ids=input_ids, attention_mask=attention, generation_config=gen_cfg,
                logits_processor=LogitsProcessorList(processors),
                stopping_criteria=StoppingCriteriaList([gatherer]),
            )
        gen = res.sequences[:, width:].cpu()
        if gatherer.steps:
            lps = torch.stack(gatherer.steps, dim=1).cpu()
        else:
            lps = torch.zeros((gen.shape[0], 0))
        if lps.shape[1] != gen.shape[1]:  # defensive: never return misaligned log-probs
            raise RuntimeError(f"hf engine: {lps.shape[1]} log-prob steps for {gen.shape[1]} generated tokens")
        return gen.tolist(), lps.tolist()
