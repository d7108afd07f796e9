"""Job functions, one module per job kind: `install` (downloads), `serve` (a vLLM server), `probe` (hardware).

Each module is imported by the worker only when a job of its kind runs, so heavy ML imports stay inside jobs.
"""
