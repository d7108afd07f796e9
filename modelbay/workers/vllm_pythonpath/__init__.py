"""Modules that run inside a vLLM server ModelBay starts: this folder goes first on the server's PYTHONPATH.

So they import nothing from ModelBay (the server may run in another Python, MODELBAY_VLLM_PYTHON) and carry names
no other distribution uses (they are top-level modules there).
"""
