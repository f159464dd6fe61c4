"""The HTML page of `pumpwatch report`: one static index.html over the study's numbers, with
figures and listing charts as relative image files beside it. No server, no network: system
fonts, no external script or style, a few lines of plain JavaScript for sorting and filtering
the overview. Every text that came from a file (notice titles above all, any field of metadata.json) is
escaped."""

from __future__ import annotations

import re
from html import escape
from typing import Any

_CSS = """
:root { color-scheme: light; --line: #d8dde3; --muted: #5b6570; --accent: #1f5fa8; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK KR",
       "Apple SD Gothic Neo", "Malgun Gothic", sans-serif;
       margin: 0; color: #1d232a; background: #f6f7f9; }
header { background: #16324f; color: #fff; padding: 18px 28px 14px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c9d6e3; }
nav { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line);
      padding: 8px 28px; }
nav a { margin-right: 18px; color: var(--accent); text-decoration: none; font-weight: 600; }
main { padding: 8px 28px 40px; max-width: 1500px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px;
          margin: 18px 0; }
h2 { font-size: 18px; margin: 0 0 10px; }
h3 { font-size: 16px; margin: 0 0 6px; }
.note { color: var(--muted); font-size: 12.5px; margin: 4px 0 10px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
td.n, th.n { text-align: right; }
thead th { background: #eef2f6; white-space: normal; vertical-align: bottom; }
#overview thead th { cursor: pointer; user-select: none; }
#overview thead th:hover { background: #dde6ef; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
tbody tr:hover { background: #f3f8ff; }
td.title { max-width: 260px; overflow: hidden; text-overflow: ellipsis; }
.tag { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 12px; }
.upbit { background: #e3efff; color: #134a8e; }
.manual { background: #f1eadf; color: #6b4a12; }
.bad { color: #b02a1f; font-weight: 600; }
.ok { color: #2a7a3b; }
.controls { display: flex; gap: 14px; align-items: center; margin: 6px 0 10px; flex-wrap: wrap; }
.controls input[type=search] { padding: 5px 8px; width: 260px; border: 1px solid var(--line);
                               border-radius: 5px; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 12px; }
.figs figure, .wide { margin: 0; }
.figs img, .wide img, .listing img { max-width: 100%; height: auto; border: 1px solid var(--line); }
.figs img { width: 100%; }
.wide { margin-top: 12px; }
.sub { display: block; color: var(--muted); font-size: 12px; }
figcaption { color: var(--muted); font-size: 12.5px; }
.listing dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0 10px; }
.listing dt { color: var(--muted); }
.listing dd { margin: 0; }
.top { float: right; font-size: 12.5px; }
.scroll { overflow-x: auto; }
"""

_JS = """
(function () {
  var table = document.getElementById("overview");
  var body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  var sortCol = -1, ascending = true;
  function value(row, col) { return row.cells[col].getAttribute("data-v"); }
  function sortBy(col) {
    ascending = col === sortCol ? !ascending : true;
    sortCol = col;
    var numeric = heads[col].getAttribute("data-type") === "num";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col), y = value(b, col);
      if (x === "" || y === "") { return (x === "") - (y === ""); }  // blanks last either way
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    heads[col].setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  for (var i = 0; i < heads.length; i++) {
    heads[i].addEventListener("click", sortBy.bind(null, i));
  }
  var text = document.getElementById("filter-text");
  var source = document.getElementById("filter-source");
  var pumped = document.getElementById("filter-pumped");
  var shown = document.getElementById("shown");
  function filter() {
    var q = text.value.trim().toLowerCase(), n = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      var ok = (!q || r.textContent.toLowerCase().indexOf(q) >= 0) &&
               (!source.value || r.getAttribute("data-source") === source.value) &&
               (!pumped.checked || r.getAttribute("data-pumped") === "1");
      r.hidden = !ok;
      n += ok ? 1 : 0;
    });
    shown.textContent = String(n);
  }
  text.addEventListener("input", filter);
  source.addEventListener("change", filter);
  pumped.addEventListener("change", filter);
})();
"""


