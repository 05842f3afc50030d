"""Decisions (issue 7): in-process decision latency, and `profile { nextBestOffers }` under load.

    python bench/run.py decisions                          # both parts on SQLite
    python bench/run.py decisions -- --part latency \\
        --database-url postgresql+psycopg://postgres@127.0.0.1/postgres
    python bench/decisions.py --part latency --analyse     # + SQL timings, cProfile, EXPLAIN
    python bench/decisions.py --part graphql               # = graphql_profile.py --query offers

**latency** (DESIGN §7: *decision with 100 candidate offers: p99 < 20 ms in-process*): a fresh
migrated database (SQLite in a temporary directory, or a throw-away PostgreSQL database);
`--profiles` people sent through `cdp.ingest.pipeline.ingest_now` (an identify with realistic
traits, then 40 to 80 page views, product views, cart adds, orders, searches and logins over the
last 120 days); model scores written into `scores` (8 of 10 `propensity_<category>` scores,
`churn`, `ltv`, a `persona` label); 100 offers saved with `catalogue.upsert_offer` (eligibility
conditions mixing traits and event history with windows, Jinja content using traits and scores,
a `propensity` score, values, tags, some validity windows, budgets and prerequisites); caps,
consent, quiet hours and suppression in `[decisions]` and an `arbitration` strategy
(`CONFIG_TOML`). One `Decider` (as a server process has one) then decides `--decisions` times
after `--warmup`, for the profiles in turn (round-robin), `DecisionContext("web", "home",
limit=3)`; each decision's wall time is measured around `decide()`.

Every decision writes 3 presentations, which the caps count: the profiles take turns so that
each one gets about (warm-up + decisions) / profiles decisions, well under the caps (profile
100/day, channel 80/day); the per-offer cap (3 per 7 days) does bite, so the top offers rotate,
as they would for a returning visitor. The run says how many decisions gave fewer than 3 offers.

**graphql**: bench/graphql_profile.py with `--query offers`: the same config and offers on the
demo data (profiles enriched with the traits, events and scores the offers test), GraphQL
`profile(id) { id traits nextBestOffers(...) {...} }` against a plain Starlette endpoint doing
the same work (read the profile, call the same decider, return the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib.util
import io
import json
import math
import os
import pstats
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, insert, select

from cdp.collect.messages import Message, parse_message
from cdp.config import load_config
from cdp.db.engine import make_engine
from cdp.db.migrate import upgrade
from cdp.db.models import Identifier, Profile, Score, utcnow
from cdp.decisions import catalogue, pipeline
from cdp.decisions.pipeline import Decider, DecisionContext
from cdp.ingest.pipeline import ingest_now
from cdp.runtime import Runtime

HERE = Path(__file__).resolve().parent
P99_TARGET_MS = 20.0
CONTEXT = DecisionContext("web", "home", limit=3)
SOURCE = "bench"
CATEGORIES = [
    "shoes", "outerwear", "accessories", "bags", "electronics",
    "home", "beauty", "sports", "kids", "books",
]  # fmt: skip
TAGS = ["clearance", "new-in", "premium", "seasonal", "loyalty"]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Lin", "Sofia"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
CITIES = [
    ("Berlin", "DE", "Europe/Berlin"),
    ("Paris", "FR", "Europe/Paris"),
    ("London", "GB", "Europe/London"),
    ("Madrid", "ES", "Europe/Madrid"),
    ("Amsterdam", "NL", "Europe/Amsterdam"),
    ("New York", "US", "America/New_York"),
]
COUNTRIES = [c for _, c, _ in CITIES]

CONFIG_TOML = """
[traits.types]
age = "number"
signed_up_at = "datetime"
interests = "list"
newsletter = "boolean"
loyalty_tier = "string"
"address.city" = "string"

[decisions]
default_strategy = "nba"
placements = { home = "nba" }
consent = { email = "marketing" }
caps = [
  { per = "profile", max = 100, within = "1d" },
  { per = "channel", max = 80, within = "1d" },
  { per = "offer", max = 3, within = "7d" },
]
quiet_hours = { sms = { start = "21:00", end = "08:00" } }
suppression = { negatives = 3, within = "30d" }

