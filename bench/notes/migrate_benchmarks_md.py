"""One-off (2026-12-05): move the numbers of the hand-grown BENCHMARKS.md into JSON.

    python bench/notes/migrate_benchmarks_md.py OLD_BENCHMARKS.md [SCRIPT=OLD_JSON ...]

Before ``bench/render.py`` existed, every script wrote its own markdown section and most
numbers lived only there (the full runs take hours on the 2-core box, so they were not re-run).
This parses each section into schema-1 JSON for the renderer: tables cell for cell as
published, prose kept as notes, the machine block as a dict, marked "carried over from the run
of <date>". Areas whose script still writes its own JSON (server, vectors, cluster) go to
``bench/results/carried/``; the rest to ``bench/results/<script>.json``. Profiles (cProfile
tables) go to ``bench/notes/<area>-profile.md`` instead. No number is computed here: the
headline rows quote the targets and sentences of the old page.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from render import AREAS, sections  # noqa: E402

LEGACY = {"server", "vectors", "cluster"}

# Which tables the page shows (substring of the table's title); the rest stay in the JSON.
PUBLISH = {
    "records": ["Latency and throughput"],
    "server": ["Throughput"],
    "sessions-cache": ["Cache hits", "Stampede"],
    "batches": [""],
    "features": ["Online: get_online_features"],
    "memory": ["Latency"],
    "vectors": ["At the recall targets"],
    "vector-libs": ["Build and search"],
    "search-quality": ["Search quality"],
    "integrations": [""],
    "audit": [""],
    "cluster": ["Failover under load", "Latency: cluster engine"],
    "redis-py-suite": ["redis-py's command tests"],
}
# The first table of each of these titles only (the others under it are detail). Integrations:
# the graph runs and the vector stores, not the savers' own operations (its second table).
FIRST_ONLY = {
    "Online: get_online_features", "Failover under load", "Search quality",
    "redis-py's command tests", "Recall on the labelled paraphrased queries",
}  # fmt: skip


def parse_table(lines: list[str]) -> dict[str, Any]:
    def cells(line: str) -> list[str]:
        inner = line.strip()[1:-1]
        return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]

    spec = cells(lines[1])
    align = "".join(
        "r" if s.endswith(":") and not s.startswith(":") else "c" if s == ":-:" else "l"
        for s in spec
    )
    return {"headers": cells(lines[0]), "align": align, "rows": [cells(x) for x in lines[2:]]}


def parse_machine(text: str) -> dict[str, str]:
    return dict(re.findall(r"^- \*\*(.+?)\*\*: (.*)$", text, flags=re.M))


def split_blocks(body: str) -> list[tuple[str, str]]:
    """(kind, text) in order: heading, table, details, text."""
    blocks: list[tuple[str, str]] = []
    lines = body.split("\n")
    i = 0
    para: list[str] = []

    def flush() -> None:
        text = "\n".join(para).strip()
        if text:
            blocks.append(("text", text))
        para.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            flush()
            blocks.append(("heading", line))
        elif line.startswith("|"):
            flush()
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            blocks.append(("table", "\n".join(lines[i:j])))
            i = j
            continue
        elif line.startswith(("<details>", "</details>")) or not line.strip():
            flush()
        else:
            para.append(line)
        i += 1
    flush()
    return blocks


def migrate(area: str, script: str, body: str, notes_dir: Path) -> dict[str, Any]:
    blocks = split_blocks(body)
    title = blocks[0][1].lstrip("# ").strip()
    data: dict[str, Any] = {
        "schema": 1,
        "area": area,
        "title": title,
        "command": f"python bench/{script}.py",
        "about": "",
        "quick": False,
        "carried_over": "",
        "machine": {},
        "headline": [],
        "tables": [],
        "notes": [],
    }
    heading = title
    path: list[str] = []
    pending: list[str] = []  # text seen under the current heading before its next table
    profile: list[str] = []
    in_profile = False
    in_machine = False
    seen_first_table = False
    for kind, text in blocks[1:]:
        if kind == "heading":
            level = len(text) - len(text.lstrip("#"))
            name = text.lstrip("# ").strip()
            if pending:
                data["notes"].append(
                    {"title": " / ".join(path) or title, "text": "\n\n".join(pending)}
                )
                pending = []
            path = [*path[: level - 3], name] if level >= 3 else [name]
            in_profile = name.startswith("Profile")
            in_machine = name == "Machine"
            if in_profile:
                profile.append(text)
            heading = " / ".join(path)
            continue
        if in_profile:
            profile.append(text)
            continue
        if text.startswith("Machine:") and kind == "text":
            in_machine = True
            rest = text[len("Machine:") :].strip()
            if rest:
                data["machine"].update(parse_machine(rest))
            continue
        if in_machine or (kind == "text" and text.startswith("- **date**")):
            data["machine"].update(parse_machine(text))
            continue
        if kind == "table":
            t = parse_table(text.split("\n"))
            t_title = heading if path else title
            t["title"] = t_title
            t["text"] = "\n\n".join(pending)
            pending = []
            data["tables"].append(t)
            seen_first_table = True
            continue
        # text
        if not path and not seen_first_table and not data["about"]:
            data["about"] = text
        elif not path and not seen_first_table:
            data["about"] += "\n\n" + text
        else:
            pending.append(text)
    if pending:
        data["notes"].append({"title": " / ".join(path) or title, "text": "\n\n".join(pending)})
    # A table's own description stays with it; text after the last table of a heading is a note.
    keys = PUBLISH[area]
    published_titles: set[str] = set()
    for t in data["tables"]:
        match = next((k for k in keys if k in t["title"]), None)
        if (
            match is None
            or (match in FIRST_ONLY and t["title"] in published_titles)
            or (area == "integrations" and t["headers"][1] == "put p50")
        ):
            t["publish"] = False
        else:
            t["publish"] = True
            published_titles.add(t["title"])
    # The command line of the old section is the first backticked `python bench/...` phrase.
    data["about"] = re.sub(r"^`python bench/\S+\.py`[.:]?\s*(— )?", "", data["about"]).strip()
    date = data["machine"].get("date", "")
    data["carried_over"] = f"carried over from the run of {date}"
    if profile:
        out = notes_dir / f"{area}-profile.md"
        out.write_text(
            f"# {title}: profile of the run of {date}\n\n"
            "Moved out of BENCHMARKS.md (an investigation, not a comparison).\n\n"
            + "\n\n".join(profile)
            + "\n",
            encoding="utf-8",
        )
    return data


def main() -> int:
    old = Path(sys.argv[1]).read_text(encoding="utf-8")
    page = sections(old)
    notes_dir = ROOT / "bench" / "notes"
    sys.path.insert(0, str(notes_dir))
    from migrate_headline import HEADLINE, SUMMARY

    # SCRIPT=PATH: the raw JSON a script wrote in its old format, kept under "raw".
    raws = dict(arg.split("=", 1) for arg in sys.argv[2:])
    for area, script in AREAS:
        data = migrate(area, script, page[area], notes_dir)
        if script in raws:
            data["raw"] = json.loads(Path(raws[script]).read_text(encoding="utf-8"))
        data["headline"] = HEADLINE.get(area, [])
        data["summary"] = SUMMARY[area]
        target = (
            ROOT / "bench" / "results" / ("carried" if area in LEGACY else "") / f"{script}.json"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"{area}: {len(data['tables'])} tables, {len(data['notes'])} notes -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
