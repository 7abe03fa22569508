"""Where the worker's URIs point: a path on the job's claim (``file://`` or bare), an S3 prefix
(``s3://bucket/key``) or a Hub repository (``hf://org/name[@revision]``).

Remote inputs are copied into a scratch folder first and a remote output is uploaded once the
result is complete, so the methods only ever see local folders and a half-written model never
appears in the bucket. S3 goes through boto3 with the standard AWS environment (the job's
credentials Secret, ``AWS_ENDPOINT_URL`` for a store that is not AWS); the Hub through
huggingface_hub with ``HF_TOKEN``. Every failure is one line naming the URI and what to fix.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpucost.worker.data import WorkerError, first_line, local

SCRATCH = "GPUCOST_SCRATCH"
"""Where remote inputs and outputs are staged (the claim, for models larger than the pod's disk)."""


def _scratch(uri: str) -> Path:
    root = Path(os.environ.get(SCRATCH) or tempfile.gettempdir())
    return root / "gpucost-staging" / hashlib.sha256(uri.encode()).hexdigest()[:16]


def fetch(uri: str) -> Path:
    """A local path holding what ``uri`` names: the path itself, or a staged copy."""
    if uri.startswith("s3://"):
        return _S3(uri).download(_scratch(uri))
    if uri.startswith("hf://"):
        return _hub(uri, _scratch(uri))
    if "://" in uri and not uri.startswith("file://"):
        raise WorkerError(f"{uri}: unsupported scheme (use file://, s3:// or hf://)")
    return local(uri)


def output(uri: str) -> Path:
    """The local folder to write ``uri``'s result into (publish it with :func:`publish`)."""
    if uri.startswith("s3://"):
        _S3(uri)  # a malformed URI fails before any work is done
        return _scratch(uri) / "out"
    if uri.startswith("hf://"):
        raise WorkerError(f"{uri}: outputs go to file:// or s3://, not the Hub")
    return local(uri)


def publish(folder: Path, uri: str) -> None:
    if uri.startswith("s3://"):
        _S3(uri).upload(folder)


class _S3:
    def __init__(self, uri: str) -> None:
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket:
            raise WorkerError(f"{uri}: no bucket (s3://bucket/prefix)")
        self.uri, self.bucket, self.key = uri, bucket, key.rstrip("/")

    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        # boto3 reads AWS_ENDPOINT_URL itself; path-style addressing works on every S3 clone.
        config = Config(
            retries={"mode": "standard", "max_attempts": 5}, s3={"addressing_style": "path"}
        )
        return boto3.client("s3", config=config)

    def download(self, into: Path) -> Path:
        with _s3_errors(self.uri):
            client = self._client()
            keys = self._keys(client)
            if self.key in keys:  # one object: a dataset file
                into.mkdir(parents=True, exist_ok=True)
                target = into / Path(self.key).name
                client.download_file(self.bucket, self.key, str(target))
                return target
            prefix = f"{self.key}/" if self.key else ""
            below = [k for k in keys if k.startswith(prefix) and not k.endswith("/")]
            if not below:
                raise WorkerError(f"{self.uri}: no such object or prefix in bucket {self.bucket}")
            for key in below:
                target = into / key[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(self.bucket, key, str(target))
            return into

    def _keys(self, client: Any) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def upload(self, folder: Path) -> None:
        with _s3_errors(self.uri):
            client = self._client()
            for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                key = "/".join(filter(None, (self.key, file.relative_to(folder).as_posix())))
                client.upload_file(str(file), self.bucket, key)


def _missing(keys: str) -> str:
    """What to fix when credentials are missing: the Secret the job names, or naming one."""
    secret = os.environ.get("GPUCOST_CREDENTIALS_SECRET")
    if secret:
        return f"Secret {secret} does not exist or lacks {keys}"
    return f"give the job spec.credentialsSecret, a Secret with {keys}"


@contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """botocore's exceptions as the one line a job's status shows."""
    from botocore import exceptions as e

    try:
        yield
    except (e.NoCredentialsError, e.PartialCredentialsError):
        raise WorkerError(
            f"{uri}: no credentials ({_missing('AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY')})"
        ) from None
    except (e.EndpointConnectionError, e.ConnectTimeoutError) as error:
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "AWS")
        raise WorkerError(f"{uri}: cannot reach the S3 endpoint {endpoint} ({error})") from None
    except e.ClientError as error:
        info = error.response.get("Error", {})
        code = info.get("Code", "error")
        raise WorkerError(f"{uri}: {code}: {info.get('Message') or error}") from None
    except e.BotoCoreError as error:
        raise WorkerError(f"{uri}: {error}") from None


def _hub(uri: str, into: Path) -> Path:
    """A Hub snapshot (``hf://org/name@revision``), gated repos through ``HF_TOKEN``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    repo, _, revision = uri[len("hf://") :].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise WorkerError(f"{uri}: name a Hub repository as hf://org/name[@revision]")
    try:
        return Path(
            snapshot_download(
                repo, revision=revision or None, token=os.environ.get("HF_TOKEN"), local_dir=into
            )
        )
    except GatedRepoError:
        raise WorkerError(
            f"{uri}: the repository is gated ({_missing('an HF_TOKEN with access to it')})"
        ) from None
    except RepositoryNotFoundError:
        token = "" if os.environ.get("HF_TOKEN") else " (or private: no HF_TOKEN was given)"
        raise WorkerError(f"{uri}: no such repository on the Hub{token}") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        raise WorkerError(
            f"{uri}: the Hub at {endpoint} cannot be reached ({first_line(e)})"
        ) from None
