"""GraphQL profile query vs. a plain Starlette JSON endpoint serving the same data (DESIGN §7).

Both servers run as subprocesses on one fresh database loaded with the demo data; `wrk` loads each
in turn with the same connections and random profile ids, and the ratio of their requests/s is
the number to watch (target >= 0.30), with the GraphQL p99 (target < 50 ms at 50 clients).

`--query profile` (default) asks for `profile(id) { id traits identifiers { type value } }`;
`--query offers` for `profile(id) { id traits nextBestOffers(...) {...} }`, with the offers,
scores and `[decisions]` config of bench/decisions.py, against a plain endpoint that reads the
profile and calls the same decider.

Run: python bench/graphql_profile.py [--database-url URL] [--duration S] ... (see --help)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from cdp.db.engine import make_engine, normalise_url
from cdp.db.models import Profile

HERE = Path(__file__).resolve().parent
QUERY = "query($id: ID!) { profile(id: $id) { id traits identifiers { type value } } }"
OFFERS_QUERY = (
    "query($id: ID!) { profile(id: $id) { id traits "
    'nextBestOffers(context: {channel: "web", placement: "home", limit: 3}) '
    "{ id strategy offers { offerId name rank score content } } } }"
)
QUERIES = {"profile": QUERY, "offers": OFFERS_QUERY}
PLAIN_PATHS = {"profile": "/profile/", "offers": "/offers/"}
MARKERS = {"profile": '"identifiers"', "offers": '"nextBestOffers"'}
"""What every good answer's body contains (besides no "errors")."""
BASELINES = {"threadpool": "in the threadpool", "inline": "on the event loop"}
P99_TARGET_MS = 50.0
RATIO_TARGET = 0.30
WRK_MISSING = (
    "wrk is not installed: this benchmark needs it as its load generator.\n"
    "  Debian/Ubuntu: sudo apt-get install wrk    macOS: brew install wrk"
)


@dataclass
class Target:
    name: str
    pid: int
    port: int
    method: str
    path_prefix: str  # the profile id is appended to this
    body_prefix: str | None  # JSON body split around the profile id; None for a GET
    body_suffix: str
    headers: dict[str, str]
    marker: str = MARKERS["profile"]


