#!/usr/bin/env python3
"""One node, 1 B records : generates the consent data, builds the snapshot
with bounded memory, loads it, and measures `decide` on it. Not run in CI (an hour and ~60 GB
of disk); run it once and copy the figures to README.md.

Data (architecture §4 scale): 100 M do-not-call numbers (1 M on the traffic range 86138…, the rest
elsewhere) and 900 M (msisdn, entity) pairs over 1 000 M numbers 8613… and 1000 entities,
70 % grants. The CSVs are written once to DIR (default /work/data1b) and reused.

Steps, each timed, peak RSS from /usr/bin/time -v when present:
  1. `snapshot build --dnc --consent --out DIR/billion.snap --memory 8GiB`
  2. `snapshot inspect` (a full load and validation, as the gateway does at start)
  3. `cargo bench --bench decide` with CONSENTGATE_BENCH_SNAPSHOT=DIR/billion.snap

Usage: benches/billion.py [--dir DIR] [--dnc 100000000] [--pairs 900000000] [--skip-decide]
"""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "consentgate")


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_relay import write_rows as write_csv  # noqa: E402  (the same chunked CSV writer)


def write_rows(path, header, rows):
    """write_csv to a temporary file, renamed into place when complete (a killed run leaves
    no half-written CSV to be reused)."""
    write_csv(path + ".tmp", header, rows)
    os.replace(path + ".tmp", path)


def timed(cmd, env=None):
    """Runs cmd; returns (seconds, peak RSS in KiB or None, stdout+stderr)."""
    pre = ["/usr/bin/time", "-v"] if os.path.exists("/usr/bin/time") else []
    t0 = time.time()
    p = subprocess.run(pre + cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt = time.time() - t0
    if p.returncode != 0:
        print(p.stdout[-4000:])
        sys.exit(f"{cmd[0]} failed ({p.returncode})")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stdout)
    return dt, int(m.group(1)) if m else None, p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/work/data1b")
    ap.add_argument("--dnc", type=int, default=100_000_000)
    ap.add_argument("--pairs", type=int, default=900_000_000)
    ap.add_argument("--memory", default="8GiB")
    ap.add_argument("--skip-decide", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    tag = f"{a.dnc}-{a.pairs}"
    dnc_csv, consent_csv = (os.path.join(a.dir, f"{tag}.{n}.csv") for n in ("dnc", "consent"))
    rnd = random.Random(11)
    r = rnd.randrange
    if not os.path.exists(dnc_csv):
        t0 = time.time()
        on = min(a.dnc, 1_000_000)
        rows = (f"{8613800000000 + r(100_000_000)},2026-01-01\n" if i < on else
                f"{8615000000000 + r(40_000_000_000)},2026-01-01\n" for i in range(a.dnc))
        write_rows(dnc_csv, "msisdn,registered_at\n", rows)
        print(f"{dnc_csv}: {a.dnc} rows in {time.time() - t0:.0f} s", flush=True)
    if not os.path.exists(consent_csv):
        t0 = time.time()
        rows = (f"{8613000000000 + r(1_000_000_000)},brand-{r(1000)},{'grant' if r(10) < 7 else 'revoke'},2026-02-01\n"
                for _ in range(a.pairs))
        write_rows(consent_csv, "msisdn,entity,action,at\n", rows)
        print(f"{consent_csv}: {a.pairs} rows in {time.time() - t0:.0f} s", flush=True)
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    snap = os.path.join(a.dir, f"{tag}.snap")
    dt, rss, out = timed([BIN, "snapshot", "build", "--dnc", dnc_csv, "--consent", consent_csv,
                          "--out", snap, "--memory", a.memory])
    size = os.path.getsize(snap)
    print(out.split("\r")[-1][-3000:])
    print(f"build: {dt:.0f} s, peak RSS {rss / 1048576 if rss else float('nan'):.2f} GiB, "
          f"{size / 1e9:.2f} GB, {size / (a.dnc + a.pairs):.2f} bytes per input record", flush=True)
    dt, rss, out = timed([BIN, "snapshot", "inspect", snap])
    print(out[-1500:])
    print(f"load (inspect: read + full validation): {dt:.1f} s, peak RSS "
          f"{rss / 1048576 if rss else float('nan'):.2f} GiB", flush=True)
    if not a.skip_decide:
        env = dict(os.environ, CONSENTGATE_BENCH_SNAPSHOT=snap)
        p = subprocess.run(["cargo", "bench", "--bench", "decide", "--", "--noplot"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print("\n".join(l for l in p.stdout.splitlines() if "time:" in l or "decide" in l or "load" in l))
    return 0


if __name__ == "__main__":
    sys.exit(main())
