"""The CompressionJob worker: PyTorch, installed with `pip install .[compress]`; the operator never
imports it."""
