"""A local control plane for the tests and the demo: kwokctl driving locally built binaries.

Dev tooling only; the operator itself never imports this package.
"""
