"""The audit's outputs: a terminal summary, ``report.json`` and a self-contained
``report.html`` whose plots (matplotlib PNGs) are embedded as data URIs."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["fault_table", "in_order", "summary_table", "timeline_figure", "write_reports"]

SECTION_TITLES = {
    "latency": "1. Tail latency",
    "burst": "2. Throughput under burst",
    "consistency": "3. Consistency under concurrent writes",
    "availability": "4. Availability (faults under load)",
    "observability": "5. Observability",
}


def _verdict(value: Any) -> str:
    names = {True: "PASS", False: "FAIL", None: "SKIPPED"}
    return names[value] if value in names else str(value)


def _headline(name: str, section: dict[str, Any]) -> str:
    if "skipped" in section:
        return str(section["skipped"])
    if name == "latency":
        o = section["overall"]
        text = (
            f"{section['achieved_rate']:.0f}/{section['rate']:.0f} req/s; p50 {o['p50']:.3f} ms, "
            f"p99 {o['p99']:.3f} ms, p999 {o['p999']:.3f} ms, max {o['max']:.1f} ms"
        )
        if "max_rate_under_slo" in section:
            text += f"; max rate with p99 <= SLO: {section['max_rate_under_slo']['rate']:.0f} req/s"
        return text
    if name == "burst":
        peak = max(section["phases"], key=lambda p: p["rate"])
        recovery = ", ".join(
            f"{r['after']}: {'never' if r['seconds'] is None else str(r['seconds']) + ' s'}"
            for r in section["recovery"]
        )
        return (
            f"p99 baseline {section['phases'][0]['p99']:.2f} ms, at 5x {peak['p99']:.2f} ms; "
            f"recovery {recovery}; BUSY shed {section['shed_busy']}; errors {section['errors']}"
        )
    if name == "consistency":
        c = section["counters"]
        return (
            f"{section['operations']} ops on {section['keys']} keys: linearizable="
            f"{section['linearizable']}; CAS {'on' if section['compare_and_set'] else 'off'}; "
            f"{c['acknowledged']} increments, lost {len(c['lost_updates'])} counters"
        )
    if name == "availability" and "faults" in section:
        return (
            "; ".join(
                f"{f['title']}: no writes for {f['write_window_s']:.1f} s, "
                f"{f['acknowledged_writes_lost']} acknowledged writes lost"
                + ("" if f["pass"] else " (FAIL)")
                for f in section["faults"]
            )
            + " (table below)"
        )
    if name == "availability":
        lost = section["acknowledged_writes_lost"]
        return (
            f"{section['acknowledged_writes']} acknowledged writes, {lost} lost; unavailable "
            f"{section['unavailable_window_s']:.2f} s ({section['durability']})"
        )
    if name == "observability":
        counts = "; ".join(
            f"{r['what']}: sent {r['client_sent']}"
            + (f" ({r['warmup']} warm-up)" if r.get("warmup") else "")
            + (f", {r['uncertain']} unanswered/refused" if r.get("uncertain") else "")
            + f", counted {r['server_counted']}"
            for r in section["counts"]
        )
        missing = [k for k, v in section["signals"].items() if not v]
        return counts + (
            f"; missing signals {missing}" if missing else "; all four signals reported"
        )
    return ""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def in_order(sections: dict[str, Any]) -> list[tuple[str, Any]]:
    """The sections by their number (1 latency .. 5 observability), whatever order they were
    measured in (observability is measured during the latency phase); unknown ones last."""
    rank = {name: i for i, name in enumerate(SECTION_TITLES)}
    return sorted(sections.items(), key=lambda item: rank.get(item[0], len(rank)))


def summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"engramdb audit of {report['target']}: {_verdict(report['pass'])}")
    table.add_column("guarantee")
    table.add_column("result")
    table.add_column("figures")
    for name, section in in_order(report["sections"]):
        table.add_row(
            SECTION_TITLES.get(name, name), _verdict(section.get("pass")), _headline(name, section)
        )
    return table


def fault_table(report: dict[str, Any]) -> Table | None:
    """One row per fault injected into a cluster (None when none was)."""
    section = report["sections"].get("availability") or {}
    if "faults" not in section:
        return None
    table = Table(title=f"Availability of the cluster in {section['cluster']}")
    for column in (
        "fault", "result", "no writes", "no reads", "write p99 during/after",
        "read p99 during/after", "acked writes lost", "linearizable", "healed",
    ):  # fmt: skip
        table.add_column(column)
    for f in section["faults"]:
        w, r = f["writes"], f["reads"]
        table.add_row(
            f["title"], _verdict(f["pass"]),
            f"{f['write_window_s']:.2f} s", f"{f['read_window_s']:.2f} s",
            f"{_ms(w['during']['p99_ms'])} / {_ms(w['after']['p99_ms'])}",
            f"{_ms(r['during']['p99_ms'])} / {_ms(r['after']['p99_ms'])}",
            f"{f['acknowledged_writes_lost']} of {f['acknowledged_writes']}",
            str(f["history"]["linearizable"]), f"{f['healed_s']:.1f} s",
        )  # fmt: skip
    return table


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def timeline_figure(timeline: list[dict[str, float]]) -> Any:
    """p50/p99 per second of load over the requests sent in it: a matplotlib figure whose
    x axis starts at second 0 (each bar covers its second, [s, s + 1))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [p["second"] for p in timeline]
    middles = [s + 0.5 for s in seconds]  # a second's figures, drawn over its bar
    figure, axis = plt.subplots(figsize=(8, 3.2))
    axis.plot(middles, [p["p99_ms"] for p in timeline], label="p99")
    axis.plot(middles, [p["p50_ms"] for p in timeline], label="p50")
    axis.set_xlabel("second")
    axis.set_ylabel("latency (ms, from intended send time)")
    axis.set_yscale("log")
    axis.legend()
    axis2 = axis.twinx()
    axis2.bar(seconds, [p["count"] for p in timeline], width=1.0, align="edge", alpha=0.15,
              color="grey")  # fmt: skip
    axis2.set_ylabel("requests / s")
    axis.set_xlim(left=0, right=max(seconds, default=0) + 1)
    return figure