def anchor(index: int, name: str) -> str:
    """The id of a listing's section: safe in a URL fragment whatever the directory name."""
    return f"L{index}-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _num(value: float | None, digits: int = 2, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:,.{digits}f}"


def _v(value: Any) -> str:
    """A data-v attribute: the raw sort value ('' for missing, sorted last)."""
    return "" if value is None else escape(str(value), quote=True)


def _td(text: str, sort: Any, *, num: bool = False, cls: str = "", title: str | None = None) -> str:
    classes = " ".join(c for c in ("n" if num else "", cls) if c)
    attrs = f' class="{classes}"' if classes else ""
    if title:
        attrs += f' title="{escape(title, quote=True)}"'
    return f'<td{attrs} data-v="{_v(sort)}">{text}</td>'


def _source_cell(src: dict[str, Any]) -> str:
    if src["kind"] == "upbit":
        title = src.get("title") or ""
        return _td(
            f'<span class="tag upbit">Upbit #{escape(str(src.get("notice_id")))}</span> {escape(title)}',
            f"upbit {title}",
            cls="title",
            title=title,
        )
    return _td(f'<span class="tag manual">{escape(src["kind"])}</span>', src["kind"])


def _not_whole_note(lst: dict[str, Any]) -> str:
    parts = []
    if lst["incomplete_streams"]:
        parts.append("incomplete: " + ", ".join(lst["incomplete_streams"]))
    if lst["unknown_streams"]:
        parts.append("coverage unknown: " + ", ".join(lst["unknown_streams"]))
    return "; ".join(parts)


def _coverage_cell(lst: dict[str, Any]) -> str:
    c, r, i, u = (lst[f"streams_{k}"] for k in ("complete", "repaired", "incomplete", "unknown"))
    text = f"{c} / {r} / " + (f'<span class="bad">{i}</span>' if i else "0")
    if u:
        text += f' <span class="bad">+{u} unknown</span>'
    return _td(text, i + u, num=True, title=_not_whole_note(lst) or "every stream complete or repaired")


def _first_cells(lst: dict[str, Any]) -> list[str]:
    """The overview's first pump and its lag: the credited first, or, when a stream with a
    gap leaves it open, "uncertain" with the first pump seen (its lag in grey)."""
    if not lst["detected"]:
        return [_td('<span class="bad">not detected</span>', None), _td("–", None, num=True)]
    if lst["first_pump_certain"] is None:
        return [_td('<span class="note">no pump</span>', None), _td("–", None, num=True)]
    if lst["first_pump_certain"]:
        lag = lst["first_pump_lag_ms"]
        return [
            _td(escape(lst["first_pump_stream"]), lst["first_pump_stream"]),
            _td(_num(lag, 3, 1e-3), lag / 1000.0, num=True),
        ]
    seen, lag = lst["first_seen_stream"], lst["first_seen_lag_ms"]
    why = (
        f"first pump seen on {seen}; not credited: "
        + ", ".join(lst["first_pump_doubt"])
        + " may have pumped earlier unseen (gap or unknown coverage)"
    )
    return [
        _td(
            f'<span class="bad">uncertain</span><span class="sub">seen first: {escape(seen)}</span>',
            f"~{seen}",
            title=why,
        ),
        _td(f'<span class="note">{_num(lag, 3, 1e-3)}</span>', lag / 1000.0, num=True, title=why),
    ]


