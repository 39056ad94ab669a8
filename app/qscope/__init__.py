"""qscope: an explorer for the inside of Qwen language models (SAE features, search, steering)."""

__version__ = "0.1.0"
