"""Offline evaluation: answer metrics, retrieval metrics, significance tests.

Submodules are imported on demand (``from hybrid.eval.retrieval import load_beir, evaluate_run``)
so that importing the package stays cheap.
"""
