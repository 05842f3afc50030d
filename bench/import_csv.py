"""Importing a large CSV of profile records through the `csv` source connector.

    python bench/run.py import_csv                          # a 1 GB file, SQLite in a temp dir
    python bench/run.py import_csv -- --size 20             # a 20 MB file
    python bench/run.py import_csv -- --database-url postgresql+psycopg://postgres@127.0.0.1/test

A CRM export is generated (deterministic, streamed to disk) and imported by `sync_source`, what
`cdp sources sync` runs: the csv connector reads it in batches, each row is mapped to an identify
message and goes through identity resolution, and each batch commits with the checkpoint. The
import runs in a child process, whose peak RSS is read from the kernel when it ends.

Baseline, in the same run and in a child process of its own: Python's `csv` reader and a
SQLAlchemy Core `insert()` of the same rows, a batch per transaction, into a fresh database of
the same kind (a table with one text column per CSV column): the price of reading the file and
storing its rows, with no mapping and no identity work.

Target (DESIGN §7): imports stream in constant memory, a 1 GB CSV with < 300 MB peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine, insert, text

from cdp.db.engine import make_engine, normalise_url
from cdp.db.migrate import upgrade

RSS_TARGET_MB = 300
SOURCE = "crm"
HEADER = [
    "customer_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "street",
    "postcode",
    "city",
    "country",
    "plan",
    "signup_date",
    "newsletter",
    "lifetime_value",
    "updated_at",
]
MAPPING = {
    "identifiers": {"user_id": "customer_id", "email": "email", "phone": "phone"},
    "traits": {
        name: name
        for name in (
            "first_name",
            "last_name",
            "street",
            "postcode",
            "city",
            "country",
            "plan",
            "signup_date",
            "lifetime_value",
        )
    },
    "consents": {"newsletter": "newsletter"},
    "timestamp": "updated_at",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/import_csv.py")
    parser.add_argument("--size", type=float, default=1024, help="CSV size in MB (default 1024)")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server database to create throw-away databases with "
        "(default: SQLite in the temp dir)",
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per transaction")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmp-dir", help="where the CSV and SQLite files go (default: $TMPDIR)")
    parser.add_argument(
        "--progress", type=float, default=60, help="seconds between progress lines (0: none)"
    )
    parser.add_argument("--skip-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(*args.child)

    with tempfile.TemporaryDirectory(prefix="cdp-import-", dir=args.tmp_dir) as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "profiles.csv"
        started = time.perf_counter()
        generated = generate(path, int(args.size * 1024 * 1024), args.seed)
        generated["seconds"] = time.perf_counter() - started
        print(
            f"file: {path.stat().st_size / 2**20:,.0f} MB, {generated['rows']:,} rows "
            f"({generated['bad']:,} without any identifier, {generated['merges']:,} linking two "
            f"profiles of one person), generated in {generated['seconds']:.0f} s",
            flush=True,
        )
        with _database(args.database_url, tmp / "import") as url:
            print(_versions(url), flush=True)
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
            config = _write_config(tmp, url, path, args.batch_size)
            imported = _run_child(
                "import", {"config": str(config), "progress": args.progress}, tmp, "import"
            )
            imported["database_mb"] = _database_mb(url)
        baseline = None
        if not args.skip_baseline:
            with _database(args.database_url, tmp / "baseline") as url:
                job = {"url": url, "csv": str(path), "batch_size": args.batch_size}
                baseline = _run_child("baseline", job, tmp, "baseline")
    return _report(args, generated, imported, baseline)


# --- the file ------------------------------------------------------------------------------------

FIRST = [
    ("Ada", "ada"), ("Jürgen", "juergen"), ("Zoë", "zoe"), ("José", "jose"), ("Åsa", "asa"),
    ("Łukasz", "lukasz"), ("Chloé", "chloe"), ("Mei", "mei"), ("Omar", "omar"),
    ("Priya", "priya"), ("Liam", "liam"), ("Sofía", "sofia"), ("Noah", "noah"),
    ("Amélie", "amelie"), ("Kenji", "kenji"), ("Fatima", "fatima"), ("Lars", "lars"),
    ("Ingrid", "ingrid"), ("Mateo", "mateo"), ("Emma", "emma"), ("Björn", "bjoern"),
    ("Aoife", "aoife"), ("Dmitri", "dmitri"), ("Nia", "nia"), ("Hugo", "hugo"),
    ("Yusuf", "yusuf"), ("Elif", "elif"), ("Tomás", "tomas"), ("Grace", "grace"), ("Raj", "raj"),
    ("Léa", "lea"), ("Finn", "finn"), ("Hana", "hana"), ("Marco", "marco"), ("Olga", "olga"),
    ("Kwame", "kwame"), ("Saoirse", "saoirse"), ("Pedro", "pedro"), ("Anja", "anja"),
    ("Leo", "leo"),
]  # fmt: skip
LAST = [
    ("Müller", "mueller"), ("García", "garcia"), ("O'Brien", "obrien"), ("Nguyễn", "nguyen"),
    ("Smith", "smith"), ("Rossi", "rossi"), ("Dubois", "dubois"), ("Kowalski", "kowalski"),
    ("Jensen", "jensen"), ("Silva", "silva"), ("Öztürk", "oeztuerk"), ("Tanaka", "tanaka"),
    ("Schmidt", "schmidt"), ("Fernández", "fernandez"), ("Murphy", "murphy"), ("Novák", "novak"),
    ("Andersson", "andersson"), ("de Vries", "devries"), ("Kim", "kim"), ("Okafor", "okafor"),
    ("Papadopoulos", "papadopoulos"), ("Ivanova", "ivanova"), ("Hernández", "hernandez"),
    ("Weiß", "weiss"), ("Lefèvre", "lefevre"), ("Bianchi", "bianchi"), ("Sato", "sato"),
    ("Brown", "brown"), ("Nowak", "nowak"), ("Costa", "costa"), ("Horvat", "horvat"),
    ("Lindqvist", "lindqvist"), ("Moreau", "moreau"), ("Khan", "khan"), ("Walsh", "walsh"),
    ("Becker", "becker"), ("Romano", "romano"), ("Takahashi", "takahashi"), ("Patel", "patel"),
    ("Fischer", "fischer"),
]  # fmt: skip
# (country, city, street, postcode digits, phone prefix, subscriber digits): numbers that
# phonenumbers takes as valid.
PLACES = [
    ("DE", "Berlin", "Hauptstraße", 5, "+49 30 ", 8),
    ("DE", "Berlin", "Karl-Marx-Allee", 5, "+49 151 ", 8),
    ("US", "San Francisco", "Market Street", 5, "+1 415 ", 7),
    ("GB", "London", "Baker Street", 0, "+44 20 7", 7),
    ("FR", "Paris", "Rue de la Paix", 5, "+33 1 ", 8),
    ("NL", "Amsterdam", "Prinsengracht", 4, "+31 20 ", 7),
    ("ES", "Madrid", "Calle de Alcalá", 5, "+34 91 ", 7),
    ("IT", "Roma", "Via del Corso", 5, "+39 06 ", 8),
]
DOMAINS = ["example.com", "example.org", "mail.example.net", "example.de", "example.fr"]
PLANS = ["free", "free", "basic", "pro", "pro", "enterprise"]
START = datetime(2024, 1, 1, tzinfo=UTC)


def _person(k: int) -> dict[str, str]:
    """Person k's lasting details: the same whenever k appears again."""
    first, first_ascii = FIRST[(k * 7919) % len(FIRST)]
    last, last_ascii = LAST[(k * 104_729) % len(LAST)]
    country, city, street, postcode_digits, prefix, digits = PLACES[(k * 31) % len(PLACES)]
    subscriber = (k * 2_654_435_761 + 1_234_567) % 10**digits  # one-to-one: phones stay unique
    if subscriber < 10 ** (digits - 1):
        subscriber += 2 * 10 ** (digits - 1)
    if country == "GB":
        postcode = f"W1U {k % 9 + 1}{'ABDEFGHJLN'[k % 10]}{'PQRSTUWXYZ'[k // 10 % 10]}"
    else:
        postcode = f"{(k * 37) % 10**postcode_digits:0{postcode_digits}d}"
    return {
        "customer_id": f"C{k:09d}",
        "email": f"{first_ascii}.{last_ascii}.{k}@{DOMAINS[k % len(DOMAINS)]}",
        "alias": f"{first_ascii}{k}@leads.example.com",
        "phone": f"{prefix}{subscriber}",
        "first_name": first,
        "last_name": last,
        "street": f"{street} {k % 200 + 1}" + (", Hinterhaus" if k % 17 == 0 else ""),
        "postcode": postcode,
        "city": city,
        "country": country,
        "signup_date": (START - timedelta(days=k % 2000)).date().isoformat(),
    }


