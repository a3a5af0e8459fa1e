"""The test suite N times with fresh seeds (issue 10's flakiness check), as many pytest processes at once as the
machine holds. Run through scripts/fresh_seeds.sh:

    scripts/fresh_seeds.sh N [pytest arguments, default: tests]

Pass i runs with JAXCONV3D_TEST_SEED = FRESH_SEED_BASE + i (default base: random; printed). A pass may be split into
SHARDS pytest processes (default 1), each taking a share of the test files (balanced by file size); a pass passed
when every shard did. JOBS processes run at once (default: JOBS_PER_GPU, default 1, for each GPU; one without a
GPU), dealt over the visible GPUs in turn (the caller's CUDA_VISIBLE_DEVICES, else all; each process gets one, so it
sees one GPU, as a one-GPU pass does). DEADLINE seconds
(default: none) stops starting shards at that point and ends those still running; their passes count as not run,
not as failed. THREADS (default: unset) sets OMP_NUM_THREADS and JAXCONV3D_CPU_THREADS for every process, so many
processes at once do not each start a thread per core.

Logs: $OUT/seeds/pass_<i>[_<shard>].log (OUT defaults to ./out). Prints one line a pass and
`fresh seeds: passed/N` (plus how many did not run); the exit status is 0 only if all N passed.
"""
from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def visible_gpus() -> list[str]:
    """The GPUs a pass may use, as CUDA_VISIBLE_DEVICES names them: the caller's list where it sets one, else every
    GPU nvidia-smi lists."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [d.strip() for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def shard_files(args: list[str], shards: int) -> list[list[str]]:
    """The pytest arguments split into `shards` lists of test files, balanced by size (largest first onto the lightest
    shard); arguments that are not a directory of test files are passed whole to every shard (then shards == 1)."""
    if shards <= 1 or len(args) != 1 or not (ROOT / args[0]).is_dir():
        return [args]
    files = sorted((ROOT / args[0]).glob("test_*.py"), key=lambda p: p.stat().st_size, reverse=True)
    loads = [[0, []] for _ in range(min(shards, len(files)))]
    for f in files:
        lightest = min(loads, key=lambda load: load[0])
        lightest[0] += f.stat().st_size
        lightest[1].append(str(f.relative_to(ROOT)))
    return [sorted(names) for _, names in loads]


_COUNT = re.compile(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|warnings?)")


def pass_summary(tails: list[str]) -> str:
    """One pass's outcome from its shards' last log lines: each count summed over the shards ("1790 passed, 394
    skipped over 3 shards"), so the line a pass prints is the whole pass, not its last shard."""
    totals: dict[str, int] = {}
    for tail in tails:
        for number, word in _COUNT.findall(tail):
            word = {"error": "errors", "warning": "warnings"}.get(word, word)
            totals[word] = totals.get(word, 0) + int(number)
    text = ", ".join(f"{v} {k}" for k, v in totals.items()) or "no counts"
    return text + (f" over {len(tails)} shards" if len(tails) > 1 else "")


def main() -> int:
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        print("usage: scripts/fresh_seeds.sh N [pytest arguments]", file=sys.stderr)
        return 2
    n = int(sys.argv[1])
    args = sys.argv[2:] or ["tests"]
    out = Path(os.environ.get("OUT", ROOT / "out")) / "seeds"
    out.mkdir(parents=True, exist_ok=True)
    base = int(os.environ.get("FRESH_SEED_BASE", random.SystemRandom().randrange(1 << 24)))
    devices = visible_gpus()
    gpus = len(devices)
    jobs = int(os.environ.get("JOBS", max(gpus, 1) * int(os.environ.get("JOBS_PER_GPU", 1))))
    parts = shard_files(args, int(os.environ.get("SHARDS", 1)))
    deadline = float(os.environ["DEADLINE"]) if os.environ.get("DEADLINE") else None
    threads = os.environ.get("THREADS")
    print(f"fresh seeds: {n} passes from seed {base}, {len(parts)} shard(s) a pass, {jobs} process(es) at once, "
          f"{gpus} GPU(s): pytest {' '.join(args)}", flush=True)

    queue = [(i, s) for i in range(n) for s in range(len(parts))]
    status: dict[tuple[int, int], str] = {}  # "passed", "failed" or "not run"
    tails: dict[tuple[int, int], str] = {}  # each shard's pytest summary line
    lock = threading.Lock()
    t0 = time.monotonic()

    def run(i: int, s: int, slot: int) -> None:
        env = dict(os.environ, JAXCONV3D_TEST_SEED=str(base + i))
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = devices[slot % gpus]
        if threads:
            env["OMP_NUM_THREADS"] = env["JAXCONV3D_CPU_THREADS"] = threads
        log = out / (f"pass_{i}.log" if len(parts) == 1 else f"pass_{i}_{s}.log")
        left = None if deadline is None else deadline - (time.monotonic() - t0)
        if left is not None and left <= 0:
            status[i, s] = "not run"
            return
        cmd = [str(ROOT / "scripts" / "py"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *parts[s]]
        with open(log, "w") as f:
            try:
                rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=left).returncode
            except subprocess.TimeoutExpired:
                status[i, s] = "not run"
                return
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        ok = rc == 0 and " passed" in tail[0] and "failed" not in tail[0] and "error" not in tail[0]
        status[i, s] = "passed" if ok else "failed"
        tails[i, s] = tail[0]
        with lock:
            done = [status.get((i, k)) for k in range(len(parts))]
            if all(done):
                verdict = "passed" if all(d == "passed" for d in done) else (
                    "failed" if "failed" in done else "not run")
                summary = pass_summary([tails.get((i, k), "") for k in range(len(parts))])
                print(f"pass {i} seed {base + i}: {verdict}, {time.monotonic() - t0:.0f} s, {summary}", flush=True)

    def worker(slot: int) -> None:
        while True:
            with lock:
                if not queue:
                    return
                i, s = queue.pop(0)
            run(i, s, slot)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(jobs)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    passes = [[status.get((i, s), "not run") for s in range(len(parts))] for i in range(n)]
    passed = sum(all(x == "passed" for x in p) for p in passes)
    failed = sum("failed" in p for p in passes)
    not_run = n - passed - failed
    print(f"fresh seeds: {passed}/{n}" + (f" ({not_run} not finished by the deadline)" if not_run else ""))
    return 0 if passed == n else 1


if __name__ == "__main__":
    sys.exit(main())
