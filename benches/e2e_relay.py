#!/usr/bin/env python3
"""End-to-end throughput: consentgate vs a plain frame-forwarding TCP relay.

Hypothesis: consentgate's per-PDU work (framing, validation, window, sequence remapping,
local answers) costs little next to the extra hop itself, so it moves >= 0.85x what a plain
relay moves under the same load (4 sessions x window 100, delivery receipts on).

Baseline: `consentgate relay`, ~50 lines that read, walk PDU headers and forward whole
frames in one write per read (the physical cost of one extra hop on this machine).

Method: one SMSC simulator; both forwarders run side by side, pinned to the same core
(taskset), while the simulator and the load generator share the other core. Runs alternate
between the two forwarders (order flipped each round) so drift on this shared, noisy VM hits
both alike. Each run: `consentgate load --count 0 --duration Ns`. Prints every run, the
medians and the ratio, and writes target/bench/e2e_relay.json.

With --policy the gateway runs with a consent snapshot of --records records
(half DNC numbers, half (msisdn, entity) pairs of other entities, on the traffic's own number
range; --regime opt-out by default, --refused 0.01 of the traffic on the DNC list) and the
load sends every message to a random number of a 100 M range (`load --destinations`), so
every decision probes a random line of the whole table, as real traffic does. Every message
is marketing and takes the full decision (normalise, delta, snapshot); the relay forwards all
of it, consentgate answers the refused share itself.

With --baseline-bin PATH a third forwarder joins the alternation: another consentgate
binary (e.g. built from an earlier commit) on the same config, so the cost of a change is
measured side by side (metrics and the audit log must cost <= 3 %). --extra-toml
FILE appends config (e.g. an [audit] section) to the current binary's config only.

With --all-steps every step of the pipeline is on as well: 1 000 content rules
(benches/content_rules.py: 2 000 literals, 100 regexes, none matching the traffic), the
commercial checks (a registered 【signature】 and an opt-out hint, both present), frequency
caps (10 per entity and 20 per subscriber per local day, the same text within 60 s), quiet
hours (a one-minute window at 03:00 Shanghai, so the verdicts stay those of consent), and
every message carries the text --text (UCS-2): the gateway decodes and folds every message.

With --caps-exchange the measured gateway also shares its caps through a real redis-server
(started on a free loopback port, no persistence): `[replication]` with `caps = true` and a
`[consent] journal` in a temporary directory; the baseline keeps its own config. Run it with
--baseline-bin set to a copy of the same build and --baseline-same-config to read the cost
of the exchange on the message path (the outbox, the batched XADD on its own task).

With --tls the gateway also listens on `listen.smpp_tls` (a certificate of a throw-away CA
made by `openssl`) and a fourth forwarder joins the alternation: the same gateway process
reached through TLS (`load --tls-ca`; TLS 1.3 between the load generator and the gateway,
plain TCP to the simulator), so the cost of TLS on the ESME leg is measured side by side
with the same process on plain TCP (CPU per message at half load is the figure to read: at
maximum rate the load generator, which encrypts too, shares its core with the simulator).

With --tls-upstream the cost of TLS on the SMSC leg, the same way: a third gateway process,
the "terminator" (no consent data, the account transactional, so it forwards everything),
listens on a plain and a TLS port in front of the simulator; two more gateways on the same
config as the measured one forward to it, one over plain TCP (forwarder cg-smsc-plain) and
one over TLS (`[upstream.tls]`, forwarder cg-smsc-tls). Both paths have the same extra hop;
the difference is the measured gateway encrypting submits and decrypting their responses
and receipts (the terminator, on the same core, pays for the other end). Read the gateway
CPU per message of cg-smsc-tls against cg-smsc-plain.

With --cmpp the same comparison on the CMPP front, in the same run: the ISMG simulator
(`smsc-sim --cmpp`) behind the gateway's `listen.cmpp` port (`[upstream.cmpp]`, its window
set to --window so the CMPP load is the SMPP load: the same sessions, window, texts and
destinations) and behind a second plain relay (the same `relay`: CMPP frames with their 4-byte
length first). Two more forwarders join the alternation, consentgate-cmpp (the same gateway
process) and relay-cmpp; the load speaks CMPP 3.0 (`load --cmpp 3.0`). Read the ratio
consentgate-cmpp/relay-cmpp against consentgate/relay.

With --dlt DIR (and --policy) the measured gateway runs India's DLT scrubbing: its account has
`scrubbing = "dlt"` and `[dlt] registry` is DIR.dlt, compiled from the five CSVs in DIR (e.g.
`consentgate dlt synth --dir DIR`, 10 M templates; built here with `dlt build` when missing).
The script picks one active promotional template of an active PE with an active P header
(outside the biggest PEs), fills each {#var#} with a short value and checks the message
passes with `dlt lookup`; every forwarder then gets that text from that header, with the PE
id, template id and a declared TM id in TLVs 0x1400-0x1402 (`load --tlv`); with
--dlt-no-template-id without 0x1401, so the gateway finds the template by its text.
`promotional_hours` is set to a window around the time of the run, so the hours check runs and
passes. Run it with --baseline-bin set to a copy of the same build (not
--baseline-same-config): the baseline is the same build without DLT, the account's default
steps on the same consent data, so consentgate/baseline is the cost of DLT scrubbing. With
--baseline-same-config the baseline scrubs DLT too: a before/after of one build against another.

Then (unless --half-rate-runs 0) the added latency at half load (or at --half-rate): every forwarder again,
alternating, with the load capped at half the relay's median maximum rate; the p99 difference
consentgate − relay is the latency consentgate adds (target: <= 50 us).

Output: target/bench/e2e_relay[_policy].json (every run), .svg (throughput per run and
latency percentiles of each forwarder) and .md (a short summary with the targets).

Usage: benches/e2e_relay.py [--runs 7] [--seconds 2] [--sessions 4] [--window 100]
                            [--no-receipts] [--no-pin] [--gw-cores 1|0,1]
                            [--policy [--records 2000000] [--regime opt-out|opt-in] [--refused 0.01]]
                            [--baseline-bin PATH] [--extra-toml FILE] [--half-rate-runs 5]
                            [--tls] [--tls-upstream] [--cmpp] [--dlt DIR [--dlt-no-template-id]]
                            [--out NAME]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CONSENTGATE_BIN: a copy of the build to measure, so that a rebuild during a long run does
# not change the binary under it.
BIN = os.environ.get("CONSENTGATE_BIN") or os.path.join(ROOT, "target", "release", "consentgate")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited early: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} not ready")


def cpu_seconds(pid):
    """utime + stime of a process, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def pin(core, cmd, use_pin):
    if use_pin and shutil.which("taskset") and os.cpu_count() and os.cpu_count() >= 2:
        return ["taskset", "-c", str(core)] + cmd
    return cmd


