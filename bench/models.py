"""Enrichment models (issue 6): training and batch scoring, against the bare estimator.

    python bench/run.py models                                   # full size, SQLite, temp dir
    python bench/models.py --profiles 10000 --events 200000 --score-profiles 100000
    python bench/models.py --database-url postgresql+psycopg://postgres@127.0.0.1/test

A fresh migrated database is filled by `cdp.models.synthetic` (a shop with known signals):
`--profiles` profiles with about `--events` events over 210 days, then more profiles (about two
events each) up to `--score-profiles`. For each of `--models`:

- **train**: `cdp.models.service.train` (features in SQL over the whole population, the time
  split, fit, held-out evaluation, skops artefact, stored version), timed whole; **baseline**:
  the same scikit-learn estimator fitted on the same training matrix, pre-built in memory. The
  ratio is what the platform costs on top of the fit, feature building above all.
- **score**: `cdp.models.service.score` over every profile (chunks of 5,000: features in SQL,
  predict, upsert into `scores`); **baseline**: the same fitted estimator predicting a pre-built
  matrix of as many rows (training rows resampled). Peak RSS growth while scoring is reported
  (constant memory: it must not grow with the number of profiles).

The estimators run on one thread (`--threads`), so that the neighbours' load moves the fit in
`train` and the baseline's alike; `train` also reports its own parts (features, fit, evaluate,
artefact), whose sum minus the fit is the platform's cost whatever the fit took.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import uuid
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from threadpoolctl import threadpool_limits

from cdp.config import ComponentEntry, Config, DatabaseConfig
from cdp.db.engine import make_engine, normalise_url
from cdp.db.migrate import upgrade
from cdp.models import service, synthetic
from cdp.models.training import build_training_set
from cdp.runtime import Runtime

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
ENTRIES = {
    "churn": {"type": "churn"},
    "propensity_shoes": {
        "type": "propensity",
        "event": "Order Completed",
        "where": {"properties.products[].category": "shoes"},
        "signals": [{"event": "Product Viewed", "where": {"properties.category": "shoes"}}],
    },
    "ltv": {"type": "lifetime_value"},
    "persona": {"type": "personas"},
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def database(args: argparse.Namespace, tmp: Path) -> tuple[str, object]:
    if args.database_url is None:
        return f"sqlite:///{tmp / 'bench.db'}", None
    url = make_url(normalise_url(args.database_url))
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"cdp_bench_models_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return url.set(database=name).render_as_string(hide_password=False), (admin, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--score-profiles", type=int, default=1_000_000)
    parser.add_argument("--models", default="churn,persona", help="of: " + ", ".join(ENTRIES))
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server database")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads for the estimators (0: the libraries' default). One by "
        "default: on a shared 2-core machine, OpenMP's spinning threads make a fit's time "
        "vary several-fold with the neighbours' load, and the comparison with it",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]

    limits = threadpool_limits(args.threads) if args.threads else nullcontext()
    with tempfile.TemporaryDirectory(prefix="cdp-bench-models-") as tmp, limits:
        url, pg = database(args, Path(tmp))
        try:
            return run(args, url, names)
        finally:
            if pg is not None:
                admin, name = pg
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()


def run(args: argparse.Namespace, url: str, names: list[str]) -> int:
    engine = make_engine(url)
    upgrade(engine)
    print(f"database: {engine.dialect.name}")
    began = time.monotonic()
    world = synthetic.generate(engine, args.profiles, args.events, now=NOW, seed=1)
    print(
        f"data: {args.profiles:,} profiles, {world.events:,} events, loaded in "
        f"{time.monotonic() - began:.0f}s"
    )
    analyze(engine)
    entries = [ComponentEntry(name=n, **ENTRIES[n]) for n in names]
    runtime = Runtime.start(Config(database=DatabaseConfig(url=url), models=entries))
    try:
        baselines = {name: bench_train(runtime, name) for name in names}
        # Then the profiles that are only scored (short histories: about two events each), so
        # that training saw --profiles and scoring sees --score-profiles.
        extra = max(args.score_profiles - args.profiles, 0)
        if extra:
            began = time.monotonic()
            more = synthetic.generate(engine, extra, extra * 2, now=NOW, seed=2)
            print(
                f"\ndata: +{extra:,} profiles, +{more.events:,} events, loaded in "
                f"{time.monotonic() - began:.0f}s"
            )
            analyze(engine)
        for name in names:
            bench_score(runtime, name, *baselines[name])
    finally:
        runtime.close()
        engine.dispose()
    return 0


def analyze(engine: object) -> None:
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("ANALYZE"))


def bench_train(runtime: Runtime, name: str) -> tuple[np.ndarray, object]:
    model = service.get_model(runtime, name)
    # The same training matrix, built first: the baseline's input, and a warm-up, so that the
    # timed training does not pay alone for reading the database into the page cache.
    with runtime.engine.connect() as conn:
        data = build_training_set(conn, model, NOW)
    began = time.monotonic()
    version = service.train(runtime, name, now=NOW)
    trained = time.monotonic() - began

    # Baseline: the same estimator fitted on the pre-built matrix (as many rows as the training
    # split), best of two: the first pays for starting the thread pool.
    rows = np.random.default_rng(0).permutation(len(data.features))[: version.metrics["train_size"]]
    fit = float("inf")
    for _ in range(2):
        estimator = model.enricher.estimator()
        began = time.monotonic()
        if data.labels is None:
            estimator.fit(data.features[rows])
        else:
            estimator.fit(data.features[rows], data.labels[rows])
        fit = min(fit, time.monotonic() - began)
    seconds = version.metrics["seconds"]
    print(
        f"\n[{name}] train: {trained:.1f}s for {version.metrics['examples']:,} examples "
        f"({version.metrics['profiles_considered']:,} profiles looked at); baseline fit on a "
        f"pre-built matrix: {fit:.1f}s; ratio {trained / fit:.2f}x; inside train: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
    )
    headline = {k: v for k, v in version.metrics.items() if k not in ("calibration", "seconds")}
    print(f"[{name}] held-out: {headline}")
    return data.features, estimator


def bench_score(runtime: Runtime, name: str, features: np.ndarray, estimator: object) -> None:
    model = service.get_model(runtime, name)
    before = rss_mb()
    peak = [before]

    def sample(done: int, total: int) -> None:
        peak[0] = max(peak[0], rss_mb())

    began = time.monotonic()
    summary = service.score(runtime, name, now=NOW, progress=sample)
    scored = time.monotonic() - began
    rows = np.random.default_rng(1).integers(0, len(features), summary.profiles)
    matrix = features[rows]
    predict = float("inf")
    for _ in range(2):
        began = time.monotonic()
        model.enricher.score(estimator, matrix)
        predict = min(predict, time.monotonic() - began)
    print(
        f"[{name}] score: {summary.profiles:,} profiles in {scored:.1f}s "
        f"({summary.profiles / scored:,.0f}/s); baseline predict on a pre-built matrix: "
        f"{predict:.1f}s; ratio {scored / predict:.1f}x; RSS {before:.0f} MB before, peak "
        f"{peak[0]:.0f} MB while scoring (+{peak[0] - before:.0f} MB); max RSS of the process "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
