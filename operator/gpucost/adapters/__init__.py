"""The only I/O: one module per outside system."""
