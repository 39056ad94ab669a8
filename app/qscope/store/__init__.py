"""Storage: the DuckDB feature store (written by the harvest, read-only for the server) and the app database."""