[[strategies]]
name = "nba"
type = "arbitration"
default_propensity = 0.05
weights = { home = 1.5, email = 0.8 }
tag_levers = { clearance = 1.3, "new-in" = 1.1 }
"""
"""The `[decisions]` (and the trait types the offers' conditions test) of both parts."""


def _graphql_module() -> Any:
    """bench/graphql_profile.py (bench/ is not a package), loaded once."""
    name = "bench_graphql_profile"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "graphql_profile.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/decisions.py", description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "latency", "graphql"), default="all")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server to use instead of SQLite, e.g. "
        "postgresql+psycopg://postgres@127.0.0.1/postgres (a throw-away database is created "
        "on it and dropped afterwards)",
    )
    parser.add_argument("--decisions", type=int, default=1000, help="latency: timed [1000]")
    parser.add_argument("--warmup", type=int, default=100, help="latency: untimed first [100]")
    parser.add_argument(
        "--profiles", type=int, default=200, help="latency: profiles decided in turn [200]"
    )
    parser.add_argument("--offers", type=int, default=100, help="latency: candidate offers [100]")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-contains",
        action="store_true",
        help="leave out `contains` trait tests (a workaround: on PostgreSQL, with cdp/db/"
        "prepared.py as of this writing, they make every decision fail)",
    )
    parser.add_argument(
        "--analyse",
        action="store_true",
        help="latency: then time each SQL statement, cProfile, and EXPLAIN the statements "
        "(separate runs of --analyse-decisions decisions; the figures above are without them)",
    )
    parser.add_argument("--analyse-decisions", type=int, default=300)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="latency: then decide from this many threads at once for --threads-seconds, as a "
        "server's threadpool does (40 in Starlette's) [0: skip]",
    )
    parser.add_argument("--threads-seconds", type=float, default=75.0, help="(crosses a minute)")
    parser.add_argument("--demo-profiles", type=int, default=2000, help="graphql: demo profiles")
    parser.add_argument("--connections", type=int, default=50, help="graphql: clients [50]")
    parser.add_argument("--duration", type=int, default=15, help="graphql: measured s [15]")
    parser.add_argument("--graphql-warmup", type=int, default=5, help="graphql: warm-up s [5]")
    parser.add_argument(
        "--baseline", choices=("threadpool", "inline"), default="threadpool", help="graphql"
    )
    args = parser.parse_args(argv)
    status = 0
    if args.part in ("all", "latency"):
        status = max(status, bench_latency(args))
    if args.part in ("all", "graphql"):
        graphql = [
            "--query",
            "offers",
            "--profiles",
            str(args.demo_profiles),
            "--connections",
            str(args.connections),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.graphql_warmup),
            "--baseline",
            args.baseline,
            *(["--database-url", args.database_url] if args.database_url else []),
            *(["--no-contains"] if args.no_contains else []),
        ]
        print(f"\n-- graphql: graphql_profile.py {' '.join(graphql)}", flush=True)
        status = max(status, int(_graphql_module().main(graphql) or 0))
    return status


# --- 1. in-process latency -----------------------------------------------------------------------


