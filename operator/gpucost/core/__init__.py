"""Pure decisions: values in, values out. No asyncio, no I/O, no kopf/kubernetes imports."""
