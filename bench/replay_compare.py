"""Replay output of this tree against another commit's: byte for byte, every case.

.venv/bin/python bench/replay_compare.py --base DIR

``--base`` is a source tree of the other commit laid out as this repository (for example
``git archive COMMIT | tar -x -C DIR``). Both trees replay the same traces under the
same policies, each in its own interpreter importing only its own sources, and every output
(``--json`` and the table, the exit code and stderr) must be the same.

Traces: the scenario traces of gen_trace.py, generated cluster traces, and a cluster trace whose
sample lines are shuffled within the reorder tolerance (lines of one time in any order, and
lines up to one window late), so the reorder buffer's ordering is exercised too. Prints the
number of outputs compared and the first differences; exit code 1 when any differ.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (name, extra arguments of gpuwarden replay, policy TOML or None)
POLICIES: list[tuple[str, list[str], str | None]] = [
    ("default", [], None),
    ("enforce", ["--enforce"], None),
    ("short", ["--idle-window", "20m", "--warnings", "1", "--warn-interval", "5m"], None),
    ("no-grace", ["--grace-period", "0", "--warnings", "0", "--enforce"], None),
    (
        "file",
        [],
        "[policy]\nactive_sm_pct = 20\nenforce_partly_idle = true\ngpu_frac = 0.5\n"
        "underuse_window = '30m'\nmax_gap = '5m'\nenforce = true\nallow_cancel = true\n",
    ),
    (
        "exempt",
        ["--job-gone-after", "5m"],
        "[policy]\nexempt_users = ['u1', 'u2', 'u3']\nexempt_job_names = ['inter*']\n"
        "mem_held_pct = 1\nwarnings = 3\n",
    ),
    ("window30", ["--window-s", "30", "--idle-window", "15m"], None),
]


def _write_traces(folder: Path) -> list[Path]:
    from gen_trace import cluster_lines, scenarios

    out = []
    for name, lines in sorted(scenarios().items()):
        path = folder / f"scenario-{name}.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        out.append(path)
    for gpus, days, window_s, seed in ((24, 0.5, 60, 1), (40, 1.0, 60, 7), (16, 0.5, 30, 3)):
        path = folder / f"cluster-{gpus}x{days}d-{window_s}s.jsonl"
        path.write_text("".join(x + "\n" for x in cluster_lines(gpus, days, window_s, seed)))
        out.append(path)
    out.append(_shuffled(out[-2], folder / "cluster-40x1.0d-shuffled.jsonl", seed=5))
    return out


def _shuffled(src: Path, dst: Path, seed: int) -> Path:
    from gen_trace import shuffled_lines

    lines = shuffled_lines(src.read_text().splitlines(), seed)
    dst.write_text("".join(x + "\n" for x in lines))
    return dst


def _farm(src: Path, folder: Path) -> Path:
    """A folder in which ``import gpuwarden`` finds ``src``'s sources as installed."""
    pkg = folder / "gpuwarden"
    pkg.mkdir(parents=True)
    for entry in (src / "gpuwarden").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for sub in ("agent", "collector", "proto", "sim", "tui"):
        (pkg / sub).symlink_to(src / sub)
    return folder


def _worker(cases_file: Path, out_dir: Path) -> int:
    """Replay every case of ``cases_file`` in this interpreter; one output file per case."""
    import gpuwarden
    from gpuwarden.collector.replay_cli import replay_main

    print(f"replaying with {Path(gpuwarden.__file__).resolve().parent.parent}", file=sys.stderr)
    for name, argv in json.loads(cases_file.read_text()):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = replay_main(argv)
        (out_dir / name).write_text(
            f"rc={rc}\n--- stderr\n{err.getvalue()}--- stdout\n" + out.getvalue()
        )
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base", type=Path, help="source tree of the commit to compare with")
    p.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return _worker(*args.worker)
    if args.base is None:
        p.error("--base is required")
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        traces = _write_traces(tmp)
        cases = []
        for trace in traces:
            for pname, extra, toml in POLICIES:
                argv = [str(trace), *extra]
                if toml is not None:
                    policy = tmp / f"policy-{pname}.toml"
                    policy.write_text(toml)
                    argv += ["--policy", str(policy)]
                for fmt in ("json", "table"):
                    name = f"{trace.stem}.{pname}.{fmt}"
                    cases.append((name, [*argv, "--json"] if fmt == "json" else argv))
        cases_file = tmp / "cases.json"
        cases_file.write_text(json.dumps(cases))
        outs = {}
        for label, src in (("base", args.base.resolve()), ("this", here)):
            out_dir = tmp / f"out-{label}"
            out_dir.mkdir()
            env = dict(os.environ, PYTHONPATH=str(_farm(src, tmp / f"farm-{label}")))
            cmd = [sys.executable, __file__, "--worker", str(cases_file), str(out_dir)]
            subprocess.run(cmd, env=env, check=True, cwd=tmp)
            outs[label] = out_dir
        differ = [
            n
            for n, _ in cases
            if (outs["base"] / n).read_bytes() != (outs["this"] / n).read_bytes()
        ]
        events = sum(
            (outs["this"] / n).read_text().partition("--- stdout\n")[2].count("\n")
            for n, _ in cases
            if n.endswith(".json")
        )
        failed = sum(not (outs["this"] / n).read_text().startswith("rc=0\n") for n, _ in cases)
        print(
            f"{len(cases)} outputs compared ({len(traces)} traces x {len(POLICIES)} policies x "
            f"--json and table; {events:,} output lines in all, {failed} with an exit code "
            f"other than 0): {len(differ)} differ"
        )
        for name in differ[:5]:
            a = (outs["base"] / name).read_text().splitlines()
            b = (outs["this"] / name).read_text().splitlines()
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            print(f"  {name}: first difference at line {first + 1}")
            print(f"    base: {a[first] if first < len(a) else '<end>'}")
            print(f"    this: {b[first] if first < len(b) else '<end>'}")
        return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