def bench_latency(args: argparse.Namespace) -> int:
    gp = _graphql_module()
    busy = gp._machine_busy()
    with (
        tempfile.TemporaryDirectory(prefix="cdp-bench-") as tmp,
        gp._database(args.database_url, Path(tmp)) as url,
    ):
        engine = make_engine(url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        config = Path(tmp) / "cdp.toml"
        config.write_text(f"[database]\nurl = {json.dumps(url)}\n{CONFIG_TOML}", encoding="utf-8")
        runtime = Runtime.start(load_config(config))
        try:
            return _latency(runtime, url, args, busy)
        finally:
            runtime.close()


def _latency(runtime: Runtime, url: str, args: argparse.Namespace, busy: float) -> int:
    gp = _graphql_module()
    rng = random.Random(args.seed)
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    users = [f"bench-{n:04d}" for n in range(1, args.profiles + 1)]
    events = load_people(runtime, rng, users, now, full=True)
    ids = _profile_ids(runtime, users)
    scores = write_scores(runtime, rng, ids)
    definitions = offer_definitions(args.offers, args.seed, now, not args.no_contains)
    for definition in definitions:
        catalogue.upsert_offer(runtime, "catalogue", definition)
    print(
        f"latency: {gp._database_version(url)}; {len(ids)} profiles with {events:,} events "
        f"(through ingest_now) and {scores:,} scores, {len(definitions)} offers saved with "
        f"upsert_offer{' (no contains tests)' if args.no_contains else ''} "
        f"(setup {time.perf_counter() - started:.0f} s); {args.warmup} warm-up + "
        f"{args.decisions} timed decisions for web/home, limit 3, profiles in turn; "
        f"load average {_loadavg()}",
        flush=True,
    )
    if busy > 0.15:
        print(f"warning: the machine is {busy:.0%} busy before the run: expect noisy numbers")

    decider = Decider(runtime)  # one per process, as the server's decider_for keeps
    turn = _turns(ids)
    start = time.perf_counter()
    try:
        first = decider.decide(next(turn), CONTEXT)
    except Exception as exc:  # say what failed rather than a traceback of the benchmark
        print(f"FAIL: the first decision failed: {type(exc).__name__}: {str(exc)[:600]}")
        if "json" in str(exc).lower() and not args.no_contains:
            print("(on PostgreSQL, --no-contains leaves out the trait tests that fail so)")
        return 1
    cold_ms = (time.perf_counter() - start) * 1000
    for _ in range(max(args.warmup - 1, 0)):
        decider.decide(next(turn), CONTEXT)
    cpu_before, load_before = time.process_time(), _loadavg()
    times: list[float] = []
    cpu_times: list[float] = []  # this thread's CPU time: the wall time less waiting for a core
    given: Counter[int] = Counter()
    rules: Counter[str] = Counter()
    with _counting_builds() as builds:
        wall = time.perf_counter()
        for _ in range(args.decisions):
            profile_id = next(turn)
            start, cpu_start = time.perf_counter(), time.thread_time()
            decided = decider.decide(profile_id, CONTEXT)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.thread_time() - cpu_start)
            given[len(decided.offers)] += 1
            rules.update(f["rule"] for f in decided.filtered)
        wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu_before
    load_after = _loadavg()

    ms = sorted(t * 1000 for t in times)
    p50, p95, p99 = (_percentile(ms, p) for p in (50, 95, 99))
    n = len(ms)
    print(
        f"first decision (cold: offers loaded, eligibility query built): {cold_ms:.1f} ms, "
        f"{len(first.offers)} offers"
    )
    print(f"{'decisions':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'mean ms':>8} {'per s':>6} {'cpu ms/dec':>10}")  # fmt: skip
    print(
        f"{n:>9} {p50:>7.2f} {p95:>7.2f} {p99:>7.2f} {ms[-1]:>7.2f} {sum(ms) / n:>8.2f} "
        f"{n / wall:>6.0f} {cpu * 1000 / n:>10.2f}"
    )
    tenth = max(n // 10, 1)
    print(
        f"p50 of the first and last 10 % of the timed decisions: "
        f"{_percentile(sorted(t * 1000 for t in times[:tenth]), 50):.2f} ms, "
        f"{_percentile(sorted(t * 1000 for t in times[-tenth:]), 50):.2f} ms "
        "(the presentation history grows as they run)"
    )
    print(
        "per decision, offers filtered by rule: "
        + ", ".join(f"{rule} {count / n:.1f}" for rule, count in rules.most_common())
    )
    short = sum(count for size, count in given.items() if size < CONTEXT.limit)
    print(
        f"decisions with fewer than {CONTEXT.limit} offers: {short} of {n} "
        f"(offers given: {dict(sorted(given.items()))})"
    )
    cpu_ms = sorted(t * 1000 for t in cpu_times)
    scope = (
        "without the PostgreSQL server's work and the round trips"
        if runtime.engine.dialect.name == "postgresql"
        else "SQLite's work included: about what an idle core would take"
    )
    cpu50, cpu95, cpu99 = (_percentile(cpu_ms, p) for p in (50, 95, 99))
    print(
        f"CPU time of the deciding thread per decision ({scope}): "
        f"p50 {cpu50:.2f} ms, p95 {cpu95:.2f} ms, p99 {cpu99:.2f} ms"
    )
    each = ", ".join(f"{b * 1000:.0f} ms" for b in builds)
    print(
        f"eligibility statement rebuilt {len(builds)} times during them"
        + (f" ({each}; the design: once per set of offers)" if builds else "")
    )
    print(f"load average before / after the timed decisions: {load_before} / {load_after}")
    print(f"decision p99: {p99:.2f} ms (target < {P99_TARGET_MS:.0f} ms)", flush=True)

    if args.analyse:
        analyse(runtime, decider, turn, args.analyse_decisions)
    if args.threads > 0:
        concurrent(decider, ids, args.threads, args.threads_seconds)
    return 0


def _turns(ids: list[str]) -> Iterator[str]:
    while True:
        yield from ids


def _percentile(ordered: list[float], p: float) -> float:
    """Nearest rank."""
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# --- the data ------------------------------------------------------------------------------------


def _message(type_: str, at: datetime, number: int, **fields: Any) -> Message:
    """A validated message, as tests/identity_helpers.py `msg` builds them (received now)."""
    body = {"type": type_, "messageId": f"{SOURCE}-{number}", "timestamp": at.isoformat(), **fields}
    return parse_message(body, None, max(datetime.now(UTC), at + timedelta(seconds=1)), None)


def _traits(rng: random.Random, now: datetime, n: int) -> dict[str, Any]:
    city, country, zone = rng.choice(CITIES)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "first_name": first,
        "last_name": last,
        "email": f"{first.lower()}.{last.lower()}{n}@example.com",
        "plan": rng.choice(["free", "free", "plus", "pro", "team"]),
        "country": country,
        "address": {"city": city, "zip": f"{rng.randint(10000, 99999)}"},
        "timezone": zone,
        **_extra_traits(rng, now),
    }


