"""The explainer as a Hugging Face causal LM loaded in this process (`qscope explain --hf MODEL`), for a machine
without a server: the same `chat` call as qscope.explain.client, from many threads at once.

Calls that arrive together are run as one batched `generate` (left padding, the model's chat template): a
collecting thread takes every waiting call (up to `max_batch`) with the same sampling settings, generates, and
hands each caller its text. Greedy at temperature 0, else sampling seeded per batch.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from transformers import GenerationMixin

from qscope.explain.client import ContextTooLong, ExplainerError
from qscope.model import load_model


@dataclass
class _Call:
    messages: list[dict]
    max_tokens: int
    temperature: float
    seed: int
    done: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        return (self.max_tokens, self.temperature)


class LocalChat:
    """Chat completions from a Hugging Face model in this process (see the module docstring)."""

    def __init__(self, source: str, device: str = "auto", dtype: str = "auto", max_batch: int = 16) -> None:
        self.lm = load_model(source, device=device, dtype=dtype)
        tok = self.lm.tokenizer
        if tok is None or not getattr(tok, "chat_template", None):
            raise ExplainerError(f"{source} has no tokenizer with a chat template: an explainer needs one")
        tok.padding_side = "left"
        self.tokenizer, self.max_batch, self.name = tok, max_batch, self.lm.model_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.context = getattr(self.lm.model.config, "max_position_embeddings", None)  # None: no known bound
        self._calls: queue.Queue[_Call] = queue.Queue()
        threading.Thread(target=self._loop, name="local-explainer", daemon=True).start()

    def chat(self, messages: list[dict], *, max_tokens: int = 64, temperature: float = 0.0, seed: int = 0) -> str:
        if self.context:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])  # as _generate encodes it
            if n + max_tokens > self.context:
                raise ContextTooLong(f"{n} prompt tokens + {max_tokens} to answer pass the {self.context}-token window")
        call = _Call(messages, max_tokens, temperature, seed)
        self._calls.put(call)
        return call.done.result()

    def _loop(self) -> None:
        waiting: list[_Call] = []
        while True:
            waiting.append(waiting.pop(0) if waiting else self._calls.get())
            while True:  # everything queued now joins
                try:
                    waiting.append(self._calls.get_nowait())
                except queue.Empty:
                    break
            batch = [c for c in waiting if c.key == waiting[0].key][: self.max_batch]
            waiting = [c for c in waiting if c not in batch]
            try:
                texts = self._generate(batch)
            except Exception as e:  # noqa: BLE001 - every caller hears why
                for c in batch:
                    c.done.set_exception(ExplainerError(f"local generation failed: {e}"))
                continue
            for c, text in zip(batch, texts, strict=True):
                c.done.set_result(text)

    @torch.no_grad()
    def _generate(self, batch: list[_Call]) -> list[str]:
        prompts = [
            self.tokenizer.apply_chat_template(c.messages, tokenize=False, add_generation_prompt=True) for c in batch
        ]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.lm.device)
        first = batch[0]
        sampling = (
            {"do_sample": True, "temperature": first.temperature} if first.temperature > 0 else {"do_sample": False}
        )
        torch.manual_seed(first.seed)
        model = self.lm.model
        assert isinstance(model, GenerationMixin), "a causal LM loaded by load_model generates"
        out_BT = model.generate(**enc, max_new_tokens=first.max_tokens, pad_token_id=self.pad_id, **sampling)
        new_BT = out_BT[:, enc["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_BT, skip_special_tokens=True)
