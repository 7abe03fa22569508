"""gpu-cost-operator: pack GPU workloads by memory slice, scale GPU pools on price, account cost.

Package rules (checked by tests/unit/test_layering.py):
- ``api`` and ``core`` are pure: no kopf, kubernetes client, NVML or network imports.
- ``adapters`` is the only place that talks to an outside system.
- ``handlers`` are thin kopf glue: read state through adapters, decide in ``core``, write back.
"""

__version__ = "0.1.0"