def _extra_traits(rng: random.Random, now: datetime) -> dict[str, Any]:
    """The traits the offers test that the demo's shoppers lack."""
    return {
        "age": rng.randint(18, 75),
        "loyalty_tier": rng.choice(["bronze", "bronze", "silver", "gold"]),
        "newsletter": rng.random() < 0.6,
        "interests": rng.sample(CATEGORIES, rng.randint(1, 4)),
        "signed_up_at": (now - timedelta(days=rng.randint(1, 900))).isoformat(),
    }


def _activity(rng: random.Random, at: datetime, user_id: str, number: int) -> Message:
    kind = rng.choices(
        ["page", "Product Viewed", "Product Added", "Order Completed", "Search", "Login"],
        [5, 4, 2, 1, 1, 2],
    )[0]
    category = rng.choice(CATEGORIES)
    price = rng.choice([9.0, 19.0, 29.0, 49.0, 89.0, 129.0, 189.0])
    if kind == "page":
        path = rng.choice(["/", "/new", "/sale", f"/{category}", "/help/returns"])
        return _message("page", at, number, userId=user_id, properties={"path": path})
    if kind == "Order Completed":
        qty = rng.randint(1, 3)
        props: dict[str, Any] = {
            "order_id": f"o-{rng.getrandbits(32):08x}",
            "total": price * qty,
            "currency": "EUR",
            "category": category,
            "products": [{"sku": f"SKU-{rng.randint(100, 999)}", "quantity": qty}],
        }
    elif kind == "Search":
        props = {"query": rng.choice(["rain jacket", "running", "gift", category])}
    elif kind == "Login":
        props = {"method": rng.choice(["password", "google", "apple"])}
    else:
        props = {"sku": f"SKU-{rng.randint(100, 999)}", "category": category, "price": price}
    return _message("track", at, number, userId=user_id, event=kind, properties=props)


def load_people(
    runtime: Runtime, rng: random.Random, users: list[str], now: datetime, full: bool
) -> int:
    """Send each user an identify and some history through `ingest_now`; returns the number of
    events. `full`: new people (all traits, 40 to 80 events over 120 days); else existing ones
    (the demo's) get the traits the offers test and 5 to 15 events over 30 days."""
    messages: list[Message] = []
    number = rng.getrandbits(40) * 1000
    for n, user in enumerate(users, 1):
        traits = _traits(rng, now, n) if full else _extra_traits(rng, now)
        span = 120 if full else 30
        joined = now - timedelta(days=span, hours=1)
        number += 1
        fields: dict[str, Any] = {"userId": user, "traits": traits}
        if full:
            fields["anonymousId"] = f"anon-{rng.getrandbits(48):012x}"
            fields["context"] = {
                "consent": {"categoryPreferences": {"marketing": rng.random() < 0.7}}
            }
        messages.append(_message("identify", joined, number, **fields))
        for _ in range(rng.randint(40, 80) if full else rng.randint(5, 15)):
            number += 1
            at = now - timedelta(seconds=rng.randint(60, span * 86_400))
            messages.append(_activity(rng, at, user, number))
    messages.sort(key=lambda m: m.timestamp)
    for start in range(0, len(messages), 1000):
        ingest_now(runtime, messages[start : start + 1000], SOURCE)
    return len(messages) - len(users)


def _profile_ids(runtime: Runtime, users: list[str]) -> list[str]:
    with runtime.sessions() as session:
        found = dict(
            session.execute(
                select(Identifier.value, Identifier.profile_id).where(
                    Identifier.type == "user_id", Identifier.value.in_(users)
                )
            ).all()
        )
    return [found[u] for u in users]


def write_scores(runtime: Runtime, rng: random.Random, ids: list[str]) -> int:
    """What enrichment models would have written: 8 of the 10 propensity scores, churn, ltv and
    a persona label, for every profile."""
    at = utcnow()
    rows: list[dict[str, Any]] = []
    for profile_id in ids:
        named: dict[str, tuple[float | None, str | None]] = {
            f"propensity_{c}": (round(rng.betavariate(2, 8), 4), None)
            for c in rng.sample(CATEGORIES, 8)
        }
        named["churn"] = (round(rng.random(), 4), None)
        named["ltv"] = (round(rng.lognormvariate(5, 1), 2), None)
        named["persona"] = (None, rng.choice(["bargain hunter", "loyal", "browser", "new"]))
        rows.extend(
            {
                "profile_id": profile_id,
                "name": name,
                "value": value,
                "label": label,
                "model_version": "bench-1",
                "scored_at": at,
            }
            for name, (value, label) in named.items()
        )
    with runtime.transaction() as session:
        session.execute(insert(Score.__table__), rows)
    return len(rows)


