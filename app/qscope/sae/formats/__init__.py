"""One reader per SAE release format, each with `read(weights, cfg, k) -> SaeSpec` and `peek_layer(weights,
cfg)`; common.py holds what they share. Which reader a path needs is decided in qscope.sae.load."""
