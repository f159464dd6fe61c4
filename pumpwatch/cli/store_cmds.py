"""Commands: status, prune, verify (store helpers)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pumpwatch.cli.app import ConfigOpt, DataDirOpt, app, settings_from
from pumpwatch.errors import StoreError, UsageError


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


TABLE_HEADERS = (
    "STREAM",
    "CONN",
    "HOURS",
    "SIZE",
    "TRADES 1H",
    "LAST TRADE",
    "GAPS 24H",
    "PARSE ERR",
    "RECONN",
)
_LEFT = {0, 1, 6}  # text columns; figures align right


def _gaps_cell(s: dict[str, Any]) -> str:
    if s["recorded"] == "never":
        return "never recorded"
    if s["recorded"] == "store only":
        return "no journal"
    if not s["coverage_known_24h"]:
        return "unknown"
    if s["gaps_24h"]:
        total = "<1s" if s["gap_s_24h"] < 1 else human_age(s["gap_s_24h"])
        return f"{len(s['gaps_24h'])} ({total})"
    return "none"


def _counter_cell(s: dict[str, Any], key: str) -> str:
    counters = s["counters_24h"]
    return "-" if counters is None else f"{counters[key]:,}"


def _conn_cell(s: dict[str, Any]) -> str:
    liveness = s.get("liveness")
    if liveness is None:
        return "-"
    return "yes" if liveness == "connected" else "no"  # a stale stream gets a footer line


def liveness_lines(status: dict[str, Any]) -> list[str]:
    """One line per stream whose journal says recording but has been silent past the bound."""
    from pumpwatch.segments.coverage import TAIL_HEARTBEATS

    lines = []
    streams = status["streams"].values()
    bound = next((s["liveness_bound_s"] for s in streams if s.get("liveness_bound_s")), None)
    ages = [s["last_sign_of_life_age_s"] for s in streams if s.get("liveness") == "connected"]
    if ages and bound is not None:
        lines.append(
            f"connected: heard from {human_age(max(ages))} ago at most "
            f"(a stream counts as connected for {TAIL_HEARTBEATS} x heartbeat = {human_age(bound)})"
        )
    for stream, s in status["streams"].items():
        if s.get("liveness") == "stale":
            lines.append(
                f"{stream}: stale: no heartbeat for {human_age(s['last_sign_of_life_age_s'])} "
                f"(> {TAIL_HEARTBEATS} x heartbeat = {human_age(s['liveness_bound_s'])}): "
                "recorder not running?"
            )
    return lines


def status_rows(status: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row of table cells per stream, in `TABLE_HEADERS` order."""
    rows: list[tuple[str, ...]] = []
    for stream, s in status["streams"].items():
        conn = _conn_cell(s)
        age = s["last_trade_age_s"]
        rows.append(
            (
                stream,
                conn,
                str(s["hours_on_disk"]),
                human_bytes(s["bytes"]),
                f"{s['trades_last_hour']:,}",
                "-" if age is None else f"{human_age(age)} ago",
                _gaps_cell(s),
                _counter_cell(s, "parse_errors"),
                _counter_cell(s, "reconnects"),
            )
        )
    return rows


