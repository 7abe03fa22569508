"""Pydantic models of the custom resources; the single source of ``crds/*.yaml``.

Pure: imports nothing beyond pydantic and the standard library.
"""

GROUP = "gpucost.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
