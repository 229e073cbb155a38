"""Runs: the run folder, the discovery pipeline (prepare, search, choose, refit, score, write) and campaigns."""
