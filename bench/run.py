"""Run benchmarks and print the machine they ran on.

    python bench/run.py                      # every bench/*.py that defines main()
    python bench/run.py graphql_profile      # only these
    python bench/run.py graphql_profile -- --duration 30   # arguments after -- go to each
    python bench/run.py import_csv -- --size 20   # a 20 MB import instead of the 1 GB one (hours)
    python bench/run.py segments -- --part recompute --database-url postgresql://postgres@127.0.0.1/test

Exit status: the highest of the benchmarks' (0 = ran and no request failed).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import platform
import sqlite3
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Benchmarks are the modules here with a top-level main(); helpers have none."""
    names = []
    for path in sorted(HERE.glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            names.append(path.stem)
    return names


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"machine: {model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}\n"
        f"python: {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite library {sqlite3.sqlite_version}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    names, passed = argv[:split], argv[split + 1 :]
    available = discover()
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; have: {', '.join(available)}")
        return 2
    print(machine(), flush=True)
    status = 0
    for name in names or available:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        print(f"\n== {name}", flush=True)
        start = time.monotonic()
        try:
            code = int(module.main(passed) or 0)
        except Exception:  # one broken benchmark should not hide the others' results
            traceback.print_exc()
            code = 1
        print(f"== {name}: exit {code} after {time.monotonic() - start:.0f} s", flush=True)
        status = max(status, code)
    return status


if __name__ == "__main__":
    sys.exit(main())
