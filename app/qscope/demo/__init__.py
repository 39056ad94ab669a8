"""The embedded default, mini-Qwen: a corpus of real text, a Qwen-style tokenizer, a small Qwen3 model and
its TopK SAEs, all built offline and deterministically by `qscope build-demo`."""