# Traffic range of --policy runs: 100 M numbers, one per message drawn uniformly
# (`load --destinations`), so every decision probes a random line of the whole table.
TRAFFIC_LO, TRAFFIC_N = 8613800000000, 100_000_000
# DNC numbers beyond the refused share live here, outside the traffic.
OTHER_LO, OTHER_N = 8615000000000, 1_000_000_000
CACHE = os.path.join(ROOT, "target", "bench", "snapshots")


def write_rows(path, header, rows):
    """Writes CSV rows from an iterator of strings, in large chunks (≈ 2 M rows/s)."""
    with open(path, "w") as f:
        f.write(header)
        chunk = []
        for r in rows:
            chunk.append(r)
            if len(chunk) >= 1 << 16:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))


def policy_data(a):
    """The consent data of a --policy run, cached under target/bench/snapshots/ (the CSVs
    and the snapshot; 100 M rows take minutes to write). Returns (snapshot path,
    --destinations range, expected refused share).

    opt-out (the line-rate scenario): half the records are DNC numbers, `refused` x 100 M of
    them on the traffic range (those messages are refused) and the rest elsewhere; the other
    half are (msisdn, entity) pairs of 1000 other entities on the traffic range (grants and
    revokes), so the account entity's probe shares its line with real pairs.
    opt-in: the account entity holds grants for a share 1 - refused of a traffic range sized to
    hold half the records; the other half are DNC numbers outside it."""
    import random
    os.makedirs(CACHE, exist_ok=True)
    key = f"{a.regime}-{a.records}-{a.refused:g}"
    dnc_csv, consent_csv = (os.path.join(CACHE, f"{key}.{n}.csv") for n in ("dnc", "consent"))
    half = a.records // 2
    if a.regime == "opt-out":
        lo, n = TRAFFIC_LO, TRAFFIC_N
        in_range = min(half, int(a.refused * n))
        expect = in_range / n
    else:
        lo, n = TRAFFIC_LO, max(1, int(half / max(1e-9, 1 - a.refused)))
        in_range = 0
        expect = a.refused
    if not (os.path.exists(dnc_csv) and os.path.exists(consent_csv)):
        t0 = time.time()
        rnd = random.Random(7)
        r = rnd.randrange
        dnc = (f"{lo + r(n)},2026-01-01\n" for _ in range(in_range))
        rest = (f"{OTHER_LO + r(OTHER_N)},2026-01-01\n" for _ in range(half - in_range))
        write_rows(dnc_csv + ".tmp", "msisdn,registered_at\n", (x for g in (dnc, rest) for x in g))
        if a.regime == "opt-out":
            rows = (f"{lo + r(n)},brand-{r(1000)},{'grant' if r(10) < 7 else 'revoke'},2026-02-01\n"
                    for _ in range(a.records - half))
        else:
            keep = 1 - a.refused
            rows = (f"{lo + i},bench-brand,grant,2026-02-01\n" for i in range(n) if rnd.random() < keep)
        write_rows(consent_csv + ".tmp", "msisdn,entity,action,at\n", rows)
        os.replace(dnc_csv + ".tmp", dnc_csv)
        os.replace(consent_csv + ".tmp", consent_csv)
        print(f"consent data of {a.records} records written in {time.time() - t0:.1f} s", flush=True)
    snap = snap_for(a, BIN, "current")
    return snap, f"{lo}-{lo + n - 1}", expect


def snap_for(a, binary, tag):
    """The snapshot `binary` builds from the cached CSVs (rebuilt when the binary is newer)."""
    key = f"{a.regime}-{a.records}-{a.refused:g}"
    dnc_csv, consent_csv = (os.path.join(CACHE, f"{key}.{n}.csv") for n in ("dnc", "consent"))
    snap = os.path.join(CACHE, f"{key}.{tag}.snap")
    if not os.path.exists(snap) or os.path.getmtime(snap) < os.path.getmtime(binary):
        t0 = time.time()
        subprocess.run([binary, "snapshot", "build", "--dnc", dnc_csv, "--consent", consent_csv, "--out", snap],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"snapshot of {a.records} records built by {binary} in {time.time() - t0:.1f} s", flush=True)
    return snap