_GREET = "{{ profile.traits.first_name | default('there') }}"
_CITY = "{{ profile.traits.address.city | default('your city') }}"
_INTERESTS = (
    "{% for i in profile.traits.interests %}{{ i | title }}"
    "{% if not loop.last %}, {% endif %}{% endfor %}"
)


def _trait_conditions(rng: random.Random, category: str, contains: bool) -> list[dict[str, Any]]:
    interests = {"trait": "interests", "op": "contains", "value": category}
    if not contains:
        interests = {"trait": "loyalty_tier", "op": "in", "value": ["silver", "gold"]}
    return [
        {"trait": "plan", "op": "in", "value": ["free", "plus"]},
        {"trait": "plan", "op": "in", "value": ["pro", "team"]},
        {"trait": "age", "op": ">=", "value": rng.choice([21, 25, 30])},
        {"trait": "age", "op": "between", "value": [18, rng.choice([35, 45, 55])]},
        {"trait": "country", "op": "in", "value": rng.sample(COUNTRIES, 3)},
        {"trait": "loyalty_tier", "op": "!=", "value": "bronze"},
        {"trait": "newsletter", "op": "=", "value": True},
        interests,
        {"trait": "signed_up_at", "op": "within_last", "value": "365d"},
        {"trait": "address.city", "op": "exists"},
    ]


def _event_conditions(rng: random.Random, category: str) -> list[dict[str, Any]]:
    by_category = [{"property": "category", "op": "=", "value": category}]
    return [
        {"event": "Product Viewed", "within": "30d"},
        {"event": "Product Viewed", "where": by_category, "within": "60d"},
        {"event": "Order Completed", "within": "90d", "count": {"op": ">=", "value": 2}},
        {
            "event": "Order Completed",
            "within": "90d",
            "sum": {"property": "total", "op": ">=", "value": rng.choice([100, 200, 300])},
        },
        {"not": {"event": "Order Completed", "within": "30d"}},
        {"event": "Product Added", "within": "14d"},
        {"event": "Login", "within": "30d", "count": {"op": ">=", "value": 2}},
        {"event": "Search", "within": "30d"},
    ]


def _eligibility(rng: random.Random, i: int, category: str, contains: bool) -> dict[str, Any]:
    """A trait test, an event-history test, both, or an either-or of them."""
    traits = _trait_conditions(rng, category, contains)
    events = _event_conditions(rng, category)
    shape = i % 5
    if shape == 0:
        return rng.choice(traits)
    if shape == 1:
        return rng.choice(events)
    if shape in (2, 3):
        return {"and": [rng.choice(traits), rng.choice(events)]}
    return {"or": [rng.choice(events), {"and": [rng.choice(traits), rng.choice(events)]}]}


def _content(i: int, category: str) -> dict[str, Any]:
    web = {
        "title": f"{_GREET}, {{{{ offer.value }}}} % off {category}",
        "body": f"Picked for you in {_CITY}, for your love of {_INTERESTS}.",
        "cta": f"Shop {category}",
        "image": "/img/{{ offer.key }}.webp",
    }
    if i % 4 == 1:
        web["badge"] = "{{ profile.scores.persona | default('new') | title }}"
    email = {
        "subject": f"{_GREET}, something for {_CITY}",
        "text": f"{{{{ offer.name }}}}: {{{{ offer.value }}}} % off {category}.",
        "html": f"<p>Hello {_GREET},</p><p>{{{{ offer.name }}}} in {_CITY}</p>",
    }
    slot = i % 10
    if slot <= 6:
        return {"web": web, "email": email}
    if slot <= 8:
        return {"*": web}
    return {"email": email}  # no content for the web: filtered by channel


def offer_definitions(
    count: int, seed: int, now: datetime, contains: bool = True
) -> list[dict[str, Any]]:
    """`count` offers; about 1 in 10 has no web content, 1 in 10 a validity window, 2 are
    expired, 1 in 10 has a budget, 1 in 20 a prerequisite."""
    rng = random.Random(seed)
    offers = []
    for i in range(count):
        category = CATEGORIES[i % len(CATEGORIES)]
        offer: dict[str, Any] = {
            "key": f"bench-{i:03d}",
            "name": f"{category.title()} offer {i}",
            "value": rng.choice([5, 10, 15, 20, 25, 40, 60, 100]),
            "cost": round(rng.uniform(0, 5), 2),
            "priority": rng.randint(0, 10),
            "levers": rng.choice([1, 1, 1, 1.2, 0.8]),
            "tags": rng.sample(TAGS, rng.randint(0, 2)),
            "eligibility": _eligibility(rng, i, category, contains),
            "propensity": f"propensity_{category}",
            "content": _content(i, category),
        }
        if i % 10 == 3:
            offer["valid_from"] = (now - timedelta(days=30)).isoformat()
            offer["valid_until"] = (now + timedelta(days=30)).isoformat()
        if i in (count - 2, count - 3):
            offer["valid_until"] = (now - timedelta(days=1)).isoformat()
        if i % 10 == 5:
            offer["budget"] = 10_000_000
        if i % 20 == 7:
            offer["prerequisites"] = [{"offer": f"bench-{i - 1:03d}", "outcome": "shown"}]
        offers.append(offer)
    return offers


