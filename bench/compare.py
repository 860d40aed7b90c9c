"""Run one benchmark against two git revisions in the same run and print every figure before/after and the ratio.

A loaded machine (2 cores, other jobs) makes absolute figures drift by tens
of percent between runs minutes apart; two revisions measured alternately in
one run drift together, so their ratio is the number to trust. Each revision
is checked out with ``git worktree add --detach`` into a temporary directory;
the benchmark module runs from that tree with ``PYTHONPATH`` set to it (the
shared virtualenv's own copy of the project comes after it on the path, so the
tree's code wins, in the benchmark and in the servers/agents it starts).
Runs are interleaved (A B, B A, A B ...) and each figure is the median over
``--repeat`` runs; the spread (max-min over median, per revision) says how
noisy it was.

A benchmark prints figures as JSON object lines (nested objects are
flattened: ``cold_burst.in_step_ms``) or as ``a | b | c`` tables (a header
then rows); string fields (``backend: sqlite``) label the row. Everything
else it prints is ignored. With ``--bench-from B`` the benchmark file of
revision B is used for both (a benchmark that the older revision lacks, or
that gained an option).

    .venv/bin/python bench/compare.py main HEAD --repeat 3 -- bench/bench_agent.py --single 30 --burst 0 --restart 0
    .venv/bin/python bench/compare.py HEAD~3 WORKTREE -- bench/bench_api_ports.py --backends sqlite --ports 1000

``WORKTREE`` (as either revision) means the current working tree, uncommitted changes included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKTREE = "WORKTREE"

Figures = dict[str, float]


def _flatten(obj: Any, prefix: str, out: Figures) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(obj, bool):
        return
    elif isinstance(obj, (int, float)):
        out[prefix] = float(obj)


def _label(row: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in row.items() if isinstance(v, str))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_figures(output: str) -> Figures:
    """Every numeric figure a benchmark printed, keyed by where it came from (see the module docstring)."""
    figures: Figures = {}
    header: list[str] | None = None
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                label = _label(row)
                flat: Figures = {}
                _flatten(row, "", flat)
                for key, value in flat.items():
                    base = key = f"{label}:{key}" if label else key
                    n = 1
                    while key in figures:  # the same figure in a later phase (bench_agent's "vifs"): number it
                        n += 1
                        key = f"{base}#{n}"
                    figures[key] = value
            continue
        cells = [c.strip() for c in line.split(" | ")]
        if len(cells) < 2:
            header = None
            continue
        if all(_number(c) is None for c in cells):
            header = cells
            continue
        if header is not None and len(header) == len(cells):
            label = ",".join(f"{h}={c}" for h, c in zip(header, cells, strict=True) if _number(c) is None)
            for h, c in zip(header, cells, strict=True):
                value = _number(c)
                if value is not None:
                    figures[f"{label}:{h}" if label else h] = value
    return figures


class Tree:
    """One revision checked out in a temporary worktree (or the working tree itself)."""

    def __init__(self, rev: str, tmp: str) -> None:
        self.rev = rev
        if rev == WORKTREE:
            self.path, self.temporary = ROOT, False
            return
        sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", rev], check=True, capture_output=True, text=True).stdout.strip()
        self.path = os.path.join(tmp, f"{len(os.listdir(tmp))}-{sha}")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "--quiet", self.path, sha], check=True)
        self.temporary = True

    def remove(self) -> None:
        if self.temporary:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", self.path], check=False, capture_output=True)

    def run(self, bench: str, args: list[str], timeout: float) -> tuple[Figures, float, str]:
        env = dict(os.environ, PYTHONPATH=self.path + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, os.path.join(self.path, bench), *args], cwd=self.path, env=env, capture_output=True, text=True, timeout=timeout
        )
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{bench} at {self.rev} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return parse_figures(proc.stdout), elapsed, proc.stdout


def _spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{(max(values) - min(values)) / abs(med) * 100:.0f}%" if med else "-"


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def report(revs: tuple[str, str], runs: dict[str, list[Figures]]) -> list[str]:
    before, after = runs[revs[0]], runs[revs[1]]
    keys = [k for k in before[0] if all(k in r for r in before + after)]
    lines = [f"{'figure':<58} {'before':>10} {'after':>10} {'after/before':>12}   spread before/after"]
    for key in keys:
        a = [r[key] for r in before]
        b = [r[key] for r in after]
        ma, mb = statistics.median(a), statistics.median(b)
        ratio = f"{mb / ma:.2f}x" if ma else "-"
        lines.append(f"{key[:58]:<58} {_fmt(ma):>10} {_fmt(mb):>10} {ratio:>12}   {_spread(a)}/{_spread(b)}")
    missing = sorted(set().union(*before, *after) - set(keys))
    if missing:
        lines.append(f"(only in some runs, not compared: {', '.join(missing[:20])})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="git revision (or WORKTREE)")
    parser.add_argument("after", help="git revision (or WORKTREE)")
    parser.add_argument("bench", help="the benchmark file, relative to the tree (bench/bench_agent.py)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments (after --)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per revision, interleaved (default 3)")
    parser.add_argument("--bench-from", choices=["before", "after"], help="use this revision's benchmark file for both")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark run")
    parser.add_argument("--verbose", action="store_true", help="print each run's output")
    args = parser.parse_args()
    bench_args = args.args[1:] if args.args[:1] == ["--"] else args.args
    revs = (args.before, args.after)
    if revs[0] == revs[1]:
        revs = (revs[0], revs[1] + " ")  # the same revision twice: a noise check
    with tempfile.TemporaryDirectory(prefix="qrp-compare-") as tmp:
        trees = {rev: Tree(rev.strip(), tmp) for rev in revs}
        try:
            if args.bench_from:
                source = trees[revs[0 if args.bench_from == "before" else 1]]
                for tree in trees.values():
                    if tree is not source:
                        if not tree.temporary:
                            sys.exit("--bench-from would overwrite a file in the working tree")
                        shutil.copyfile(os.path.join(source.path, args.bench), os.path.join(tree.path, args.bench))
            runs: dict[str, list[Figures]] = {rev: [] for rev in revs}
            for i in range(args.repeat):
                order = revs if i % 2 == 0 else revs[::-1]
                for rev in order:
                    figures, elapsed, output = trees[rev].run(args.bench, bench_args, args.timeout)
                    runs[rev].append(figures)
                    print(f"run {i + 1}/{args.repeat} {rev.strip()}: {len(figures)} figures in {elapsed:.0f}s", flush=True)
                    if args.verbose:
                        print(output, flush=True)
            print(f"\n{args.bench} {' '.join(bench_args)}: before {revs[0].strip()}, after {revs[1].strip()}; "
                  f"median of {args.repeat} interleaved runs each")  # fmt: skip
            print("\n".join(report(revs, runs)))
        finally:
            for tree in trees.values():
                tree.remove()


if __name__ == "__main__":
    main()
