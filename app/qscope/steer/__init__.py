"""Live steering: specs (spec.py), batched steered generation (engine.py), the model worker (worker.py) and
the app database of shared runs (runs.py). Dependency direction: web -> steer -> (sae, model)."""
