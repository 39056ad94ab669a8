"""Measured steering: one intervention evaluated over a prompt set and a strength sweep against controls.

request (what is asked, its limits, prompt files), prompt_sets (built-in sets), arms (the rows to generate),
measures (concept, perplexity, text metrics, confidence intervals), verdict (computed from the numbers),
run (the engine: batched generation and read-back), result (what comes out), identity (content hashes),
jobs (server-side jobs with progress and cancel), recipes (the app database), markdown (the export).
"""
