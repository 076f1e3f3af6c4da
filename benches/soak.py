#!/usr/bin/env python3
"""Soak: the real gateway for --minutes (default 30) at half its maximum
rate, with a SIGHUP reload every --reload-every seconds (default 60: the consent snapshot and
the TLS certificates, when configured, are re-read), MO opt-outs arriving from the simulator
(one every 200 ms, journalled), and every --sample seconds (default 10) a row of: the
gateway's RSS and open file descriptors (/proc), the throughput and latency percentiles of
that window (one `consentgate load` run per window: 4 sessions, rate-capped, each message to
a random number of a 100 M range looked up in a 20 M-record snapshot), and what it answered.

    cargo build --release
    python3 benches/soak.py                       # 30 minutes, writes benches/results/soak.*
    python3 benches/soak.py --minutes 2 --out /tmp/soak-short

Outputs <out>.csv (the rows), <out>.json (rows + summary), <out>.svg (four panels: RSS, FDs,
throughput, p50/p99 latency over time, reloads marked) and <out>.md (the summary). "RSS flat"
is judged after a warm-up (--warmup, default 3 minutes: the snapshot's pages, allocator
pools): the summary gives the RSS of the first and the last 5 minutes after it and the
least-squares slope over the whole post-warm-up span, in MiB per hour.

Every loop is bounded (--minutes); the script starts and stops every process it needs.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_relay  # noqa: E402  (the cached 20 M-record consent data and the port helpers)

BIN = e2e_relay.BIN
ROOT = e2e_relay.ROOT


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def load_window(port, seconds, rate, dest_range, report):
    cmd = [BIN, "load", "--target", f"127.0.0.1:{port}", "--system-id", "bench", "--password", "pw",
           "--sessions", "4", "--window", "100", "--count", "0", "--duration", f"{int(seconds * 1000)}ms",
           "--destinations", dest_range, "--report", report]
    if rate:
        cmd += ["--rate", str(int(rate))]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=seconds + 60)
    with open(report) as f:
        return json.load(f)


def slope_per_hour(ts, ys):
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    den = sum((t - mt) ** 2 for t in ts) or 1
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den * 3600


def svg(rows, reloads, title):
    W, H, pad = 960, 720, 60
    panels = [("RSS (MiB)", [r["rss_kib"] / 1024 for r in rows], ["#1f77b4"]),
              ("open FDs", [r["fds"] for r in rows], ["#8c564b"]),
              ("throughput (submit_sm/s)", [r["msg_per_s"] for r in rows], ["#2ca02c"]),
              ("latency p50 / p99 (us)", [(r["p50_us"], r["p99_us"]) for r in rows], ["#ff7f0e", "#d62728"])]
    ph = (H - 2 * pad) / len(panels) - 25
    t_end = max(r["t_s"] for r in rows) or 1
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>', f'<text x="{pad}" y="20" font-size="13">{title}</text>']
    x = lambda t: pad + (W - 2 * pad) * t / t_end
    for i, (name, vals, colors) in enumerate(panels):
        y0 = pad + i * (ph + 25)
        series = [[v[k] for v in vals] for k in range(len(colors))] if isinstance(vals[0], tuple) else [vals]
        top = max(max(s) for s in series) * 1.1 or 1
        y = lambda v: y0 + ph - ph * v / top
        o.append(f'<text x="{pad}" y="{y0 - 4}">{name}</text>')
        o.append(f'<line x1="{pad}" y1="{y0 + ph}" x2="{W - pad}" y2="{y0 + ph}" stroke="black"/>')
        o.append(f'<text x="{pad - 4}" y="{y0 + 8}" text-anchor="end">{top:,.0f}</text>')
        o.append(f'<text x="{pad - 4}" y="{y0 + ph}" text-anchor="end">0</text>')
        for t in reloads:
            o.append(f'<line x1="{x(t):.1f}" y1="{y0}" x2="{x(t):.1f}" y2="{y0 + ph}" stroke="#ddd"/>')
        for s, c in zip(series, colors):
            pts = " ".join(f"{x(r['t_s']):.1f},{y(v):.1f}" for r, v in zip(rows, s))
            o.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="1.5"/>')
    for m in range(0, int(t_end / 60) + 1, max(1, int(t_end / 60) // 10 or 1)):
        o.append(f'<text x="{x(m * 60):.1f}" y="{H - pad + 18}" text-anchor="middle">{m} min</text>')
    o.append(f'<text x="{W - pad}" y="{H - 12}" text-anchor="end">grey lines: SIGHUP reloads</text>')
    o.append("</svg>\n")
    return "\n".join(o)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--reload-every", type=float, default=60)
    ap.add_argument("--sample", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=3, help="minutes excluded from the RSS judgement")
    ap.add_argument("--records", type=int, default=20_000_000)
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "results", "soak"))
    a = ap.parse_args()
    if not os.path.exists(BIN):
        raise SystemExit("build first: cargo build --release")
    data = argparse.Namespace(regime="opt-out", records=a.records, refused=0.01)
    snap, dest_range, _ = e2e_relay.policy_data(data)
    tmp = tempfile.mkdtemp(prefix="consentgate-soak-")
    sim_p, gw_p, admin_p = e2e_relay.free_port(), e2e_relay.free_port(), e2e_relay.free_port()
    cfg = os.path.join(tmp, "soak.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[listen]
smpp = "127.0.0.1:{gw_p}"
admin = "127.0.0.1:{admin_p}"
[upstream]
address = "127.0.0.1:{sim_p}"
[session]
window = 200
[policy]
regime = "opt-out"
default_country_code = "86"
[consent]
snapshot = "{snap}"
journal = "{tmp}/journal"
[audit]
dir = "{tmp}/audit"
mode = "rejects"
[[account]]
system_id = "bench"
entity = "brand-1"
class = "marketing"
licence = "B2-9"
""")
    env = dict(os.environ, RUST_LOG="warn")
    procs = []
    try:
        sim = subprocess.Popen([BIN, "smsc-sim", "--listen", f"127.0.0.1:{sim_p}", "--no-receipts",
                                "--mo-every", "200ms"], env=env, stdout=subprocess.DEVNULL)
        procs.append(sim)
        e2e_relay.wait_port(sim_p, sim)
        gw = subprocess.Popen([BIN, "run", "--config", cfg], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(tmp, "gateway.log"), "w"))
        procs.append(gw)
        e2e_relay.wait_port(gw_p, gw, timeout=120)
        rep = os.path.join(tmp, "w.json")
        # The maximum rate on this machine, then half of it for the soak.
        load_window(gw_p, 5, None, dest_range, rep)  # warm the snapshot's pages first
        top = load_window(gw_p, 10, None, dest_range, rep)["submit_per_second"]
        rate = top / 2
        print(f"maximum {top:,.0f} msg/s; soaking at {rate:,.0f} msg/s for {a.minutes} min, "
              f"SIGHUP every {a.reload_every:.0f} s", flush=True)
        rows, reloads = [], []
        t0 = time.time()
        next_reload = a.reload_every
        while time.time() - t0 < a.minutes * 60:
            if gw.poll() is not None:
                raise SystemExit(f"the gateway exited during the soak ({gw.returncode}); see {tmp}/gateway.log")
            r = load_window(gw_p, a.sample, rate, dest_range, rep)
            t = time.time() - t0
            row = {"t_s": round(t, 1), "rss_kib": rss_kib(gw.pid), "fds": fds(gw.pid),
                   "msg_per_s": round(r["submit_per_second"]), "sent": r["sent"], "responses": r["responses"],
                   "unanswered": r["unanswered"], "p50_us": r["latency_us"]["p50"], "p99_us": r["latency_us"]["p99"],
                   "statuses": r["statuses"], "errors": len(r.get("errors") or [])}
            rows.append(row)
            print(f"{t:7.0f}s rss {row['rss_kib'] / 1024:7.1f} MiB fds {row['fds']:3d} "
                  f"{row['msg_per_s']:8,}/s p50 {row['p50_us']:6.0f} p99 {row['p99_us']:7.0f} us "
                  f"unanswered {row['unanswered']}", flush=True)
            if t >= next_reload:
                gw.send_signal(signal.SIGHUP)
                reloads.append(round(t, 1))
                next_reload += a.reload_every
        after = [r for r in rows if r["t_s"] >= a.warmup * 60]
        first = [r["rss_kib"] for r in after if r["t_s"] < a.warmup * 60 + 300]
        last = [r["rss_kib"] for r in after if r["t_s"] >= rows[-1]["t_s"] - 300]
        summary = {
            "minutes": a.minutes, "records": a.records, "max_msg_per_s": round(top), "rate": round(rate),
            "reloads": len(reloads), "windows": len(rows),
            "sent": sum(r["sent"] for r in rows), "responses": sum(r["responses"] for r in rows),
            "unanswered": sum(r["unanswered"] for r in rows), "load_errors": sum(r["errors"] for r in rows),
            "throughput_median": statistics.median(r["msg_per_s"] for r in rows),
            "p50_us_median": statistics.median(r["p50_us"] for r in rows),
            "p99_us_median": statistics.median(r["p99_us"] for r in rows),
            "p99_us_max": max(r["p99_us"] for r in rows),
            "rss_mib_first_5min_after_warmup": round(statistics.mean(first) / 1024, 1) if first else None,
            "rss_mib_last_5min": round(statistics.mean(last) / 1024, 1) if last else None,
            "rss_mib_max": round(max(r["rss_kib"] for r in rows) / 1024, 1),
            "rss_slope_mib_per_hour": round(slope_per_hour([r["t_s"] for r in after],
                                                           [r["rss_kib"] / 1024 for r in after]), 2),
            "fds_min_max": [min(r["fds"] for r in rows), max(r["fds"] for r in rows)],
            "gateway_alive": gw.poll() is None,
        }
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out + ".json", "w") as f:
            json.dump({"summary": summary, "reloads_at_s": reloads, "rows": rows}, f, indent=1)
        with open(a.out + ".csv", "w") as f:
            f.write("t_s,rss_kib,fds,msg_per_s,sent,responses,unanswered,p50_us,p99_us\n")
            for r in rows:
                f.write(",".join(str(r[k]) for k in ("t_s", "rss_kib", "fds", "msg_per_s", "sent", "responses",
                                                     "unanswered", "p50_us", "p99_us")) + "\n")
        title = (f"soak: {a.minutes:g} min at {rate:,.0f} msg/s (half of {top:,.0f}), {a.records / 1e6:g} M records, "
                 f"SIGHUP every {a.reload_every:g} s, MO opt-out every 200 ms")
        with open(a.out + ".svg", "w") as f:
            f.write(svg(rows, reloads, title))
        with open(a.out + ".md", "w") as f:
            f.write(f"# {title}\n\n| | |\n|---|---|\n")
            for k, v in summary.items():
                f.write(f"| {k} | {v} |\n")
        print(json.dumps(summary, indent=1))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
