"""Optimization: quantize, prune and export installed models, each variant measured against its parent."""
