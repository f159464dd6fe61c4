"""A local S3-compatible server (moto's server mode) on 127.0.0.1 for the remote-store tests.

Nothing here can reach AWS: the AWS environment is replaced by fake credentials, instance
metadata is disabled, and every pyarrow S3 filesystem the code opens during a test must point at
a loopback endpoint (`_loopback_only` fails the test otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs
import pytest

pytest.importorskip("moto.server", reason="moto[server] is needed for the remote-store tests")

from helpers.remote_store import BUCKET, S3Server, is_loopback
from moto.server import ThreadedMotoServer

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, no profile, no instance metadata: nothing can authenticate to AWS."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every S3 filesystem opened in a test must name a loopback endpoint (no default AWS)."""
    real = pafs.S3FileSystem

    def guarded(*args: Any, **kwargs: Any) -> pafs.S3FileSystem:
        endpoint = kwargs.get("endpoint_override") or ""
        host = endpoint.rsplit(":", 1)[0] if endpoint else ""
        if not is_loopback(host):
            raise AssertionError(f"test tried to open S3 at {endpoint or 'the default AWS endpoint'!r}")
        return real(*args, **kwargs)

    monkeypatch.setattr(pafs, "S3FileSystem", guarded)


@pytest.fixture
def s3_server(_no_aws: None) -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1 (a free port) with an empty bucket `BUCKET`."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert is_loopback(host), host
    s3 = S3Server(host=host, port=port, server=server)
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    # moto keeps every bucket of the process in memory: start each test from an empty one
    names = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
    if BUCKET in names:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    else:
        client.create_bucket(Bucket=BUCKET)
    try:
        yield s3
    finally:
        s3.stop()
