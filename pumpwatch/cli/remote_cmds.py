"""Commands: ``remote status`` and ``remote push`` (the shared object store, DESIGN §11)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pumpwatch.cli.app import ConfigOpt, DataDirOpt, app, settings_from
from pumpwatch.cli.store_cmds import human_age, human_bytes
from pumpwatch.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from pumpwatch.segments.remote import RemoteSettings
    from pumpwatch.settings import Settings

remote_app = typer.Typer(help="The shared store on S3-compatible object storage.", no_args_is_help=True)
app.add_typer(remote_app, name="remote")

UrlOpt = Annotated[str | None, typer.Option("--url", help="s3://bucket/prefix (default: remote.url)")]
EndpointOpt = Annotated[
    str | None, typer.Option("--endpoint-url", help="S3-compatible endpoint (default: remote.endpoint_url)")
]
RecorderOpt = Annotated[str | None, typer.Option("--recorder-id", help="default: remote.recorder_id")]


def _remote(
    config: Path | None,
    data_dir: Path | None,
    url: str | None,
    endpoint_url: str | None,
    recorder_id: str | None,
) -> tuple[Settings, RemoteSettings]:
    """Settings once, and the remote block with the command-line overrides applied, checked."""
    from pumpwatch.segments.remote import remote_settings, validate_remote

    settings = settings_from(config, data_dir)
    remote = remote_settings(settings)
    overrides = {
        k: v
        for k, v in (("url", url), ("endpoint_url", endpoint_url), ("recorder_id", recorder_id))
        if v is not None
    }
    remote = validate_remote(dataclasses.replace(remote, **overrides))
    if not remote.enabled:
        raise ConfigError("no remote store: set remote.url in the config or pass --url s3://bucket/prefix")
    if not settings.data_path.is_dir():
        raise StoreError(f"no data directory at {settings.data_path}")
    return settings, remote


@remote_app.command("status")
def status_cmd(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    url: UrlOpt = None,
    endpoint_url: EndpointOpt = None,
    recorder_id: RecorderOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """What is waiting for upload, the last upload and the failures (reads only local files)."""
    from pumpwatch.segments.upload import upload_status

    settings, remote = _remote(config, data_dir, url, endpoint_url, recorder_id)
    st = upload_status(settings.data_path, remote)
    if json_out:
        import orjson

        typer.echo(orjson.dumps(dataclasses.asdict(st)).decode())
        return
    now = time.time()
    age = None if st.last_upload_us is None else now - st.last_upload_us / 1e6
    typer.echo(f"remote  {st.url}  recorder={st.recorder_id}")
    typer.echo(f"backlog {st.backlog_files} file(s), {human_bytes(st.backlog_bytes)}")
    typer.echo(f"last upload {human_age(age)}{' ago' if age is not None else ''}")
    if st.consecutive_failures:
        typer.echo(f"FAILING {st.consecutive_failures} attempt(s) in a row: {st.last_error}")
    elif st.failures:
        typer.echo(f"failures {st.failures} since the uploader started (recovered)")


@remote_app.command("push")
def push_cmd(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    url: UrlOpt = None,
    endpoint_url: EndpointOpt = None,
    recorder_id: RecorderOpt = None,
) -> None:
    """Upload everything sealed now (rounds until the backlog is empty); exit 1 on a failure."""
    from pumpwatch.segments.upload import Uploader

    settings, remote = _remote(config, data_dir, url, endpoint_url, recorder_id)
    uploader = Uploader(settings.data_path, remote)
    try:
        total = 0
        while True:
            result = uploader.run_once()
            total += len(result.uploaded)
            if result.error is not None:
                typer.echo(f"uploaded {total} file(s); failed: {result.error}", err=True)
                raise typer.Exit(1)
            if result.backlog_files == 0 or (not result.uploaded and not result.skipped_same_bytes):
                break
    finally:
        uploader.stop()
    typer.echo(f"uploaded {total} file(s); backlog {result.backlog_files}")