@dataclass
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: dict[str, int]  # wrong answers and wrk's socket errors, by kind
    server_cpu: float  # fraction of one core
    wrk_cpu: float
    machine_cpu: float  # fraction of all cores
    empty: int = 0  # --query offers: good answers that gave no offer

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        # Steadier than req/s when something else shares the machine.
        return self.server_cpu * self.seconds * 1000 / max(self.requests, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="graphql_profile", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server to use instead of SQLite, e.g. "
        "postgresql+psycopg://postgres@127.0.0.1/postgres (a throw-away database is created "
        "on it and dropped afterwards)",
    )
    parser.add_argument(
        "--baseline",
        choices=list(BASELINES),
        default="threadpool",
        help="how the plain endpoint reads: a sync endpoint in Starlette's threadpool, like "
        "cdp's reads [default], or on the event loop (faster on SQLite, a stricter bar)",
    )
    parser.add_argument(
        "--query",
        choices=list(QUERIES),
        default="profile",
        help="profile: id, traits, identifiers [default]; offers: id, traits, nextBestOffers "
        "(the data, offers and config of bench/decisions.py)",
    )
    parser.add_argument(
        "--no-contains",
        action="store_true",
        help="--query offers: offers without `contains` trait tests (see bench/decisions.py)",
    )
    parser.add_argument("--profiles", type=int, default=2000, help="demo profiles [2000]")
    parser.add_argument("--connections", type=int, default=50, help="concurrent clients [50]")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads [1]")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up seconds per endpoint [5]")
    parser.add_argument(
        "--duration", type=int, default=15, help="measured seconds per endpoint [15]"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds wrk waits for an answer before counting a timeout (a failure, left out "
        "of its latencies) [2; 10 with --query offers, whose answers take longer]",
    )
    args = parser.parse_args(argv)
    timeout = args.timeout or (10.0 if args.query == "offers" else 2.0)

    wrk = shutil.which("wrk")
    if wrk is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    busy = _machine_busy()
    if busy > 0.15:
        print(f"warning: the machine is {busy:.0%} busy before the run: expect noisy numbers")

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cdp-bench-")))
        url = stack.enter_context(_database(args.database_url, tmp))
        config = tmp / "cdp.toml"
        offers = args.query == "offers"
        extra = _decisions_module().CONFIG_TOML if offers else ""
        config.write_text(f"[database]\nurl = {json.dumps(url)}\n{extra}", encoding="utf-8")
        started = time.monotonic()
        key = _prepare(config, args.profiles)
        prepared = ""
        if offers:
            prepared = _decisions_module().prepare_served(config, contains=not args.no_contains)
        ids = _profile_ids(url)
        print(
            f"data: {len(ids)} live profiles from `cdp demo --profiles {args.profiles}` on "
            f"{_database_version(url)} (setup {time.monotonic() - started:.0f} s); "
            f"wrk {_wrk_version(wrk)}, "
            f"{args.connections} connections, {args.threads} thread(s), "
            f"{args.warmup} s warm-up + {args.duration} s measured per endpoint, "
            f"{timeout:g} s timeout; "
            f"plain endpoint reads {BASELINES[args.baseline]}",
            flush=True,
        )
        if offers:
            print(f"offers: {prepared}; query: {OFFERS_QUERY}", flush=True)

        plain_port, graphql_port = _free_port(), _free_port()
        plain = _start(
            stack,
            [
                sys.executable,
                str(HERE / "plain_app.py"),
                "--config",
                str(config),
                *(["--inline"] if args.baseline == "inline" else []),
            ],
            plain_port,
            tmp / "plain.log",
        )
        graphql = _start(
            stack,
            [sys.executable, "-m", "cdp", "serve", "--config", str(config)],
            graphql_port,
            tmp / "graphql.log",
        )
        query = QUERIES[args.query]
        body = json.dumps({"query": query, "variables": {"id": "@ID@"}}).split("@ID@")
        marker = MARKERS[args.query]
        targets = [
            Target(
                "plain", plain.pid, plain_port, "GET", PLAIN_PATHS[args.query], None, "", {}, marker
            ),
            Target(
                "graphql",
                graphql.pid,
                graphql_port,
                "POST",
                "/graphql",
                body[0],
                body[1],
                {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
                marker,
            ),
        ]
        if not _same_answers(targets, random.Random(1).sample(ids, 3)):
            return 1

        results: dict[str, Result] = {}
        for target in targets:
            script = tmp / f"{target.name}.lua"
            script.write_text(_lua(target, ids), encoding="utf-8")
            # The warm-up fills caches, pools and the threadpool; its failures still count.
            warm = _wrk(wrk, target, script, args.connections, args.threads, args.warmup, timeout)
            results[target.name] = _wrk(
                wrk, target, script, args.connections, args.threads, args.duration, timeout
            )
            for kind, count in warm.failures.items():
                results[target.name].failures[kind] += count
            results[target.name].empty += warm.empty

        _report(results)
        for name, result in results.items():
            if result.failed:
                _explain_failures(name, result, tmp / f"{name}.log", timeout)
    return 1 if any(r.failed for r in results.values()) else 0


def _decisions_module() -> Any:
    """bench/decisions.py (bench/ is not a package), loaded once."""
    name = "bench_decisions"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "decisions.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _prepare(config: Path, profiles: int) -> str:
    """Migrate, load the demo data and create a read key (returned) with the real CLI."""
    _cdp("migrate", "--config", str(config))
    _cdp("demo", "--profiles", str(profiles), "--config", str(config))
    out = _cdp("keys", "create", "--scope", "read", "--name", "bench", "--config", str(config))
    return out.strip().splitlines()[-1]


def _cdp(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "cdp", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cdp {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


@contextlib.contextmanager
def _database(server_url: str | None, tmp: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file in `tmp`, or a throw-away PostgreSQL database."""
    if server_url is None:
        yield f"sqlite:///{tmp / 'cdp.db'}"
        return
    server = make_url(normalise_url(server_url))
    name = f"cdp_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _profile_ids(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(Profile.id).where(Profile.merged_into.is_(None))))
    finally:
        engine.dispose()


def _database_version(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                return f"SQLite {conn.scalar(text('SELECT sqlite_version()'))}"
            return f"PostgreSQL {conn.scalar(text('SHOW server_version'))}"
    finally:
        engine.dispose()


def _wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    words = (out.stdout + out.stderr).split()
    return words[1] if len(words) > 1 else "?"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(
    stack: contextlib.ExitStack, command: list[str], port: int, log: Path
) -> subprocess.Popen[bytes]:
    """Start a server (its logs go to `log`, as a production server's would go somewhere) and wait
    until its /healthz answers."""
    out = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen([*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    stack.callback(_stop, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        health = f"http://127.0.0.1:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=1) as resp:
            if resp.status == 200:
                return proc
        time.sleep(0.1)
    tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
    raise RuntimeError(f"{' '.join(command)} did not become healthy:\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _fetch(target: Target, profile_id: str) -> Any:
    data = None
    if target.body_prefix is not None:
        data = (target.body_prefix + profile_id + target.body_suffix).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{target.port}{target.path_prefix}"
        + ("" if data is not None else profile_id),
        data=data,
        headers=target.headers,
        method=target.method,
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.load(resp)


def _same_answers(targets: list[Target], ids: list[str]) -> bool:
    """Both endpoints give the same profile JSON for the same ids (before any load). Each
    answer with offers is a new decision: its id differs, the rest must not (two decisions in a
    row for one profile stay under every cap)."""
    plain, graphql = targets
    for profile_id in ids:
        try:
            want = _without_decision_id(_fetch(plain, profile_id))
            got = _fetch(graphql, profile_id)
        except urllib.error.URLError as exc:
            print(f"FAIL: request for profile {profile_id} failed: {exc}")
            return False
        data = got.get("data") if isinstance(got, dict) else None
        if isinstance(data, dict):
            data["profile"] = _without_decision_id(data.get("profile"))
        if got != {"data": {"profile": want}}:
            print(
                f"FAIL: answers differ for profile {profile_id}:\n"
                f"  plain:   {want}\n  graphql: {got}"
            )
            return False
    return True


def _without_decision_id(profile: Any) -> Any:
    if isinstance(profile, dict) and isinstance(profile.get("nextBestOffers"), dict):
        profile["nextBestOffers"].pop("id", None)
    return profile


def _lua_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _lua(target: Target, ids: list[str]) -> str:
    """A wrk script: a random profile id per request, a body check per response, and a
    machine-readable summary line (latency in microseconds) from `done`."""
    headers = "\n".join(
        f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}" for k, v in target.headers.items()
    )
    is_post = target.body_prefix is not None
    request = (
        f"return wrk.format(nil, {_lua_str(target.path_prefix)}, nil, "
        f"{_lua_str(target.body_prefix or '')} .. id .. {_lua_str(target.body_suffix)})"
        if is_post
        else f"return wrk.format(nil, {_lua_str(target.path_prefix)} .. id)"
    )
    return f"""
local ids = {{{", ".join(_lua_str(i) for i in ids)}}}
wrk.method = {_lua_str(target.method)}
{headers}
local threads = {{}}
function setup(thread)
  thread:set("n", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  math.randomseed(os.time() * 100 + n)
  bad = 0
  empty = 0
end
function request()
  local id = ids[math.random(#ids)]
  {request}
end
function response(status, headers, body)
  -- A GraphQL error comes with status 200: look at the body too.
  if status ~= 200 or not string.find(body, {_lua_str(target.marker)}, 1, true)
      or string.find(body, '"errors"', 1, true) then
    bad = bad + 1
  elseif string.find(body, '"offers":[]', 1, true) or string.find(body, '"offers": []', 1, true)
      then
    empty = empty + 1
  end
end
function done(summary, latency, requests)
  local bad, empty = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("bad")
    empty = empty + t:get("empty")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d wrong=%d connect=%d read=%d "
    .. "write=%d timeout=%d empty=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), bad,
    e.connect, e.read, e.write, e.timeout, empty))
end
"""


def _wrk(
    wrk: str,
    target: Target,
    script: Path,
    connections: int,
    threads: int,
    seconds: int,
    timeout: float = 2.0,
) -> Result:
    before = _cpu(target.pid)
    out = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            f"--timeout={timeout:g}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{target.port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    after = _cpu(target.pid)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}{out.stderr}")
    values = {k: int(v) for k, v in (part.split("=") for part in line.split()[1:])}
    elapsed = values["duration_us"] / 1e6
    return Result(
        requests=values["requests"],
        seconds=elapsed,
        p50_ms=values["p50_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
        failures={k: values[k] for k in ("wrong", "connect", "read", "write", "timeout")},
        server_cpu=(after.server - before.server) / elapsed,
        wrk_cpu=(after.children - before.children) / elapsed,
        machine_cpu=1 - (after.idle - before.idle) / ((after.total - before.total) or 1),
        empty=values.get("empty", 0),
    )


@dataclass
class _Cpu:
    server: float  # CPU seconds of the server process
    children: float  # CPU seconds of our finished children (wrk)
    idle: int  # machine-wide jiffies
    total: int


def _cpu(pid: int) -> _Cpu:
    # Linux /proc; elsewhere the CPU columns read 0.
    ticks = os.sysconf("SC_CLK_TCK")
    server, idle, total = 0.0, 0, 0
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        server = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        jiffies = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle, total = jiffies[3] + jiffies[4], sum(jiffies[:8])  # idle + iowait; no guest
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return _Cpu(server, usage.ru_utime + usage.ru_stime, idle, total)


def _machine_busy(seconds: float = 1.0) -> float:
    """The share of all cores in use by anything over `seconds` (0 where /proc is missing)."""
    before = _cpu(os.getpid())
    time.sleep(seconds)
    after = _cpu(os.getpid())
    return 1 - (after.idle - before.idle) / ((after.total - before.total) or 1)


def _report(results: dict[str, Result]) -> None:
    cores = os.cpu_count() or 1
    print(
        f"{'endpoint':<9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'requests':>9}{'failed':>7}"
        f"{'server cpu':>11}{'ms/req':>7}{'wrk cpu':>8}{'machine cpu':>12}"
    )
    for name, r in results.items():
        print(
            f"{name:<9}{r.rps:>8.0f}{r.p50_ms:>8.1f}{r.p99_ms:>8.1f}{r.requests:>9}{r.failed:>7}"
            f"{r.server_cpu:>10.0%} {r.cpu_ms_per_request:>6.2f}{r.wrk_cpu:>8.0%}"
            f"{r.machine_cpu:>7.0%} of {cores}"
        )
    print(
        "(server and wrk cpu: share of one core; ms/req: server CPU time per request; "
        "machine cpu: share of all cores, other processes included)"
    )
    for name, r in results.items():
        if r.empty:
            print(f"{name}: {r.empty} answers gave no offer (caps or eligibility)")
    graphql, plain = results["graphql"], results["plain"]
    print(f"graphql p99: {graphql.p99_ms:.1f} ms (target < {P99_TARGET_MS:.0f} ms)")
    print(f"graphql/plain ratio: {graphql.rps / plain.rps:.2f} (target >= {RATIO_TARGET:.2f})")


def _explain_failures(name: str, result: Result, log: Path, timeout: float = 2.0) -> None:
    kinds = ", ".join(f"{n} {kind}" for kind, n in result.failures.items() if n)
    print(
        f"FAIL: {name}: {result.failed} failed requests ({kinds}; "
        f"timeout = no answer in {timeout:g} s)"
    )
    # The server's own account, if it logged any error (cdp logs JSON lines, uvicorn text).
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [x for x in lines if '"level": "ERROR"' in x or x.startswith(("ERROR", "Traceback"))]
    for line in errors[:5]:
        print(f"  {name} log: {line[:300]}")


if __name__ == "__main__":
    sys.exit(main())
