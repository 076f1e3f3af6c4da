#!/usr/bin/env python3
"""What filing a 12321 complaint costs: `POST /v1/complaints` latency and rate.

Each POST journals a revocation (fdatasync), searches the audit log for evidence and commits
one SQLite row with synchronous = FULL (fsync of the WAL), so its cost is two or three fsyncs
on the disk under --dir. Complaints arrive at a few a second nationally; this says how far
that is from the ceiling, and what an operator's tooling waits per call.

Method: the built binary (`cargo build --release`), the SMSC simulator, one gateway with a
journal, an audit log (with --audit-records decisions for the complained-about subscribers
already in it) and a register under --dir; --count POSTs one after another on keep-alive
connections (latency: p50 / p99), then the same count from --threads threads (throughput).
Bounded in count; every server is stopped at the end.

    python3 benches/complaints_post.py [--count 500] [--threads 8] [--dir /var/tmp]
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "consentgate")
TOKEN = "bench-complaints-token-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} not listening on {port}")


def post(conn, body):
    conn.request("POST", "/v1/complaints", body=json.dumps(body),
                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    return r.status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--dir", default=None, help="where journal, audit log and register live (default: a temp dir)")
    ap.add_argument("--audit-records", type=int, default=20000, help="decisions in the audit log before filing")
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    work = tempfile.mkdtemp(prefix="cg-complaints-", dir=a.dir)
    procs = []
    try:
        sim_p, gw_p, adm_p = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen([BIN, "smsc-sim", "--listen", f"127.0.0.1:{sim_p}"], stdout=subprocess.DEVNULL))
        wait_port(sim_p, procs[-1], "smsc-sim")
        with open(os.path.join(work, "token"), "w") as f:
            f.write(TOKEN)
        conf = os.path.join(work, "gw.toml")
        with open(conf, "w") as f:
            f.write(f"""
[listen]
smpp = "127.0.0.1:{gw_p}"
admin = "127.0.0.1:{adm_p}"
[upstream]
address = "127.0.0.1:{sim_p}"
[policy]
regime = "opt-out"
on_snapshot_unavailable = "allow"
[consent]
journal = "{work}/journal"
[audit]
dir = "{work}/audit"
mode = "all"
[admin]
token_file = "{work}/token"
[complaints]
db = "{work}/complaints.db"
calendar = "{ROOT}/config/calendar-cn-2026.toml"
[[account]]
system_id = "acme"
entity = "acme-retail"
class = "marketing"
licence = "B2-1"
""")
        procs.append(subprocess.Popen([BIN, "run", "--config", conf], stdout=subprocess.DEVNULL,
                                      env={**os.environ, "RUST_LOG": "warn"}))
        wait_port(adm_p, procs[-1], "gateway")
        # Decisions in the audit log for the subscribers complained about (evidence to find).
        subprocess.run([BIN, "load", "--target", f"127.0.0.1:{gw_p}", "--system-id", "acme", "--sessions", "2",
                        "--count", str(a.audit_records), "--duration", "30s",
                        "--destinations", "8613900000000-8613900001999"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)  # the audit writer's last batch

        def body(i, tag):
            return {"subscriber": f"86139{i % 2000:08d}", "entity": "acme-retail",
                    "received_at": "2026-12-01", "reference": f"{tag}-{i}"}

        conn = http.client.HTTPConnection("127.0.0.1", adm_p, timeout=30)
        lat = []
        for i in range(a.count):
            t = time.perf_counter()
            st = post(conn, body(i, "seq"))
            lat.append((time.perf_counter() - t) * 1e3)
            if st != 201:
                sys.exit(f"POST {i}: HTTP {st}")
        conn.close()
        lat.sort()
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]

        per = a.count // a.threads
        errors = []

        def worker(w):
            c = http.client.HTTPConnection("127.0.0.1", adm_p, timeout=30)
            for i in range(per):
                if post(c, body(w * per + i, f"par{w}")) != 201:
                    errors.append(w)
            c.close()

        ths = [threading.Thread(target=worker, args=(w,)) for w in range(a.threads)]
        t0 = time.perf_counter()
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        wall = time.perf_counter() - t0
        out = {
            "count": a.count,
            "audit_records": a.audit_records,
            "dir": work,
            "sequential_ms": {"p50": round(p(0.5), 3), "p99": round(p(0.99), 3), "max": round(lat[-1], 3),
                              "mean": round(statistics.mean(lat), 3)},
            "sequential_per_s": round(a.count / (sum(lat) / 1e3), 1),
            "parallel": {"threads": a.threads, "posts": per * a.threads, "per_s": round(per * a.threads / wall, 1),
                         "errors": len(errors)},
        }
        print(json.dumps(out, indent=2))
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            try:
                pr.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pr.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