def dlt_pick(d, binary):
    """(registry path, dict of pe, header, template_id, tm, text) for a --dlt run: one active
    promotional template of an active PE (not one of the five biggest, synth's entities 0-4)
    with an active P header and a declared TM, its placeholders filled, checked with `dlt
    lookup`."""
    import csv
    d = d.rstrip("/")
    reg = d + ".dlt"
    names = ("entities", "headers", "templates", "chains", "preferences")
    if not os.path.exists(reg):
        t0 = time.time()
        cmd = [binary, "dlt", "build", "--out", reg]
        for n in names:
            cmd += [f"--{n}", os.path.join(d, f"{n}.csv")]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"DLT registry {reg} built in {time.time() - t0:.1f} s", flush=True)
    with open(os.path.join(d, "entities.csv"), newline="") as f:
        active = {r["pe_id"] for r in csv.DictReader(f) if r["status"] == "active"}
    with open(os.path.join(d, "headers.csv"), newline="") as f:
        p_headers = {r["header"]: r["pe_id"] for r in csv.DictReader(f) if r["type"] == "P" and r["status"] == "active"}
    tms = {}
    with open(os.path.join(d, "chains.csv"), newline="") as f:
        for r in csv.DictReader(f):
            tms.setdefault(r["pe_id"], r["tm_id"])
    big = {str(1101000000000000000 + i) for i in range(5)}
    with open(os.path.join(d, "templates.csv"), newline="") as f:
        for r in csv.DictReader(f):
            pe = r["pe_id"]
            if (r["category"] != "promotional" or r["status"] != "active" or pe not in active or pe in big
                    or pe not in tms or not r["content"].isascii()):
                continue
            header = next((h for h in r["headers"].split(";") if p_headers.get(h) == pe), None)
            if header is None:
                continue
            text = r["content"].replace("{#var#}", "4821")
            pick = {"pe": pe, "header": header, "template_id": r["template_id"], "tm": tms[pe], "text": text}
            look = subprocess.run([binary, "dlt", "lookup", reg, "--pe-id", pe, "--header", header,
                                   "--template-id", pick["template_id"], "--chain", pick["tm"], "--text", text,
                                   "--at", "2026-06-01T12:00:00+05:30"],
                                  stdout=subprocess.PIPE, text=True)
            if look.returncode == 0:
                return reg, pick
    raise SystemExit(f"--dlt {d}: no active promotional template of an active PE with a P header and a chain")


