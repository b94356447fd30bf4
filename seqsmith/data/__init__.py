"""Data pipeline: read raw corpora, tokenize, binarize into memory-mapped arrays and batch them.

Modules are imported directly (``from seqsmith.data.prepare import prepare``) so that preparing data
never imports torch; only ``batching`` needs it.
"""