def _rows(rng: random.Random) -> Iterator[tuple[str, list[str]]]:
    """(kind, row) forever: new customers, updates of known ones, web leads (a second e-mail,
    no customer id) and, later, the customer with that e-mail (the two profiles merge), and
    now and then a row without any identifier (rejected)."""
    known = 0
    # Leads waiting for their customer row, which comes a few batches later (a merge within one
    # batch is never written, so it would not count as one).
    pending: deque[tuple[int, int]] = deque(maxlen=10_000)
    row = 0
    at = START
    while True:
        row += 1
        at += timedelta(seconds=rng.randint(1, 20))
        updated = at.strftime("%Y-%m-%d %H:%M:%S")
        plan = rng.choice(PLANS)
        newsletter = rng.choice(["yes", "no", "", "yes"])
        value = f"{rng.random() * 5000:.2f}"
        roll = rng.random()
        kind = "new"
        k = known
        if known >= 100 and roll < 0.20:
            if roll < 0.10:  # a known customer again: plan, consent, value updated
                kind, k = "update", rng.randrange(known)
            elif roll < 0.15:  # a web lead: another e-mail of a known person, no customer id
                k = rng.randrange(known)
                p = _person(k)
                pending.append((row, k))
                yield "lead", ["", p["alias"], "", p["first_name"], "", "", "", "", "", "free",
                               "", "yes", "", updated]  # fmt: skip
                continue
            elif roll < 0.1995 and pending and pending[0][0] < row - 5000:
                kind, k = "merge", pending.popleft()[1]  # the customer gives that e-mail
            elif roll >= 0.1995:
                yield "bad", ["", "", "", "Nobody", "", "", "", "", "", "", "", "yes", "", updated]
                continue
        if kind == "new":
            known += 1
        p = _person(k)
        email = p["alias"] if kind == "merge" else p["email"]
        yield kind, [p["customer_id"], email, p["phone"], p["first_name"], p["last_name"],
                     p["street"], p["postcode"], p["city"], p["country"], plan,
                     p["signup_date"], newsletter, value, updated]  # fmt: skip