def run_load(cmd, env):
    """`consentgate load`: exit 1 means the run did not go as asked (a bind refused, submits
    unanswered): the report still holds the figures, so the run counts, with the reason
    printed; anything else is an error."""
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode == 1:
        print(f"  load: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else 'failed'}", flush=True)
    elif p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, cmd, stderr=p.stderr)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--no-receipts", action="store_true")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--policy", action="store_true")
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--regime", choices=["opt-out", "opt-in"], default="opt-out")
    ap.add_argument("--refused", type=float, default=0.01,
                    help="with --policy: share of the traffic the snapshot refuses (default 0.01)")
    ap.add_argument("--snapshot", default=None,
                    help="with --policy: serve this existing snapshot (e.g. benches/billion.py's) instead of "
                         "building one; traffic to the 100 M range 86138…")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="seconds to wait after the forwarders are up (a 1 B-record snapshot's move onto "
                         "huge pages takes ~10-20 s of the gateway's core)")
    ap.add_argument("--gw-cores", default="1",
                    help="cores the gateway and the relay run on (taskset list, e.g. 1 or 0,1)")
    ap.add_argument("--baseline-bin", default=None)
    ap.add_argument("--baseline-same-config", action="store_true",
                    help="give the baseline the same config as the current binary (--all-steps, --extra-toml): a before/after of one build against another")
    ap.add_argument("--extra-toml", default=None)
    ap.add_argument("--half-rate-runs", type=int, default=5)
    ap.add_argument("--half-rate", type=float, default=None,
                    help="the rate of the second phase (default: half the relay's median maximum); e.g. one "
                         "every forwarder sustains, so CPU per message compares at equal load")
    ap.add_argument("--all-steps", action="store_true",
                    help="every step on: content rules, commercial checks, caps, quiet hours")
    ap.add_argument("--text", default="【Bench】本周会员日全场八折，详情见官网，回T退订",
                    help="with --all-steps: the text of every message")
    ap.add_argument("--caps-exchange", action="store_true",
                    help="the measured gateway shares its caps through a redis-server this script starts "
                         "([replication] caps = true); see the docstring")
    ap.add_argument("--tls", action="store_true",
                    help="also measure the gateway through its TLS listener (forwarder consentgate-tls)")
    ap.add_argument("--tls-upstream", action="store_true",
                    help="also measure TLS on the SMSC leg: forwarders cg-smsc-plain and cg-smsc-tls through a "
                         "terminating gateway (see the docstring)")
    ap.add_argument("--cmpp", action="store_true",
                    help="also measure the CMPP front against a plain relay in front of the ISMG simulator "
                         "(forwarders consentgate-cmpp and relay-cmpp); see the docstring")
    ap.add_argument("--dlt", default=None, metavar="DIR",
                    help="with --policy: the measured gateway scrubs DLT against DIR.dlt (built from DIR's five "
                         "CSVs when missing); see the docstring")
    ap.add_argument("--dlt-no-template-id", action="store_true",
                    help="with --dlt: no template id TLV, the gateway finds the template by its text")
    ap.add_argument("--out", default=None, help="report base name under target/bench/")
    ap.add_argument("--pcap", default=None,
                    help="also replay this capture (load --pcap --speed max) through every forwarder")
    ap.add_argument("--pcap-server", default=None,
                    help="with --pcap: load --server IP (10.0.0.1 = the ESME leg of a consentgate capture)")
    a = ap.parse_args()
    use_pin = not a.no_pin
    if a.snapshot and a.baseline_bin:
        raise SystemExit("--snapshot and --baseline-bin: the baseline would need its own build of the data")

    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    if a.dlt and not a.policy:
        raise SystemExit("--dlt needs --policy")

    tmp = tempfile.mkdtemp(prefix="cg-bench-")
    sim_p, gw_p, relay_p, base_p, tls_p = free_port(), free_port(), free_port(), free_port(), free_port()
    term_p, term_tls_p, up_plain_p, up_tls_p = free_port(), free_port(), free_port(), free_port()
    ismg_p, cgw_p, crelay_p = free_port(), free_port(), free_port()
    tls_toml, tls_ca = "", None
    if a.tls or a.tls_upstream:
        tls_ca, cert, key = make_certs(tmp)
    if a.tls:
        tls_toml = f'smpp_tls = "127.0.0.1:{tls_p}"\n[listen.tls]\ncert = "{cert}"\nkey = "{key}"\n'
    # Without --policy there is no consent data: let commercial traffic through so both
    # forwarders carry the same messages (the default, `reject`, would answer all locally).
    policy_toml = "[policy]\non_snapshot_unavailable = \"allow\"\n"
    base_policy_toml = None
    scenario = None
    dest_range = None
    if a.policy:
        if a.snapshot:
            snap, dest_range, expect_refused = a.snapshot, f"{TRAFFIC_LO}-{TRAFFIC_LO + TRAFFIC_N - 1}", float("nan")
        else:
            snap, dest_range, expect_refused = policy_data(a)
        policy_toml = f"""
[policy]
regime = "{a.regime}"
[consent]
snapshot = "{snap}"
"""
        if a.baseline_bin:
            # The baseline build may read another snapshot format: it builds its own from the
            # same CSV files, so both gateways hold the same records.
            base_snap = snap_for(a, a.baseline_bin, "base")
            base_policy_toml = policy_toml.replace(snap, base_snap)
    cfg = os.path.join(tmp, "bench.toml")
    base_cfg = os.path.join(tmp, "base.toml")
    extra = open(a.extra_toml).read() if a.extra_toml else ""
    account_more = ""
    if a.all_steps:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import content_rules
        extra += ALL_STEPS_TOML + content_rules.toml(1000)
        account_more = 'signatures = ["Bench"]\n'
    dlt_load = []
    if a.dlt:
        reg, pick = dlt_pick(a.dlt, BIN)
        # IST = UTC+05:30: a window from an hour before now to five hours after.
        ist = (time.gmtime().tm_hour * 60 + time.gmtime().tm_min + 330) % 1440
        hm = lambda m: f"{(m % 1440) // 60:02}:{m % 60:02}"
        extra += (f'\n[dlt]\nregistry = "{reg}"\n[dlt.promotional_hours]\nstart = "{hm(ist - 60)}"\n'
                  f'end = "{hm(ist + 300)}"\ntimezone = "Asia/Kolkata"\n')
        account_more += 'scrubbing = "dlt"\n'
        dlt_load = ["--source", pick["header"], "--text", pick["text"], "--tlv", f"0x1400={pick['pe']}",
                    "--tlv", f"0x1402={pick['tm']}"]
        if not a.dlt_no_template_id:
            dlt_load += ["--tlv", f"0x1401={pick['template_id']}"]
        print(f"DLT: PE {pick['pe']}, header {pick['header']}, template {pick['template_id']}"
              f"{' (not sent: found by its text)' if a.dlt_no_template_id else ''}, TM {pick['tm']}, "
              f"text {pick['text']!r}", flush=True)
    base_extra = extra if a.baseline_same_config else ""
    def write_config(path, port, more, pol, listen_more="", upstream=f"127.0.0.1:{sim_p}", upstream_more="",
                     account="", cls="marketing"):
        with open(path, "w") as f:
            f.write(f"""
[listen]
smpp = "127.0.0.1:{port}"
admin = "127.0.0.1:0"
{listen_more}
[upstream]
address = "{upstream}"
{upstream_more}
[session]
window = {a.window}
{pol}
{more}
[[account]]
system_id = "bench"
entity = "bench-brand"
class = "{cls}"
licence = "B2-BENCH"
{account}""")
    main_policy_toml, main_extra = policy_toml, extra
    redis = None
    if a.caps_exchange:
        if not a.policy:
            raise SystemExit("--caps-exchange needs --policy (the journal lives beside the consent data)")
        redis_p = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_p), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        wait_port(redis_p, redis)
        journal = os.path.join(tmp, "journal")
        os.makedirs(journal, exist_ok=True)
        main_policy_toml = policy_toml.replace("[consent]\n", f'[consent]\njournal = "{journal}"\n', 1)
        main_extra += (f'\n[node]\nid = "bench"\n[replication]\nredis = "redis://127.0.0.1:{redis_p}/0"\n'
                       'stream = "bench:statements"\ncaps = true\n')
    cmpp_listen, cmpp_upstream = "", ""
    if a.cmpp:
        cmpp_listen = f'cmpp = "127.0.0.1:{cgw_p}"\n'
        cmpp_upstream = f'[upstream.cmpp]\naddress = "127.0.0.1:{ismg_p}"\nwindow = {a.window}\n'
    write_config(cfg, gw_p, main_extra, main_policy_toml, listen_more=cmpp_listen + tls_toml,
                 upstream_more=cmpp_upstream, account=account_more)
    write_config(base_cfg, base_p, base_extra, base_policy_toml or policy_toml,
                 account=account_more if a.baseline_same_config else "")
    chain = {}
    if a.tls_upstream:
        # The terminator forwards everything: no consent data, every message transactional.
        term_cfg = os.path.join(tmp, "terminator.toml")
        write_config(term_cfg, term_p, "", '[policy]\non_snapshot_unavailable = "allow"\n',
                     listen_more=f'smpp_tls = "127.0.0.1:{term_tls_p}"\n[listen.tls]\ncert = "{cert}"\nkey = "{key}"\n',
                     cls="transactional")
        for name, port, up, up_more in (
                ("cg-smsc-plain", up_plain_p, term_p, ""),
                ("cg-smsc-tls", up_tls_p, term_tls_p, f'[upstream.tls]\nenabled = true\nca = "{tls_ca}"\n')):
            path = os.path.join(tmp, f"{name}.toml")
            write_config(path, port, extra, policy_toml, upstream=f"127.0.0.1:{up}", upstream_more=up_more,
                         account=account_more)
            chain[name] = (path, port)
    env = dict(os.environ, RUST_LOG="warn")
    procs = [redis] if redis else []
    try:
        sim = subprocess.Popen(pin(0, [BIN, "smsc-sim", "--listen", f"127.0.0.1:{sim_p}"], use_pin),
                               env=env, stdout=subprocess.DEVNULL)
        procs.append(sim)
        wait_port(sim_p, sim)
        gw = subprocess.Popen(pin(a.gw_cores, [BIN, "run", "--config", cfg], use_pin), env=env,
                              stdout=subprocess.DEVNULL)
        procs.append(gw)
        relay = subprocess.Popen(pin(a.gw_cores, [BIN, "relay", "--listen", f"127.0.0.1:{relay_p}",
                                         "--upstream", f"127.0.0.1:{sim_p}"], use_pin),
                                 env=env, stdout=subprocess.DEVNULL)
        procs.append(relay)
        wait_port(gw_p, gw, timeout=180)  # a 1 B-record snapshot takes 10-25 s to load
        wait_port(relay_p, relay)
        targets = {"consentgate": gw_p, "relay": relay_p}
        pids = {"consentgate": gw.pid, "relay": relay.pid}
        if a.cmpp:
            ismg = subprocess.Popen(pin(0, [BIN, "smsc-sim", "--cmpp", "--listen", f"127.0.0.1:{ismg_p}"], use_pin),
                                    env=env, stdout=subprocess.DEVNULL)
            procs.append(ismg)
            wait_port(ismg_p, ismg)
            crelay = subprocess.Popen(pin(a.gw_cores, [BIN, "relay", "--listen", f"127.0.0.1:{crelay_p}",
                                              "--upstream", f"127.0.0.1:{ismg_p}"], use_pin),
                                      env=env, stdout=subprocess.DEVNULL)
            procs.append(crelay)
            wait_port(cgw_p, gw)
            wait_port(crelay_p, crelay)
            targets["consentgate-cmpp"], pids["consentgate-cmpp"] = cgw_p, gw.pid
            targets["relay-cmpp"], pids["relay-cmpp"] = crelay_p, crelay.pid
        if a.tls:
            wait_port(tls_p, gw)
            targets["consentgate-tls"] = tls_p
            pids["consentgate-tls"] = gw.pid
        if a.tls_upstream:
            term = subprocess.Popen(pin(a.gw_cores, [BIN, "run", "--config", term_cfg], use_pin), env=env,
                                    stdout=subprocess.DEVNULL)
            procs.append(term)
            wait_port(term_tls_p, term)
            for name, (path, port) in chain.items():
                p = subprocess.Popen(pin(a.gw_cores, [BIN, "run", "--config", path], use_pin), env=env,
                                     stdout=subprocess.DEVNULL)
                procs.append(p)
                wait_port(port, p, timeout=180)
                targets[name] = port
                pids[name] = p.pid
        if a.baseline_bin:
            base = subprocess.Popen(pin(a.gw_cores, [a.baseline_bin, "run", "--config", base_cfg], use_pin), env=env,
                                    stdout=subprocess.DEVNULL)
            procs.append(base)
            wait_port(base_p, base)
            targets["baseline"] = base_p
            pids["baseline"] = base.pid
        def phase(label, runs, rate=None):
            res = {k: [] for k in targets}
            for i in range(runs):
                order = list(targets) if i % 2 == 0 else list(reversed(list(targets)))
                for name in order:
                    rep = os.path.join(tmp, f"{label}-{name}-{i}.json")
                    cmd = [BIN, "load", "--target", f"127.0.0.1:{targets[name]}", "--system-id", "bench",
                           "--password", "pw", "--sessions", str(a.sessions), "--window", str(a.window),
                           "--count", "0", "--duration", f"{int(a.seconds * 1000)}ms", "--report", rep]
                    if rate:
                        cmd += ["--rate", str(int(rate))]
                    if not a.no_receipts:
                        cmd.append("--receipts")
                    if scenario:
                        cmd += ["--scenario", scenario]
                    if dest_range:
                        cmd += ["--destinations", dest_range]
                    if a.all_steps:
                        cmd += ["--text", a.text]
                    cmd += dlt_load
                    if name == "consentgate-tls":
                        cmd += ["--tls-ca", tls_ca]
                    if name.endswith("-cmpp"):
                        cmd += ["--cmpp", "3.0"]
                    cpu0 = cpu_seconds(pids[name])
                    run_load(pin(0, cmd, use_pin), env)
                    cpu = cpu_seconds(pids[name]) - cpu0
                    with open(rep) as f:
                        r = json.load(f)
                    ok = r["statuses"].get("0x00000000", 0)
                    lat = r["latency_us"]
                    res[name].append({
                        "msg_per_s": r["submit_per_second"], "p50_us": lat["p50"], "p90_us": lat["p90"],
                        "p99_us": lat["p99"], "p999_us": lat["p999"], "max_us": lat["max"], "sent": r["sent"],
                        "ok": ok, "receipts": r["receipts"], "unanswered": r["unanswered"],
                        "expect_mismatches": r.get("expect_mismatches", 0),
                        "cpu_us_per_msg": cpu * 1e6 / max(r["responses"], 1),
                    })
                    print(f"{label} run {i + 1}/{runs} {name:<12} {r['submit_per_second']:>12,.0f} msg/s  "
                          f"p50 {lat['p50']:>7.0f} us  p99 {lat['p99']:>7.0f} us  "
                          f"ok {ok}/{r['sent']}  receipts {r['receipts']}  "
                          f"forwarder CPU {cpu * 1e6 / max(r['responses'], 1):.2f} us/msg", flush=True)
            return res

        replays = None
        if a.pcap:
            replays = {k: [] for k in targets}
            for i in range(a.runs):
                order = list(targets) if i % 2 == 0 else list(reversed(list(targets)))
                for name in order:
                    rep = os.path.join(tmp, f"replay-{name}-{i}.json")
                    cmd = [BIN, "load", "--target", f"127.0.0.1:{targets[name]}", "--system-id", "bench",
                           "--password", "pw", "--sessions", str(a.sessions), "--window", str(a.window),
                           "--pcap", a.pcap, "--speed", "max", "--report", rep]
                    if a.pcap_server:
                        cmd += ["--server", a.pcap_server]
                    run_load(pin(0, cmd, use_pin), env)
                    with open(rep) as f:
                        r = json.load(f)
                    rp = r.get("replay") or {}
                    replays[name].append({"msg_per_s": r["submit_per_second"], "sent": r["sent"],
                                          "responses": r["responses"], "unanswered": r["unanswered"],
                                          "p99_us": r["latency_us"]["p99"], "differ": rp.get("differ"),
                                          "compared": rp.get("compared")})
                    print(f"replay run {i + 1}/{a.runs} {name:<12} {r['sent']} PDUs  "
                          f"{r['submit_per_second']:>10,.0f}/s  unanswered {r['unanswered']}  "
                          f"status differs from recording {rp.get('differ')}/{rp.get('compared')}", flush=True)

        # Warm-up, discarded: right after start a gateway moves its snapshot onto huge pages
        # in the background (seconds at 100 M records), and every process faults in its
        # buffers; the first measured run would pay for that.
        time.sleep(a.settle)
        phase("warm-up", 1)
        results = phase("max", a.runs)
        med = {k: statistics.median(x["msg_per_s"] for x in v) for k, v in results.items()}
        half = None
        if a.half_rate_runs > 0 and med["relay"] > 0:
            half_rate = a.half_rate or med["relay"] / 2
            hres = phase("half", a.half_rate_runs, rate=half_rate)
            half = {"rate": half_rate, "runs": hres,
                    "median_p99_us": {k: statistics.median(x["p99_us"] for x in v) for k, v in hres.items()},
                    "median_p50_us": {k: statistics.median(x["p50_us"] for x in v) for k, v in hres.items()}}
            half["added_p99_us"] = half["median_p99_us"]["consentgate"] - half["median_p99_us"]["relay"]
            half["median_cpu_us_per_msg"] = {k: statistics.median(x["cpu_us_per_msg"] for x in v)
                                             for k, v in hres.items()}
        p99 = {k: statistics.median(x["p99_us"] for x in v) for k, v in results.items()}
        p50 = {k: statistics.median(x["p50_us"] for x in v) for k, v in results.items()}
        ratio = med["consentgate"] / med["relay"] if med["relay"] else 0.0
        refused = {k: statistics.median(1 - x["ok"] / max(x["sent"], 1) for x in v) for k, v in results.items()}
        print()
        what = f"snapshot {a.snapshot}" if a.snapshot else f"{a.records} records"
        print(f"policy {'on (' + what + ')' if a.policy else 'off'}, "
              f"sessions {a.sessions} x window {a.window}, receipts {'off' if a.no_receipts else 'on'}, "
              f"{a.runs} alternating runs of {a.seconds:g} s, forwarders pinned: {use_pin}")
        for k in targets:
            print(f"  median {k:<12} {med[k]:>12,.0f} msg/s   p50 {p50[k]:>6.0f} us   p99 {p99[k]:>6.0f} us")
        print(f"  ratio consentgate/relay: {ratio:.3f}")
        if a.policy:
            print(f"  refused by consentgate: {refused['consentgate']:.4f} of the submits "
                  f"(the data refuses {expect_refused:.4f}); regime {a.regime}, "
                  f"destinations {dest_range}")
        ratio_cmpp = None
        if "relay-cmpp" in med and med["relay-cmpp"]:
            ratio_cmpp = med["consentgate-cmpp"] / med["relay-cmpp"]
            print(f"  ratio consentgate-cmpp/relay-cmpp (CMPP 3.0): {ratio_cmpp:.3f}  "
                  f"(SMPP in the same run: {ratio:.3f})")
            if a.policy:
                print(f"  refused by consentgate-cmpp: {refused['consentgate-cmpp']:.4f} of the submits")
        if "consentgate-tls" in med and med["consentgate"]:
            print(f"  ratio consentgate-tls/consentgate (the same process through TLS): "
                  f"{med['consentgate-tls'] / med['consentgate']:.3f}")
        if "cg-smsc-tls" in med and med["cg-smsc-plain"]:
            print(f"  ratio cg-smsc-tls/cg-smsc-plain (TLS on the SMSC leg, the same chain): "
                  f"{med['cg-smsc-tls'] / med['cg-smsc-plain']:.3f}")
        if "baseline" in med and med["baseline"]:
            print(f"  ratio consentgate/baseline ({a.baseline_bin}): {med['consentgate'] / med['baseline']:.3f}"
                  f"  (baseline/relay {med['baseline'] / med['relay']:.3f})")
        cpu = {k: statistics.median(x["cpu_us_per_msg"] for x in v) for k, v in results.items()}
        print("  forwarder CPU per message at max load (median): "
              + ", ".join(f"{k} {v:.3f} us" for k, v in cpu.items()))
        if half:
            print(f"  forwarder CPU per message at {half['rate']:,.0f} msg/s (median): "
                  + ", ".join(f"{k} {v:.3f} us" for k, v in half["median_cpu_us_per_msg"].items()))
        if half:
            print(f"  at {half['rate']:,.0f} msg/s: p99 "
                  + ", ".join(f"{k} {v:.0f} us" for k, v in half["median_p99_us"].items())
                  + f"; added by consentgate {half['added_p99_us']:.0f} us (target <= 50 us)")
        out = os.path.join(ROOT, "target", "bench")
        os.makedirs(out, exist_ok=True)
        base = a.out or ("e2e_relay_policy" if a.policy else "e2e_relay")
        report = {"config": vars(a), "runs": results, "median_msg_per_s": med,
                  "refused_share": refused if a.policy else None,
                  "destinations": dest_range,
                  "median_p50_us": p50, "median_p99_us": p99, "ratio": ratio, "ratio_cmpp": ratio_cmpp,
                  "half_load": half,
                  "median_cpu_us_per_msg": cpu,
                  "replay": {"pcap": a.pcap, "runs": replays} if replays else None}
        with open(os.path.join(out, base + ".json"), "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(out, base + ".svg"), "w") as f:
            f.write(svg(report))
        with open(os.path.join(out, base + ".md"), "w") as f:
            f.write(markdown(report))
        print(f"  wrote target/bench/{base}.json, .svg, .md")
        return 0 if ratio > 0 else 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def make_certs(tmp):
    """A throw-away CA and a gateway certificate for 127.0.0.1 (EC P-256), made by openssl."""
    def ossl(*args):
        subprocess.run(["openssl", *args], cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    ossl("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench-ca")
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "gw.key")
    ossl("req", "-new", "-key", "gw.key", "-out", "gw.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(tmp, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "gw.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "gw.pem", "-days", "2", "-extfile", "ext.cnf")
    return tuple(os.path.join(tmp, n) for n in ("ca.pem", "gw.pem", "gw.key"))


# --all-steps: every step of the pipeline but the content rules (content_rules.toml adds them).
ALL_STEPS_TOML = """
[policy.commercial]
require_signature = true
opt_out_hints = ["回T退订", "拒收请回复R", "reply STOP"]
[policy.frequency]
per_entity_per_day = 10
per_subscriber_per_day = 20
same_text_window = "60s"
# Sized for the bench: ~20 M distinct numbers over all runs, ~1 M msg/s.
subscribers = 50_000_000
peak_rate = 1_500_000
[policy.quiet_hours]
start = "03:00"
end = "03:01"
timezone = "Asia/Shanghai"
[policy.timezones]
"86" = "Asia/Shanghai"
"1" = "America/New_York"
"91" = "Asia/Kolkata"
"""


COLORS = {"consentgate": "#1f77b4", "relay": "#7f7f7f", "baseline": "#ff7f0e", "consentgate-tls": "#9467bd",
          "cg-smsc-plain": "#8c564b", "cg-smsc-tls": "#e377c2", "consentgate-cmpp": "#17becf",
          "relay-cmpp": "#bcbd22"}


def svg(rep):
    """Two panels, no plotting dependency: throughput of every run (bars, grouped by run) and
    the latency percentiles (median over runs) of each forwarder on a log axis."""
    runs = rep["runs"]
    names = list(runs)
    n = max(len(v) for v in runs.values())
    W, H, pad = 900, 380, 50
    pw = (W - 3 * pad) / 2
    ph = H - 2 * pad - 20
    top = max(x["msg_per_s"] for v in runs.values() for x in v) or 1
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{pad}" y="18" font-size="13">throughput per run (submit_sm/s, max load); '
         f'ratio consentgate/relay {rep["ratio"]:.3f}</text>']
    x0, y0 = pad, pad
    o.append(f'<line x1="{x0}" y1="{y0 + ph}" x2="{x0 + pw}" y2="{y0 + ph}" stroke="black"/>')
    gw = pw / n
    bw = gw * 0.8 / len(names)
    for i in range(n):
        for j, name in enumerate(names):
            if i >= len(runs[name]):
                continue
            v = runs[name][i]["msg_per_s"]
            h = ph * v / top
            x = x0 + i * gw + gw * 0.1 + j * bw
            o.append(f'<rect x="{x:.1f}" y="{y0 + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                     f'fill="{COLORS.get(name, "#2ca02c")}"><title>{name} run {i + 1}: {v:,.0f}/s</title></rect>')
        o.append(f'<text x="{x0 + i * gw + gw / 2:.1f}" y="{y0 + ph + 14}" text-anchor="middle">{i + 1}</text>')
    for t in range(0, 5):
        v = top * t / 4
        y = y0 + ph - ph * t / 4
        o.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{v / 1e6:.2f}M</text>')
    # Latency panel.
    import math
    x1 = 2 * pad + pw
    pcts = ["p50_us", "p90_us", "p99_us", "p999_us"]
    o.append(f'<text x="{x1}" y="{y0 - 8}" font-size="13">latency percentiles, median over runs (us, log)</text>')
    vals = {k: [statistics.median(x.get(p, 0) for x in v) for p in pcts] for k, v in runs.items()}
    hi = max(max(v) for v in vals.values()) or 1
    lo = max(min(min(v) for v in vals.values()), 1)
    span = math.log10(hi * 1.2) - math.log10(lo / 1.2) or 1
    ypos = lambda v: y0 + ph - ph * (math.log10(max(v, lo / 1.2)) - math.log10(lo / 1.2)) / span
    o.append(f'<line x1="{x1}" y1="{y0 + ph}" x2="{x1 + pw}" y2="{y0 + ph}" stroke="black"/>')
    for i, p in enumerate(pcts):
        o.append(f'<text x="{x1 + (i + 0.5) * pw / len(pcts):.1f}" y="{y0 + ph + 14}" text-anchor="middle">{p[:-3]}</text>')
    for name, v in vals.items():
        pts = " ".join(f"{x1 + (i + 0.5) * pw / len(pcts):.1f},{ypos(y):.1f}" for i, y in enumerate(v))
        o.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS.get(name, "#2ca02c")}" stroke-width="2"/>')
        for i, y in enumerate(v):
            o.append(f'<circle cx="{x1 + (i + 0.5) * pw / len(pcts):.1f}" cy="{ypos(y):.1f}" r="3" '
                     f'fill="{COLORS.get(name, "#2ca02c")}"><title>{name} {pcts[i][:-3]} {y:.0f} us</title></circle>')
    for t in range(int(math.floor(math.log10(lo / 1.2))), int(math.ceil(math.log10(hi * 1.2))) + 1):
        if lo / 1.2 <= 10 ** t <= hi * 1.2:
            o.append(f'<text x="{x1 - 4}" y="{ypos(10 ** t) + 4:.1f}" text-anchor="end">{10 ** t:g}</text>')
    for j, name in enumerate(names):
        o.append(f'<rect x="{pad + j * 130}" y="{H - 22}" width="12" height="12" fill="{COLORS.get(name, "#2ca02c")}"/>'
                 f'<text x="{pad + j * 130 + 16}" y="{H - 12}">{name}</text>')
    o.append("</svg>\n")
    return "\n".join(o)


