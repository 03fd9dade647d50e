"""Evaluation harness: pure metric functions (``harmonia.evaluation.metrics``) and the code that
runs models to feed them (generation, log-likelihoods)."""
