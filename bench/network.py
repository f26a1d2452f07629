#!/usr/bin/env python3
"""Network figures for BENCHMARKS.md: the demo on 1, 2 and 3 providers; the
per-task overhead of the network path (a 2,000-task noop job, and the
submit-to-result latency of a single task); blob transfer on loopback.

    cargo build --release && python3 bench/network.py

Starts its own nodes (target/release/plexus) on loopback with fresh data
dirs and stops them at the end. Only the standard library is needed.
"""
import json, os, re, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLEXUS = os.path.join(ROOT, "target", "release", "plexus")
TMP = tempfile.mkdtemp(prefix="plexus-bench-")
procs = []


def node(name, *args):
    d = os.path.join(TMP, name)
    os.makedirs(d, exist_ok=True)
    log = open(os.path.join(d, "stdout.log"), "w")
    p = subprocess.Popen([PLEXUS, "--data-dir", d, "node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0",
                          "--api", "127.0.0.1:0", *args], stdout=log, stderr=subprocess.DEVNULL)
    procs.append(p)
    for _ in range(600):
        text = open(os.path.join(d, "stdout.log")).read()
        fields = dict(re.findall(r"^(peer id|listening|api)\s+(\S+)", text, re.M))
        if len(fields) == 3:
            return fields
        time.sleep(0.05)
    sys.exit(f"node {name} did not start")


def api(base, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def write_job(name, text):
    path = os.path.join(TMP, name)
    open(path, "w").write(text)
    return path


def run_job(base, path, poll=0.002):
    """Submit and poll; returns (wall seconds from submit to completed, status)."""
    body = {"job_file": path, "job_toml": open(path).read(), "base_dir": os.path.dirname(path)}
    t0 = time.perf_counter()
    job = api(base, "/api/jobs", body)["id"]
    while True:
        s = api(base, f"/api/jobs/{job}")
        if s["state"] in ("completed", "failed"):
            if s["state"] != "completed":
                sys.exit(f"job failed: {s}")
            return time.perf_counter() - t0, s
        time.sleep(poll)


try:
    rows = []
    # 1. The demo on 1, 2 and 3 providers (one slot each).
    for n in (1, 2, 3):
        out = subprocess.run([PLEXUS, "demo", "--providers", str(n), "--out", os.path.join(TMP, f"demo{n}")],
                             capture_output=True, text=True, check=True).stdout
        secs = float(re.search(r"in ([0-9.]+) s\)", out).group(1))
        rows.append((f"demo render, {n} provider(s), 1 slot each", f"{secs:.1f} s"))

    # 2. Per-task overhead: one requester, one provider with 2 slots.
    req = node("requester")
    prov = node("provider", "--provide", "--slots", "2", "--bootstrap", req["listening"])
    base = req["api"]
    while not any(p["offer"] for p in api(base, "/api/peers")):
        time.sleep(0.05)
    # Dispatch alone: verification off (DESIGN.md), as for one's own machines.
    unverified = '[verification]\nmode = "none"\n'
    noop = write_job("noop.toml", 'name = "noop"\nmodule = "builtin:noop"\n[tasks]\ni = { start = 0, end = 2000 }\n' + unverified)
    wall, s = run_job(base, noop, poll=0.01)
    rows.append(("2,000 noop tasks, 1 provider × 2 slots", f"{2000 / wall:.0f} tasks/s ({wall:.2f} s)"))
    one = write_job("one.toml", 'name = "one"\nmodule = "builtin:noop"\n' + unverified)
    lat = [run_job(base, one)[0] * 1000 for _ in range(30)]
    rows.append(("one noop task, submit to result (30 runs)", f"median {statistics.median(lat):.1f} ms, max {max(lat):.1f} ms"))

    # 3. A 256 MiB input blob fetched by the provider.
    blob = os.path.join(TMP, "blob.bin")
    with open(blob, "wb") as f:
        f.write(os.urandom(256 << 20))
    big = write_job("big.toml", 'name = "big"\nmodule = "builtin:noop"\n' + unverified + '[inputs]\n"blob.bin" = "blob.bin"\n')
    wall, _ = run_job(base, big, poll=0.005)
    transfer = wall - statistics.median(lat) / 1000
    rows.append(("256 MiB input blob, requester to provider (TCP)", f"{256 * 8 / 1024 / transfer:.2f} Gbit/s ({transfer:.2f} s)"))

    print("| figure | value |")
    print("| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")
finally:
    for p in procs:
        p.kill()
        p.wait()
    subprocess.run(["rm", "-rf", TMP])