def markdown(rep):
    c = rep["config"]
    med, p99 = rep["median_msg_per_s"], rep["median_p99_us"]
    lines = [f"# consentgate end-to-end benchmark", "",
             f"policy {'on (' + (('snapshot ' + c['snapshot']) if c.get('snapshot') else str(c['records']) + ' records') + ')' if c['policy'] else 'off'}, "
             f"gateway and relay on core(s) {c.get('gw_cores', '1')}, "
             f"{c['sessions']} sessions x window {c['window']}, receipts {'off' if c['no_receipts'] else 'on'}, "
             f"{c['runs']} alternating runs of {c['seconds']:g} s per forwarder.", "",
             "| forwarder | median submit_sm/s | median p50 us | median p99 us |", "|---|---:|---:|---:|"]
    for k in med:
        lines.append(f"| {k} | {med[k]:,.0f} | {rep['median_p50_us'][k]:.0f} | {p99[k]:.0f} |")
    lines += ["", f"- throughput ratio consentgate / relay: **{rep['ratio']:.3f}**"]
    if rep.get("refused_share"):
        lines.append(f"- regime {c.get('regime', 'opt-in')}, destinations {rep.get('destinations')} "
                     f"(one random number per message); refused by consentgate: "
                     f"{rep['refused_share']['consentgate']:.2%} of the submits")
    if rep.get("ratio_cmpp") is not None:
        lines.append(f"- CMPP 3.0, throughput ratio consentgate-cmpp / relay-cmpp: **{rep['ratio_cmpp']:.3f}** "
                     f"(the same load as SMPP, the ISMG simulator behind both)")
    if "consentgate-tls" in med and med["consentgate"]:
        lines.append(f"- consentgate through TLS / the same process on plain TCP: "
                     f"**{med['consentgate-tls'] / med['consentgate']:.3f}**")
    if "cg-smsc-tls" in med and med["cg-smsc-plain"]:
        lines.append(f"- TLS on the SMSC leg, through the terminating gateway / the same chain on plain TCP: "
                     f"**{med['cg-smsc-tls'] / med['cg-smsc-plain']:.3f}**")
    if "baseline" in med and med["baseline"]:
        lines.append(f"- consentgate / baseline build: **{med['consentgate'] / med['baseline']:.3f}**")
    cpu = rep.get("median_cpu_us_per_msg") or {}
    if cpu:
        lines.append("- forwarder CPU per message (median, max load): "
                     + ", ".join(f"{k} {v:.3f} us" for k, v in cpu.items()))
    lines.append(f"- consentgate end to end: **{med['consentgate']:,.0f}** submit_sm/s (target >= 1 M/s with receipts)")
    h = rep.get("half_load")
    if h and h.get("median_cpu_us_per_msg"):
        lines.append(f"- forwarder CPU per message (median, at {h['rate']:,.0f}/s): "
                     + ", ".join(f"{k} {v:.3f} us" for k, v in h["median_cpu_us_per_msg"].items()))
    if h:
        lines.append(f"- at {h['rate']:,.0f}/s (half the relay's maximum unless --half-rate): p99 consentgate {h['median_p99_us']['consentgate']:.0f} us vs "
                     f"relay {h['median_p99_us']['relay']:.0f} us, added **{h['added_p99_us']:.0f} us** (target <= 50 us)")
    rp = rep.get("replay")
    if rp:
        lines += ["", f"Replay of `{rp['pcap']}` at `--speed max` ({c['runs']} runs per forwarder):", "",
                  "| forwarder | PDUs | median /s | unanswered | statuses differing from the recording |",
                  "|---|---:|---:|---:|---:|"]
        for k, v in rp["runs"].items():
            lines.append(f"| {k} | {v[0]['sent']} | {statistics.median(x['msg_per_s'] for x in v):,.0f} | "
                         f"{max(x['unanswered'] for x in v)} | {v[0]['differ']}/{v[0]['compared']} |")
    lines += ["", "Every run is in the JSON next to this file; the SVG plots throughput per run and latency "
              "percentiles. Compare medians of one run of the script, not numbers across runs: the VM is shared."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