def generate(path: Path, size: int, seed: int) -> dict[str, Any]:
    """Write rows to `path` until it holds `size` bytes; a chunk at a time, never all of it."""
    counts = {"rows": 0, "bad": 0, "merges": 0}
    rows = _rows(random.Random(seed))
    written = 0
    with open(path, "wb") as out:
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(HEADER)
        written += out.write(header.getvalue().encode())
        while written < size:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            for _ in range(5000):
                kind, row = next(rows)
                writer.writerow(row)
                counts["rows"] += 1
                counts["bad"] += kind == "bad"
                counts["merges"] += kind == "merge"
                if written + buffer.tell() >= size:  # tell(): characters, a bound good enough
                    break
            written += out.write(buffer.getvalue().encode())
    return counts


# --- the children --------------------------------------------------------------------------------


def _run_child(kind: str, job: dict[str, Any], tmp: Path, label: str) -> dict[str, Any]:
    """Run `kind` in a child process; its result, with its peak RSS and CPU time from wait4."""
    job_file = tmp / f"{label}.job.json"
    job["result"] = str(tmp / f"{label}.result.json")
    job_file.write_text(json.dumps(job))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(job_file)]
    proc = subprocess.Popen(command, cwd=tmp)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed with exit status {proc.returncode}")
    result = json.loads(Path(job["result"]).read_text())
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def _child(kind: str, job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    result = _child_import(job) if kind == "import" else _child_baseline(job)
    Path(job["result"]).write_text(json.dumps(result))
    return 0


def _child_import(job: dict[str, Any]) -> dict[str, Any]:
    from cdp.config import load_config
    from cdp.runtime import Runtime
    from cdp.sources.sync import SyncProgress, sync_source

    runtime = Runtime.start(load_config(Path(job["config"])))
    start_rss = _rss_mb("VmRSS")
    every = float(job["progress"])
    started = last = time.perf_counter()

    def progress(p: SyncProgress) -> None:
        nonlocal last
        now = time.perf_counter()
        if every and now - last >= every:
            last = now
            share = f", {p.done / p.total:.1%} of the file" if p.done and p.total else ""
            print(
                f"  import: {p.summary.read:,} rows after {now - started:,.0f} s, "
                f"{p.summary.read / (now - started):,.0f} rows/s{share}, "
                f"RSS {_rss_mb('VmRSS'):.0f} MB (peak {_rss_mb('VmHWM'):.0f} MB)",
                file=sys.stderr,
                flush=True,
            )

    try:
        summary = sync_source(runtime, SOURCE, progress, job["config"])
    finally:
        runtime.close()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "read": summary.read,
        "imported": summary.imported,
        "duplicates": summary.duplicates,
        "merged": summary.merged,
        "rejected": summary.rejected,
        "start_rss_mb": start_rss,
    }