def _overview(listings: list[dict[str, Any]]) -> str:
    heads = [
        ("Symbol", "str", ""), ("Trigger, UTC / KST", "num", ""), ("Source", "str", ""),
        ("Coverage", "num",
         "streams complete / repaired / incomplete (+ unknown); sorts by incomplete + unknown"),
        ("Pumped", "num", "streams that pumped / streams recorded"),
        ("First pump", "str",
         "uncertain: a stream with a gap or unknown coverage may have pumped before the first seen"),
        ("Lag after T, s", "num", "first pump's start after the trigger (grey: first seen, uncertain)"),
        ("Max rise, %", "num", ""),
        ("Volume ratio", "num", "largest volume spike ratio of its pumps"),
        ("Duration, s", "num", "first pump start to last pump end, all streams"),
    ]  # fmt: skip
    head = ""
    for k, (label, kind, tip) in enumerate(heads):
        attrs = f' data-type="{kind}"' + (' class="n"' if kind == "num" and k > 2 else "")
        attrs += f' title="{escape(tip, quote=True)}"' if tip else ""
        head += f"<th{attrs}>{escape(label)}</th>"
    rows = []
    for k, lst in enumerate(listings):
        link = f'<a href="#{anchor(k, lst["listing"])}">{escape(str(lst["symbol"]))}</a>'
        duration = lst["pump_duration_ms"]
        cells = [
            _td(link, lst["symbol"]),
            _td(
                f'{escape(lst["trigger_utc"])}<span class="sub">{escape(lst["trigger_kst"])}</span>',
                lst["trigger_time_us"],
            ),
            _source_cell(lst["source"]),
            _coverage_cell(lst),
            _td(f"{lst['streams_pumped']} / {lst['streams_total']}", lst["streams_pumped"], num=True),
            *_first_cells(lst),
            _td(_num(lst["max_rise_percent"]), lst["max_rise_percent"], num=True),
            _td(_num(lst["max_volume_ratio"], 1), lst["max_volume_ratio"], num=True),
            _td(_num(duration, 3, 1e-3), None if duration is None else duration / 1000.0, num=True),
        ]
        rows.append(
            f'<tr data-listing="{escape(lst["listing"], quote=True)}"'
            f' data-source="{escape(lst["source"]["kind"])}"'
            f' data-pumped="{1 if lst["events"] else 0}">{"".join(cells)}</tr>'
        )
    return (
        '<div class="controls"><input type="search" id="filter-text"'
        ' placeholder="Filter: symbol, stream, title…" aria-label="filter">'
        '<label>Source <select id="filter-source"><option value="">all</option><option value="upbit">Upbit'
        ' notice</option><option value="manual">manual</option></select></label>'
        '<label><input type="checkbox" id="filter-pumped"> only listings with a pump</label>'
        f'<span class="note"><span id="shown">{len(listings)}</span> of {len(listings)} shown;'
        " click a header to sort</span></div>"
        f'<div class="scroll"><table id="overview"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _spread_text(s: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    if not s["n"]:
        return "–"
    return (
        f"{s['median'] * scale:,.{digits}f} "
        f'<span class="note">[{s["q1"] * scale:,.{digits}f} – {s["q3"] * scale:,.{digits}f}]</span>'
    )


def _streams_table(streams: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    rows = []
    for s in streams:
        share = s["first_share"]
        left = (
            f'<span class="bad">{s["left_out"]}</span> <span class="note">({s["incomplete"]} incomplete, '
            f"{s['unknown']} unknown; {s['pumped_left_out']} of them pumped)</span>"
            if s["left_out"]
            else "0"
        )
        rows.append(
            "<tr>"
            f"<td>{escape(s['exchange'])}</td><td>{escape(s['market'])}</td>"
            f'<td class="n">{s["listings"]}</td><td class="n">{left}</td><td class="n">{s["pumped"]}</td>'
            f'<td class="n">{s["first"]} <span class="note">({_num(share, 0, 100.0)}%)</span></td>'
            f'<td class="n">{_spread_text(s["lag_ms"], 1e-3, 3)}</td>'
            f'<td class="n">{_spread_text(s["rise_percent"])}</td>'
            f'<td class="n">{_num(s["pump_volume_share"], 1, 100.0)}% '
            f'<span class="note">(n={s["pump_volume_share_n"]})</span></td>'
            "</tr>"
        )
    return (
        '<p class="note">Only whole streams (complete or repaired) count here: a listing where the stream '
        "was incomplete or of unknown coverage is <em>left out</em> of its pumped count, lag, rise and "
        "volume share (a gap may hide its pump, its start or its peak). Pumped first: over the "
        f"{totals['first_credited']} listing(s) whose first pump is certain; {totals['first_uncertain']} "
        "listing(s) credit nobody because a stream with a gap may have pumped earlier unseen. Lag: first "
        "pump start after T, median [quartiles q1 – q3; IQR = q3 − q1]. Rise: the stream's largest pump in a "
        "listing. Volume share: its share of the listing's pump volume (base units), averaged over the n "
        "listings with a pump and every stream whole.</p>"
        '<div class="scroll"><table id="streams"><thead><tr><th>Exchange</th><th>Market</th>'
        '<th class="n">Listings</th><th class="n">Left out (not whole)</th><th class="n">Pumped</th>'
        '<th class="n">Pumped first</th><th class="n">Lag after T, s</th><th class="n">Max rise, %</th>'
        '<th class="n">Pump volume share</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _coverage_text(lst: dict[str, Any]) -> str:
    text = f"{lst['streams_complete']} complete, {lst['streams_repaired']} repaired, "
    if not lst["streams_incomplete"]:
        text += "0 incomplete"
    else:
        names = ", ".join(lst["incomplete_streams"])
        text += f'<span class="bad">{lst["streams_incomplete"]} incomplete: {escape(names)}</span>'
    if lst["streams_unknown"]:
        names = ", ".join(lst["unknown_streams"])
        text += f', <span class="bad">{lst["streams_unknown"]} of unknown coverage: {escape(names)}</span>'
    return text


def _first_text(lst: dict[str, Any]) -> str:
    if lst["first_pump_certain"]:
        return ", first " + escape(lst["first_pump_stream"])
    if lst["first_pump_certain"] is False:
        return (
            f', first seen on {escape(lst["first_seen_stream"])}, <span class="bad">first uncertain</span>: '
            f"{escape(', '.join(lst['first_pump_doubt']))} may have pumped earlier unseen"
        )
    return ""


def _trades(value: Any) -> str:
    """A trade count from metadata.json (a shared store's may come from another machine)."""
    return "–" if value is None else escape(str(value))


def _listing_section(k: int, lst: dict[str, Any], chart_src: str | None) -> str:
    src = lst["source"]
    if src["kind"] == "upbit":
        source = (
            f'<span class="tag upbit">Upbit notice #{escape(str(src.get("notice_id")))}</span> '
            f'{escape(src.get("title") or "")} <span class="note">first listed at '
            f"{escape(str(src.get('first_listed_at')))}</span>"
        )
    else:
        source = f'<span class="tag manual">{escape(src["kind"])}</span>'
    rows = []
    for s in lst["streams"]:
        state = s["coverage"]
        cls = "ok" if state == "complete" else ("" if state == "repaired" else "bad")
        lag = s["first_pump_lag_ms"]
        rows.append(
            "<tr>"
            f"<td>{escape(s['stream'])}</td>"
            f'<td class="n">{_trades(s["trades"])}</td>'
            f'<td class="{cls}">{escape(state)}</td>'
            f"<td>{'yes' if s['pumped'] else ''}</td>"
            f'<td class="n">{_num(lag, 3, 1e-3)}</td>'
            f'<td class="n">{_num(s["lag_behind_first_ms"], 3, 1e-3)}</td>'
            f'<td class="n">{_num(s["max_pump_rise_percent"])}</td>'
            f'<td class="n">{_num(s["max_window_rise_percent"])}</td>'
            f'<td class="n">{_num(s["change_after_trigger_percent"])}</td>'
            f'<td class="n">{_num(s["volume_in_pumps"], 2)}</td>'
            "</tr>"
        )
    chart = (
        f'<img src="{escape(chart_src, quote=True)}" alt="chart of {escape(lst["listing"], quote=True)}"'
        ' loading="lazy" width="1100" height="600">'
        if chart_src
        else '<p class="note">no refined/chart.png in this listing</p>'
    )
    detected = "" if lst["detected"] else '<p class="bad">not detected yet: run pumpwatch detect on it</p>'
    return (
        f'<section class="listing" id="{anchor(k, lst["listing"])}">'
        '<a class="top" href="#overview-section">↑ overview</a>'
        f"<h3>{escape(str(lst['symbol']))} · {escape(lst['trigger_utc'])} · {escape(lst['trigger_kst'])}</h3>"
        f"<dl><dt>Directory</dt><dd>{escape(lst['listing'])}</dd><dt>Source</dt><dd>{source}</dd>"
        f"<dt>Trades</dt><dd>{_trades(lst['trades'])}</dd>"
        f"<dt>Coverage</dt><dd>{_coverage_text(lst)}</dd>"
        f"<dt>Pumped</dt><dd>{lst['streams_pumped']} of {lst['streams_total']} streams"
        f"{_first_text(lst)}</dd></dl>"
        f"{detected}{chart}"
        '<div class="scroll"><table><thead><tr><th>Stream</th><th class="n">Trades</th><th>Coverage</th>'
        '<th>Pumped</th><th class="n">First pump after T, s</th><th class="n">Behind first, s</th>'
        '<th class="n">Pump rise, %</th><th class="n">Max 1-window rise, %</th>'
        '<th class="n">Change after T, %</th><th class="n">Volume in pumps</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def render_page(
    study: dict[str, Any],
    figures: dict[str, str],
    charts: dict[str, str],
    *,
    generated_at: str,
    figure_dir: str = "img",
) -> str:
    """The whole index.html. `figures` maps figure files (under `figure_dir`) to captions,
    `charts` a listing name to its chart's relative path."""
    totals = study["totals"]
    listings = study["listings"]
    figs = "".join(
        f'<figure><img src="{figure_dir}/{name}" alt="{escape(caption, quote=True)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        for name, caption in figures.items()
        if name not in ("streams.png", "timeline.png")
    )
    wide = "".join(
        f'<figure class="wide"><img src="{figure_dir}/{name}" alt="{escape(caption, quote=True)}"></figure>'
        for name, caption in figures.items()
        if name in ("streams.png", "timeline.png")
    )
    skipped = "".join(f"<li>{escape(s['listing'])}: {escape(s['reason'])}</li>" for s in study["skipped"])
    span = (
        f"{escape(totals['first_listing_utc'])} to {escape(totals['last_listing_utc'])}"
        if listings
        else "no listings yet"
    )
    sections = "".join(_listing_section(k, lst, charts.get(lst["listing"])) for k, lst in enumerate(listings))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>PumpWatch: study across {totals['listings']} listings</title><style>{_CSS}</style></head>"
        "<body><header><h1>PumpWatch: study across listings</h1>"
        f"<p>{totals['listings']} listing(s), {span}; {totals['with_pump']} with a pump, "
        f"{totals['pump_events']} pump event(s); {totals['upbit']} from Upbit notices, "
        f"{totals['manual']} manual; {totals['with_incomplete_stream']} with an incomplete stream, "
        f"{totals['with_unknown_coverage']} with a stream of unknown coverage; first pump uncertain in "
        f"{totals['first_uncertain']}; {totals['events_left_out']} pump event(s) on such streams left out "
        "of the figures. "
        f"Generated {escape(generated_at)}.</p></header>"
        '<nav><a href="#overview-section">Overview</a><a href="#streams-section">Exchanges</a>'
        '<a href="#distributions">Distributions</a><a href="#listings">Listings</a>'
        '<a href="report.json">report.json</a><a href="listings.csv">listings.csv</a></nav><main>'
        f'<section id="overview-section"><h2>Listings</h2>{_overview(listings)}'
        + (f'<p class="bad">Skipped directories:</p><ul>{skipped}</ul>' if skipped else "")
        + "</section>"
        f'<section id="streams-section"><h2>Per exchange and market</h2>'
        f"{_streams_table(study['streams'], totals)}</section>"
        f'<section id="distributions"><h2>Distributions and timeline</h2><div class="figs">{figs}</div>'
        f"{wide}</section>"
        f'<div id="listings">{sections}</div>'
        f"</main><script>{_JS}</script></body></html>\n"
    )