def _footer(status: dict[str, Any]) -> list[str]:
    disk, ret = status["disk"], status["retention"]
    lines = [
        f"data dir {status['data_dir']}",
        f"disk: {human_bytes(disk['used_bytes'])} used (segments {human_bytes(disk['segments_bytes'])}, "
        f"frames {human_bytes(disk['frames_bytes'])}), {human_bytes(disk['free_bytes'])} free"
        + ("" if disk["floor_bytes"] is None else f", floor {human_bytes(disk['floor_bytes'])}"),
    ]
    if disk["below_floor"]:
        lines.append("FREE DISK IS BELOW THE FLOOR: retention evicts the oldest files first")
    for label, kind, keep in (
        ("segments", "segments", ret["retention_s"]),
        ("frames", "frames", ret["frames_retention_s"]),
    ):
        if keep is None:
            continue
        span = ret[f"{kind}_span_s"]
        lines.append(
            f"{label}: {human_age(span) if span is not None else 'nothing'} on disk of "
            f"{human_age(keep)} retention, {human_bytes(round(ret[f'{kind}_bytes_per_day']))}/day"
            f" -> {human_bytes(ret[f'{kind}_projected_bytes'])} at full retention"
        )
    if ret["free_at_full_retention_bytes"] is not None:
        free_at_full = ret["free_at_full_retention_bytes"]
        verdict = {True: "above the floor", False: "UNDER THE FLOOR", None: ""}[ret["fits_above_floor"]]
        lines.append(
            f"at full retention {human_bytes(ret['projected_bytes'])} on disk, "
            f"{human_bytes(max(0, free_at_full))} free{': ' + verdict if verdict else ''}"
        )
    for stream, s in status["streams"].items():
        r = s.get("repairs_24h")
        if r and (r["id_gaps"] or r["repaired"] or r["unrepaired"]):
            lines.append(
                f"{stream}: {r['id_gaps']} id gap(s), {r['repaired']} span(s) repaired "
                f"({r['rest_trades']:,} trades from REST), {r['unrepaired']} still missing (24 h)"
            )
    lines += liveness_lines(status)
    for stream, s in status["streams"].items():
        nr = s.get("not_recorded")
        if nr and nr["symbols"]:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(nr["by_reason"].items()))
            some = ", ".join(sorted(nr["symbols"])[:5]) + (", …" if len(nr["symbols"]) > 5 else "")
            lines.append(f"{stream}: NOT RECORDED {len(nr['symbols'])} symbol(s) ({kinds}): {some}")
    damaged = {k: s for k, s in status["streams"].items() if s.get("files_damaged")}
    if damaged:
        parts = [
            f"{k} {s['batches_damaged']} batches in {s['files_damaged']} files" for k, s in damaged.items()
        ]
        lines.append("DAMAGED (rows left out, see `pumpwatch verify`): " + "; ".join(parts))
    lines += archive_lines(status)
    lines.append(
        f"{status['trades']:,} trades on disk, {status['trades_last_hour']:,} received in the last hour"
        " (gaps, errors: 24 h)"
    )
    return lines


def archive_lines(status: dict[str, Any]) -> list[str]:
    """Footer lines of the Parquet archive and, with a remote store, of the uploads."""
    lines: list[str] = []
    a = status.get("archive")
    if a:
        keep = "kept forever" if not a["retention_s"] else f"{human_age(a['retention_s'])} retention"
        if a["pending_hours"]:
            lines.append(
                f"archive: {human_bytes(a['bytes'])} ({keep}); {a['pending_hours']} sealed hour(s) not "
                f"archived yet, oldest sealed {human_age(a['lag_s'])} ago"
            )
        else:
            lines.append(f"archive: {human_bytes(a['bytes'])} ({keep}); every sealed hour archived")
    u = status.get("upload")
    if u:
        now_s = status["now_us"] / 1e6
        last = (
            "never" if u["last_upload_us"] is None else f"{human_age(now_s - u['last_upload_us'] / 1e6)} ago"
        )
        lines.append(
            f"upload: {u['url']} recorder={u['recorder_id']}: backlog {u['backlog_files']} file(s) "
            f"{human_bytes(u['backlog_bytes'])}, last upload {last}, {u['failures']} failure(s)"
        )
        if u["consecutive_failures"]:
            lines.append(f"UPLOAD FAILING {u['consecutive_failures']} round(s) in a row: {u['last_error']}")
    return lines