def _child_baseline(job: dict[str, Any]) -> dict[str, Any]:
    engine = make_engine(job["url"])
    with open(job["csv"], newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        table = Table(
            "csv_rows",
            MetaData(),
            Column("id", Integer, primary_key=True),
            *[Column(name, Text) for name in header],
        )
        table.metadata.create_all(engine)
        start_rss = _rss_mb("VmRSS")
        started = time.perf_counter()
        rows = 0
        batch: list[dict[str, str]] = []
        for fields in reader:
            batch.append(dict(zip(header, fields, strict=True)))
            if len(batch) >= job["batch_size"]:
                with engine.begin() as conn:
                    conn.execute(insert(table), batch)
                rows += len(batch)
                batch = []
        if batch:
            with engine.begin() as conn:
                conn.execute(insert(table), batch)
            rows += len(batch)
        seconds = time.perf_counter() - started
    engine.dispose()
    return {"seconds": seconds, "read": rows, "start_rss_mb": start_rss}


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- databases -----------------------------------------------------------------------------------


@contextmanager
def _database(server_url: str | None, tmp: Path) -> Iterator[str]:
    if server_url is None:
        tmp.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    name = f"cdp_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _versions(url: str) -> str:
    line = (
        f"machine: {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"SQLite library {sqlite3.sqlite_version}"
    )
    if url.startswith("sqlite"):
        return line
    engine = create_engine(url)
    with engine.connect() as conn:
        version = conn.scalar(text("SHOW server_version"))
    engine.dispose()
    return f"{line}; PostgreSQL {version}"


def _database_mb(url: str) -> float:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    engine = create_engine(url)
    with engine.connect() as conn:
        size = conn.scalar(text("SELECT pg_database_size(current_database())"))
    engine.dispose()
    return int(size or 0) / 2**20


def _write_config(tmp: Path, url: str, path: Path, batch_size: int) -> Path:
    def toml(value: Any) -> str:
        if isinstance(value, dict):
            return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
        return json.dumps(value)  # strings and numbers: JSON's forms are TOML's

    lines = [
        'mode = "production"',
        "[database]",
        f"url = {toml(url)}",
        "[[sources]]",
        f"name = {toml(SOURCE)}",
        'type = "csv"',
        'kind = "profiles"',
        f"path = {toml(str(path))}",
        f"batch_size = {batch_size}",
        "[sources.mapping]",
        *(f"{key} = {toml(value)}" for key, value in MAPPING.items()),
    ]
    config = tmp / "cdp.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


# --- the report ----------------------------------------------------------------------------------


def _report(
    args: argparse.Namespace,
    generated: dict[str, Any],
    imported: dict[str, Any],
    baseline: dict[str, Any] | None,
) -> int:
    rate = imported["read"] / imported["seconds"]
    backend = "postgresql" if args.database_url else "sqlite"
    print(f"backend: {backend}; batches of {args.batch_size} rows")
    print(
        f"import (sync_source, csv connector, identity resolution): {rate:,.0f} rows/s "
        f"({imported['read']:,} rows in {imported['seconds']:,.1f} s; imported "
        f"{imported['imported']:,}, merged {imported['merged']:,}, rejected "
        f"{imported['rejected']:,}); peak RSS {imported['peak_rss_mb']:,.0f} MB (at the start "
        f"of the sync {imported['start_rss_mb']:,.0f} MB); CPU {imported['cpu_seconds']:,.0f} s "
        f"({imported['cpu_seconds'] / imported['seconds']:.0%} of one core); database "
        f"{imported['database_mb']:,.0f} MB"
    )
    if baseline is not None:
        base_rate = baseline["read"] / baseline["seconds"]
        print(
            f"baseline (csv.reader + Core insert, no identity work): {base_rate:,.0f} rows/s "
            f"({baseline['read']:,} rows in {baseline['seconds']:,.1f} s); peak RSS "
            f"{baseline['peak_rss_mb']:,.0f} MB"
        )
        print(f"import/baseline ratio: {rate / base_rate:.3f}")
    met = imported["peak_rss_mb"] < RSS_TARGET_MB
    print(
        f"peak RSS target < {RSS_TARGET_MB} MB for a {args.size:,g} MB CSV: "
        f"{'met' if met else 'NOT met'}"
    )
    expected = (generated["rows"], generated["rows"] - generated["bad"], generated["bad"])
    got = (imported["read"], imported["imported"], imported["rejected"])
    if got != expected or (baseline is not None and baseline["read"] != generated["rows"]):
        print(f"counts differ: read, imported, rejected {got}; expected {expected}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
