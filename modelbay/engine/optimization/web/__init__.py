"""The page an ONNX export carries (index.html and its script), copied into every export as package data."""