def prepare_served(config: Path, seed: int = 7, contains: bool = True) -> str:
    """For graphql_profile.py --query offers, after `cdp demo`: give the demo's people the
    traits, events and scores the offers test, replace the demo's offers with the benchmark's,
    and describe what was done."""
    runtime = Runtime.start(load_config(config))
    try:
        rng = random.Random(seed)
        now = datetime.now(UTC).replace(microsecond=0)
        with runtime.sessions() as session:
            users = list(
                session.scalars(
                    select(Identifier.value)
                    .join(Profile, Profile.id == Identifier.profile_id)
                    .where(Identifier.type == "user_id", Profile.merged_into.is_(None))
                    .order_by(Identifier.value)
                )
            )
        events = load_people(runtime, rng, users, now, full=False)
        with runtime.sessions() as session:
            ids = list(session.scalars(select(Profile.id).where(Profile.merged_into.is_(None))))
        scores = write_scores(runtime, rng, ids)
        with runtime.sessions() as session:
            demo = catalogue.offer_cache(runtime).offers(session, runtime, utcnow())
        for offer in demo:
            catalogue.delete_offer(runtime, offer.id)
        definitions = offer_definitions(100, seed, now, contains)
        for definition in definitions:
            catalogue.upsert_offer(runtime, "catalogue", definition)
    finally:
        runtime.close()
    return (
        f"{len(users)} demo people given the benchmark's traits and {events:,} more events, "
        f"{scores:,} scores, the demo offers replaced by {len(definitions)} benchmark offers"
        + ("" if contains else " (no contains tests)")
    )


@contextlib.contextmanager
def _counting_builds() -> Iterator[list[float]]:
    """The time of each build of the eligibility statement (`prepare` as the pipeline calls it;
    nothing is counted if it no longer does)."""
    builds: list[float] = []
    real = getattr(pipeline, "prepare", None)
    if real is None:
        yield builds
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            builds.append(time.perf_counter() - start)

    pipeline.prepare = timed  # type: ignore[attr-defined]
    try:
        yield builds
    finally:
        pipeline.prepare = real  # type: ignore[attr-defined]


def concurrent(decider: Decider, ids: list[str], threads: int, seconds: float) -> None:
    """`threads` threads deciding at once for `seconds`, as a server's threadpool would."""
    print(f"\n-- {threads} threads deciding at once for {seconds:.0f} s", flush=True)
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    times: list[float] = []
    errors: Counter[str] = Counter()
    turn = _turns(ids)

    def work() -> None:
        while time.monotonic() < stop:
            with lock:
                profile_id = next(turn)
            start = time.perf_counter()
            try:
                decider.decide(profile_id, CONTEXT)
            except Exception as exc:
                with lock:
                    errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"] += 1
                continue
            with lock:
                times.append(time.perf_counter() - start)

    load_before = _loadavg()
    with _counting_builds() as builds:
        start = time.perf_counter()
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - start
    ms = sorted(t * 1000 for t in times) or [0.0]
    print(
        f"{len(times)} decisions in {elapsed:.0f} s ({len(times) / elapsed:.1f}/s), "
        f"p50 {_percentile(ms, 50):.0f} ms, p99 {_percentile(ms, 99):.0f} ms, "
        f"max {ms[-1]:.0f} ms; failed: {sum(errors.values())}"
    )
    for error, count in errors.most_common(3):
        print(f"  {count} x {error}")
    each = sum(builds) * 1000 / len(builds) if builds else 0.0
    print(
        f"eligibility statement built {len(builds)} times ({each:.0f} ms each, "
        f"{sum(builds):.1f} s in all; once per set of offers is the design)"
    )
    print(f"load average before / after: {load_before} / {_loadavg()}", flush=True)


# --- 3. where the time goes ----------------------------------------------------------------------


_IN_LIST = re.compile(r"\((?:\?|%\(\w+\)s(?:::\w+)?)(?:, (?:\?|%\(\w+\)s(?:::\w+)?))*\)")


