"""Commands: status, prune (store helper)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pumpwatch.cli.app import ConfigOpt, DataDirOpt, app, settings_from
from pumpwatch.errors import StoreError


def human_bytes(n: int | None) -> str:
    """``1536`` -> ``"1.5 KiB"``; None -> ``"-"``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_age(seconds: float | None) -> str:
    """``75.0`` -> ``"1m15s"``; None -> ``"-"``; a negative age (clock skew) shows as ``0s``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_status_table(status: dict[str, Any]) -> str:
    """The aligned per-stream table ``pumpwatch status`` prints, with a disk summary below."""
    headers = ("STREAM", "HOURS", "FILES", "TRADES", "SIZE", "LAST WRITE", "LAST TRADE", "GAPS 24H", "CONN")
    rows = []
    for stream, s in status["streams"].items():
        files = f"{s['files_sealed']}" + (f"+{s['files_open']} open" if s["files_open"] else "")
        if not s["coverage_known_24h"]:
            gaps = "unknown"
        elif s["gaps_24h"]:
            gaps = f"{len(s['gaps_24h'])} ({human_age(s['gap_s_24h'])})"
        else:
            gaps = "none"
        conn = "-" if s["last_event_us"] is None else ("yes" if s["connected_now"] else "no")
        rows.append(
            (
                stream,
                str(s["hours_on_disk"]),
                files,
                f"{s['trades']:,}",
                human_bytes(s["bytes"]),
                human_age(s["last_write_age_s"]) + (" ago" if s["last_write_age_s"] is not None else ""),
                human_age(s["last_trade_age_s"]) + (" ago" if s["last_trade_age_s"] is not None else ""),
                gaps,
                conn,
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    left = {0, 8}  # text columns; figures align right
    lines = []
    for row in (headers, *rows):
        cells = [
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    disk = status["disk"]
    retention = status.get("retention_s")
    lines.append("")
    lines.append(
        f"data dir {status['data_dir']}: {human_bytes(disk['used_bytes'])} used "
        f"(segments {human_bytes(disk['segments_bytes'])}, frames {human_bytes(disk['frames_bytes'])}), "
        f"{human_bytes(disk['free_bytes'])} free"
    )
    if retention is not None:
        lines.append(
            f"retention {human_age(retention)} (frames {human_age(status.get('frames_retention_s'))}), "
            f"free-disk floor {status.get('min_free_disk_mb')} MiB; {status['trades']:,} trades on disk"
        )
    return "\n".join(lines)


@app.command()
def status(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Per stream: hours on disk, trades, bytes, last write, gaps in the last 24 h; disk use."""
    settings = settings_from(config, data_dir)
    from pumpwatch.segments.status import store_status

    result = store_status(
        settings.data_path,
        retention_s=settings.storage.retention_s,
        frames_retention_s=settings.frames.retention_s,
        min_free_disk_mb=settings.storage.min_free_disk_mb,
        heartbeat_s=settings.recorder.heartbeat_s,
    )
    if as_json:
        import orjson

        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(format_status_table(result))


@app.command()
def prune(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Apply retention and the free-disk floor now (segments, frame files, journal lines)."""
    settings = settings_from(config, data_dir)
    root = settings.data_path
    if not root.is_dir():
        raise StoreError(f"data dir {root} does not exist (nothing recorded yet?)")
    from pumpwatch.segments.retention import prune as prune_store

    report = prune_store(
        root,
        retention_s=settings.storage.retention_s,
        min_free_disk_mb=settings.storage.min_free_disk_mb,
        frames_retention_s=settings.frames.retention_s,
        dry_run=dry_run,
    )
    if as_json:
        import orjson

        typer.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    verb = "would delete" if dry_run else "deleted"
    for d in report.deleted:
        typer.echo(f"{verb} {d.kind:<7} {human_bytes(d.size_bytes):>10}  {d.reason:<9} {d.path}")
    lines = sum(report.journal_lines_dropped.values())
    typer.echo(
        f"{verb}: {report.count('segment')} segment(s) {human_bytes(report.bytes('segment'))}, "
        f"{report.count('frames')} frame file(s) {human_bytes(report.bytes('frames'))}, "
        f"{lines} journal line(s); free disk {human_bytes(report.free_bytes_after)}"
        + (" (still below the floor)" if report.below_floor else "")
    )
