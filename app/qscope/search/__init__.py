"""Concept search: the searcher that merges the kinds (searcher.py), the semantic index (semantic.py over
vectors.py, embedding what semantic_text.py says with embedder.py) and the text index (text_index.py)."""