class SqlTrace:
    """Every statement the engines run (those that differ only in the length of an IN list
    counted as one), with its count, its time, and its last text and parameters."""

    def __init__(self, engines: list[Engine]) -> None:
        self.engines = list({id(e): e for e in engines}.values())
        self.stats: dict[str, list[Any]] = {}  # shape -> [count, seconds, (statement, params)]

    def __enter__(self) -> SqlTrace:
        for engine in self.engines:
            event.listen(engine, "before_cursor_execute", self._before)
            event.listen(engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        for engine in self.engines:
            event.remove(engine, "before_cursor_execute", self._before)
            event.remove(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def _after(
        self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        elapsed = time.perf_counter() - conn.info["bench_started"].pop()
        found = self.stats.setdefault(_IN_LIST.sub("(…)", statement), [0, 0.0, None])
        found[0] += 1
        found[1] += elapsed
        found[2] = None if many else (statement, params)


def _short(statement: str, width: int = 110) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def analyse(runtime: Runtime, decider: Decider, turn: Iterator[str], count: int) -> None:
    engines = [runtime.engine, runtime.writers.kw["bind"]]
    print(f"\n-- analysis: {count} decisions with every SQL statement timed", flush=True)
    with SqlTrace(engines) as trace:
        start = time.perf_counter()
        for _ in range(count):
            decider.decide(next(turn), CONTEXT)
        total = time.perf_counter() - start
    in_sql = sum(s[1] for s in trace.stats.values())
    print(
        f"per decision: {total * 1000 / count:.2f} ms in all, {in_sql * 1000 / count:.2f} ms "
        f"in the database driver (execute), {(total - in_sql) * 1000 / count:.2f} ms in Python "
        "(SQLAlchemy, the pipeline, strategy, templates) and commit"
    )
    print(f"{'calls/dec':>9} {'ms/call':>8} {'ms/dec':>7}  statement")
    ordered = sorted(trace.stats.items(), key=lambda kv: -kv[1][1])
    for statement, (calls, seconds, _) in ordered:
        print(
            f"{calls / count:>9.2f} {seconds * 1000 / calls:>8.3f} {seconds * 1000 / count:>7.3f}"
            f"  {_short(statement)}"
        )

    print(f"\n-- analysis: {count} decisions under cProfile (times inflated by it)", flush=True)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        decider.decide(next(turn), CONTEXT)
    profiler.disable()
    stats = pstats.Stats(profiler)
    _phases(stats, count)
    _by_package(stats, count)
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(25)
        body = out.getvalue()
        print(f"\ntop 25 by {order}:")
        print(body[body.find("   ncalls") :].rstrip())

    if runtime.engine.dialect.name == "postgresql":  # first: EXPLAIN's rollbacks clear them
        _postgres_extras(runtime, [v[2] for _, v in ordered if v[2] is not None])
    _explain(runtime, [v[2] for _, v in ordered if v[2] is not None])


PHASES = [
    ("decisions/pipeline.py", ("decide",), "decide() in all"),
    ("cdp/profiles.py", ("get_profile",), "  read the profile"),
    ("cdp/decisions/", ("profile_view", "_profile_view"), "  scores, segments, merged ids"),
    ("decisions/pipeline.py", ("_candidates",), "  candidates (all filters)"),
    ("decisions/catalogue.py", ("offers",), "    offer cache (called twice)"),
    ("decisions/pipeline.py", ("_eligible",), "    eligibility query"),
    ("decisions/pipeline.py", ("_consent",), "    consent"),
    ("decisions/pipeline.py", ("_history",), "    presentation/response history"),
    ("decisions/pipeline.py", ("stats",), "  response statistics (cached 10 s)"),
    ("plugins/strategies.py", ("rank",), "  strategy rank"),
    ("decisions/pipeline.py", ("_render",), "  render content"),
    ("cdp/decisions/", ("log_decision", "_log"), "  log decision + presentations"),
    ("~", ("<method 'commit' of 'sqlite3.Connection' objects>",), "  commit (SQLite)"),
    ("psycopg/connection.py", ("commit",), "  commit (PostgreSQL)"),
]
"""(where the function lives, its names, label): the steps of decide() (names as of this
writing; a step whose function is not found is left out)."""


def _phases(stats: pstats.Stats, count: int) -> None:
    found: Counter[str] = Counter()
    for (file, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        for where, names, label in PHASES:
            if name in names and (where in file or file == where):
                found[label] += row[3]
    print("cumulative time per decision under cProfile, by step of decide():")
    for _, _, label in PHASES:
        if label in found:
            print(f"  {found[label] * 1000 / count:>7.2f} ms  {label}")


def _postgres_extras(runtime: Runtime, statements: list[tuple[str, Any]]) -> None:
    """What the driver does with the largest statement before sending it, and how the server
    plans the statements psycopg prepared on one of the writers' connections."""
    statement, params = max(statements, key=lambda item: len(item[0]))
    try:
        from psycopg import _queries  # internals: only for this diagnosis

        limit = _queries.MAX_CACHED_STATEMENT_LENGTH, _queries.MAX_CACHED_STATEMENT_PARAMS
        raw = statement.encode()
        runs = 50
        start = time.perf_counter()
        for _ in range(runs):
            _queries._query2pg_nocache(raw, "utf-8")
        parse_ms = (time.perf_counter() - start) * 1000 / runs
        print(
            f"\npsycopg: the largest statement ({len(raw):,} bytes, {len(params)} parameters) is "
            f"over its query cache's limits ({limit[0]:,} bytes, {limit[1]} parameters): "
            f"re-parsed at every execution, {parse_ms:.2f} ms each time (_query2pg_nocache)"
        )
    except (ImportError, AttributeError) as exc:
        print(f"\npsycopg internals not as expected ({exc}): parse cost not measured")
    # Each pooled connection has its own prepared statements: look at those the pool holds (the
    # decisions ran one at a time, so on one or two of them) and show the busiest.
    found: list[Any] = []
    with contextlib.ExitStack() as stack:
        for _ in range(runtime.engine.pool.checkedin()):  # type: ignore[attr-defined]
            conn = stack.enter_context(runtime.engine.connect())
            rows = conn.exec_driver_sql(
                "SELECT generic_plans, custom_plans, length(statement), left(statement, 70) "
                "FROM pg_prepared_statements ORDER BY length(statement) DESC LIMIT 6"
            ).fetchall()
            if sum(r[0] + r[1] for r in rows) > sum(r[0] + r[1] for r in found):
                found = rows
    print("server-side prepared statements (psycopg prepares a query after its 5th run; the")
    print("server plans a custom plan at each run, or a generic plan once):")
    for generic, custom, length, text in found:
        print(f"  generic {generic:>5}  custom {custom:>5}  {length:>7,} chars  {_short(text, 70)}")


def _package(file: str, name: str) -> str:
    """Where a function's own time goes: the driver, a library, a part of cdp, the stdlib."""
    if file == "~":
        if "sqlite3" in name or "psycopg" in name:
            return "database driver (C)"
        return "Python builtins"
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0]
    root = str(HERE.parent) + "/"
    if file.startswith(root):
        parts = file[len(root) :].split("/")
        return "/".join(parts[:2]) if parts[0] == "cdp" and len(parts) > 2 else parts[0]
    return "Python stdlib"


def _by_package(stats: pstats.Stats, count: int) -> None:
    own: Counter[str] = Counter()
    for (file, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        own[_package(file, name)] += row[2]
    total = sum(own.values())
    print("own time (tottime) per decision under cProfile, by where the code lives:")
    for where, seconds in own.most_common(12):
        print(f"  {seconds * 1000 / count:>7.2f} ms  {seconds / total:>4.0%}  {where}")


_FIGURES = re.compile(r"\s*\((?:cost|actual)[^)]*\)")
_VALUES = re.compile(r"'[^']*'|\d+")
LONG_PLAN = 40


def _explain(runtime: Runtime, statements: list[tuple[str, Any]]) -> None:
    """EXPLAIN QUERY PLAN (SQLite) or EXPLAIN (ANALYZE, BUFFERS) (PostgreSQL) of each SELECT,
    run with the parameters it last had. A long plan (the eligibility query's correlated
    subqueries) is shown as its distinct lines, each with how often it occurs."""
    print("\n-- analysis: query plans of the SELECTs of one decision", flush=True)
    postgres = runtime.engine.dialect.name == "postgresql"
    with runtime.engine.connect() as conn:
        for statement, params in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            lines: list[str] = []
            if postgres:
                rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
                lines = [line for (line,) in rows]
            else:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
                depth: dict[int, int] = {0: 0}
                for node, parent, _, detail in rows:
                    depth[node] = depth.get(parent, 0) + 1
                    lines.append(f"{'  ' * (depth[node] - 1)}{detail}")
            conn.rollback()
            print(f"\n{_short(statement, 300)}")
            if len(lines) <= LONG_PLAN:
                for line in lines:
                    print(f"  {line}")
                continue
            print(f"  ({len(lines)} lines; the distinct ones, with numbers and values as n:)")
            counted = Counter(_VALUES.sub("n", _FIGURES.sub("", x)) for x in lines)
            for line, times in counted.items():
                print(f"  {times:>4} x {line}")
            for line in lines[:1] + [x for x in lines if "Time:" in x]:
                print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
