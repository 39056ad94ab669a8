"""Explanations of features, written and scored by a language model (`qscope explain`), and people's own notes
and lists of features.

prompts: the explainer's and scorers' prompts from a feature's harvested contexts; scoring: detection and
fuzzing, balanced accuracy; client: an OpenAI-compatible endpoint with retries; local: a Hugging Face model in
this process; negatives: contexts where a feature does not fire; store: the explanations file beside a feature
store; runner: many features at once, resumable; notes: the app database of notes and lists.
"""