def _plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: list[tuple[str, str]] = []
    for name in ("latency", "burst"):
        section = report["sections"].get(name)
        if not section or "timeline" not in section or not section["timeline"]:
            continue
        figure = timeline_figure(section["timeline"])
        plots.append((f"{SECTION_TITLES[name]}: latency over time", _png(figure)))
    latency = report["sections"].get("latency")
    if latency and latency.get("operations"):
        figure, axis = plt.subplots(figsize=(8, 3.2))
        labels = ["p50", "p90", "p99", "p999", "max"]
        for op, stats in latency["operations"].items():
            axis.plot(labels, [stats[k] for k in labels], marker="o", label=op)
        axis.set_yscale("log")
        axis.set_ylabel("ms")
        axis.legend()
        plots.append(("Latency percentiles by operation", _png(figure)))
    return plots


_STYLE = """
body { font-family: sans-serif; max-width: 980px; margin: 2em auto }
td, th { padding: 4px 8px; border-bottom: 1px solid #ddd; vertical-align: top }
.pass { color: #070 } .fail { color: #b00; font-weight: bold } .skipped { color: #777 }
pre { background: #f6f6f6; padding: 1em; overflow: auto; font-size: 12px }
"""


def _html_row(name: str, section: dict[str, Any]) -> str:
    verdict = _verdict(section.get("pass"))
    return (
        f"<tr><td>{html.escape(SECTION_TITLES.get(name, name))}</td>"
        f"<td class='{verdict.lower()}'>{verdict}</td>"
        f"<td>{html.escape(_headline(name, section))}</td></tr>"
    )


def write_reports(report: dict[str, Any], directory: str) -> dict[str, str]:
    """Write report.json and report.html into ``directory``; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    json_path = os.path.join(directory, "report.json")
    with open(json_path, "w") as out:
        json.dump(report, out, indent=2, default=str)
    html_path = os.path.join(directory, "report.html")
    rows = "".join(_html_row(n, s) for n, s in in_order(report["sections"]))
    figures = "".join(
        f"<h3>{html.escape(title)}</h3><img src='{uri}' alt='{html.escape(title)}'>"
        for title, uri in _plots(report)
    )
    details = html.escape(json.dumps(report["sections"], indent=2, default=str))
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>engramdb audit: {html.escape(report["target"])}</title>
<style>{_STYLE}</style>
</head><body><h1>engramdb audit of {html.escape(report["target"])}: {_verdict(report["pass"])}</h1>
<p>Latency is measured from each request's intended (Poisson) send time,
so stalls are not hidden.</p>
<table><tr><th>guarantee</th><th>result</th><th>figures</th></tr>{rows}</table>
<p>{html.escape(" ".join(report.get("writes", {}).get("plan", [])))}</p>
<p>{html.escape(" ".join((report.get("cleanup") or {}).get("lines", [])))}</p>
{figures}<h2>All figures</h2><pre>{details}</pre></body></html>"""
    with open(html_path, "w") as out:
        out.write(page)
    return {"json": json_path, "html": html_path}


def print_summary(report: dict[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(summary_table(report))
