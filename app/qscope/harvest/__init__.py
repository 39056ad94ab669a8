"""The harvest: one pass of a model over a corpus that fills the feature store for every feature of its SAEs.

corpus (token windows) -> run (forward, encode, checkpoints) -> state (per-feature statistics, top contexts and
interval samples, built on reservoir) -> effects and tables (logit effects, neighbors, labels) ->
qscope.store.writer. ids names models and SAEs; options holds the settings.
"""
