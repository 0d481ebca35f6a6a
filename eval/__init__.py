"""Evaluation harness: compare explainer/scorer/LLM configurations on one seeded feature sample.

The logic lives in :mod:`labeler.runs.evaluate` (so ``labeler eval`` works from any folder);
``python -m eval.harness CONFIG`` is the same, run from the repository root.
"""