def format_status_table(status: dict[str, Any]) -> str:
    """The aligned per-stream table ``pumpwatch status`` prints (under 100 columns with the
    longest values), the disk and retention summary below it."""
    rows = status_rows(status)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(TABLE_HEADERS)]
    lines = []
    for row in (TABLE_HEADERS, *rows):
        cells = [
            c.ljust(w) if i in _LEFT else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.extend(_footer(status))
    return "\n".join(lines)


@app.command()
def status(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Per stream: connected, hours on disk, size, trades in the last hour, newest trade, gaps,
    parse errors and reconnects over 24 h; disk use against retention. Reads files only."""
    settings = settings_from(config, data_dir)
    from pumpwatch.segments.remote import remote_settings
    from pumpwatch.segments.status import store_status

    result = store_status(
        settings.data_path,
        retention_s=settings.storage.retention_s,
        frames_retention_s=settings.frames.retention_s,
        min_free_disk_mb=settings.storage.min_free_disk_mb,
        heartbeat_s=settings.recorder.heartbeat_s,
        archive_retention_s=settings.storage.archive_retention_s or None,
        remote=remote_settings(settings),
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
    from pumpwatch.recorder.pending_windows import pending_windows
    from pumpwatch.segments.remote import remote_settings
    from pumpwatch.segments.retention import prune as prune_store

    report = prune_store(
        root,
        retention_s=settings.storage.retention_s,
        min_free_disk_mb=settings.storage.min_free_disk_mb,
        frames_retention_s=settings.frames.retention_s,
        dry_run=dry_run,
        protected_spans=pending_windows(root, settings.extract.before_s, settings.extract.after_s),
        remote=remote_settings(settings),
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
        + (
            f"; {report.held_for_upload} segment(s) past retention kept until uploaded"
            if report.held_for_upload
            else ""
        )
    )


def format_verify(result: dict[str, Any]) -> str:
    """One line per file (``ok``, ``unchecked`` or ``DAMAGED``), one per damaged part, a total."""
    from pumpwatch.utctime import format_utc

    lines = []
    for v in result["file_verdicts"]:
        label = {"ok": "ok", "unchecked": "unchecked", "damaged": "DAMAGED"}[v["status"]]
        note = f"{v['batches_ok']}/{v['batches']} batches verified"
        if v["batches_unchecked"]:
            note += f", {v['batches_unchecked']} without checksum"
        lines.append(f"{label:<9} {v['path']}  ({note})")
        for d in v["damaged"]:
            rows = "? rows" if d["rows"] is None else f"{d['rows']} rows"
            span = f"{format_utc(d['time_min_us'])} .. {format_utc(d['time_max_us'])}"
            lines.append(f"          damaged {span} ({rows}): {d['reason']}")
    verdict = "no damage found" if result["ok"] else f"DAMAGE in {result['files_damaged']} file(s)"
    lines.append(
        f"{result['files']} file(s), {result['batches']:,} batches: {result['batches_ok']:,} verified, "
        f"{result['batches_unchecked']:,} without checksum (older segments); {verdict}"
    )
    return "\n".join(lines)


EXIT_DAMAGED = 1


@app.command()
def verify(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    streams: Annotated[
        str | None,
        typer.Option("--streams", help="Comma list of stream ids or exchange names (default: all)."),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="Range start: ISO 8601 with a zone, or epoch s/ms/µs/ns.")
    ] = None,
    end: Annotated[str | None, typer.Option("--end", help="Range end.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Check every record batch's checksum in the segment files (sealed and open) whose hour
    meets the range. Exit 0: no damage; 1: damage found (listed with its time spans). Changes
    nothing on disk: readers already skip damaged batches."""
    settings = settings_from(config, data_dir)
    root = settings.data_path
    if not root.is_dir():
        raise StoreError(f"data dir {root} does not exist (nothing recorded yet?)")
    from pumpwatch.segments.verify import summary, verify_store
    from pumpwatch.streams import parse_streams
    from pumpwatch.utctime import parse_time_us

    chosen = parse_streams(streams) if streams is not None else None
    start_us = parse_time_us(start, what="--start") if start is not None else None
    end_us = parse_time_us(end, what="--end") if end is not None else None
    if start_us is not None and end_us is not None and end_us < start_us:
        raise UsageError("--end is before --start")
    result = summary(verify_store(root, streams=chosen, start_us=start_us, end_us=end_us))
    if as_json:
        import orjson

        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(format_verify(result))
    if not result["ok"]:
        raise typer.Exit(EXIT_DAMAGED)
