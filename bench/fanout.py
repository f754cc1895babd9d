#!/usr/bin/env python3
"""Fan-out benchmark driver (run it through bench/fanout.sh).

N Cairn nodes request the same blob (and then the same 50-blob manifest) at
the same moment, from an origin that waits ~20 ms before the first byte and
paces its bytes to a fixed bandwidth. Measured, for each N:

  cairn        every node GETs /v1/fetch/{digest} (cluster-wide single fetch)
  cairn-kill   the same, and the digest's owner is SIGKILLed halfway
  plain        the original's design, emulated by a client script on each
               node: try each peer's /v1/blobs in turn, then the origin, then
               PUT the bytes into the node
  independent  N plain downloads from the origin straight to /dev/null

Each run reports origin bytes / content size and the time until every
(surviving) node holds a verified copy; afterwards every copy is re-hashed
from the data dirs ("nothing corrupt").

With root, everything runs in network namespaces on a private bridge
(10.231.0.0/24, no address in the root namespace, mDNS off); without root
it runs on 127.0.0.1.

Subcommands: `run` (the benchmark) and `table` (its results as markdown).
"""

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

SUBNET = "10.231.0"
PORT = 7420
ORIGIN_PORT = 8080


# ------------------------------------------------------------------- the lab


def sh(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


class Lab:
    """Namespaces on a bridge (root), or plain loopback ports (not root)."""

    def __init__(self, n, netns, uplink_mbit=None, mtu=None):
        self.n = n
        self.netns = netns
        self.tag = f"cairn-fo{os.getpid()}"
        self.made = []
        if netns:
            self._ns("sw")
            sh("ip", "-n", self.name("sw"), "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.name("sw"), "link", "set", "br0", "up")
            for i, host in [(i, i + 2) for i in range(n)] + [("origin", 254), ("client", 253)]:
                self._ns(i)
                ns = self.name(i)
                sh("ip", "-n", self.name("sw"), "link", "add", f"p{host}", "type", "veth", "peer", "name", "eth0", "netns", ns)
                sh("ip", "-n", self.name("sw"), "link", "set", f"p{host}", "master", "br0", "up")
                sh("ip", "-n", ns, "addr", "add", f"{SUBNET}.{host}/24", "dev", "eth0")
                if mtu:
                    sh("ip", "-n", self.name("sw"), "link", "set", f"p{host}", "mtu", str(mtu))
                    sh("ip", "-n", ns, "link", "set", "eth0", "mtu", str(mtu))
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                if uplink_mbit:
                    # Every host's uplink (its egress), the origin's too; the kernel has no netem.
                    sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
                       "rate", f"{uplink_mbit}mbit", "burst", "16kb", "latency", "400ms")

    def _ns(self, i):
        sh("ip", "netns", "add", self.name(i))
        self.made.append(self.name(i))

    def name(self, i):
        return f"{self.tag}-{i}"

    def addr(self, i):
        if self.netns:
            return f"{SUBNET}.{i + 2}:{PORT}"
        return f"127.0.0.1:{PORT + 100 + i}"

    def origin_addr(self):
        return f"{SUBNET}.254:{ORIGIN_PORT}" if self.netns else f"127.0.0.1:{ORIGIN_PORT + 100}"

    def prefix(self, i):
        return ["ip", "netns", "exec", self.name(i)] if self.netns else []

    def close(self):
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns, check=False)


def get_json(lab, where, url):
    r = subprocess.run(lab.prefix(where) + ["curl", "-sf", "--max-time", "5", url], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def wait_for(what, cond, limit=30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


# ------------------------------------------------------------------ rendezvous


def hrw_score(digest_hex, node_id):
    """Cairn's rendezvous score (cairn-cluster/src/rendezvous.rs), to find the owner to kill."""
    h = 0xCBF29CE484222325
    for b in bytes.fromhex(digest_hex) + node_id.encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    z = h
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def owner(digest_hex, ids):
    return max(ids, key=lambda i: (hrw_score(digest_hex, i), [-ord(c) for c in i]))


# -------------------------------------------------------------------- the run


class Cluster:
    def __init__(self, lab, cairn, work, origin_tmpl, swarm=False, liar=None, digest=None):
        self.lab = lab
        self.procs = {}
        self.dirs = {0: os.path.join(work, "n0")}
        for i in range(lab.n):
            d = os.path.join(work, f"n{i}")
            os.makedirs(d, exist_ok=True)
            self.dirs[i] = d
            if i == liar:
                # A member that claims every piece and serves wrong ones (see `liar`).
                log = open(os.path.join(d, "log"), "w")
                peers = [lab.addr(j) for j in range(lab.n) if j != i]
                listen = f"0.0.0.0:{PORT}" if lab.netns else lab.addr(i)
                self.procs[i] = subprocess.Popen(
                    lab.prefix(i) + [sys.executable, os.path.abspath(__file__), "liar", "--listen", listen,
                                     "--node-id", f"n{i}", "--digest", digest, "--go", self.go_file(),
                                     "--peers", *peers],
                    stdout=log, stderr=log)
                continue
            peers = [lab.addr(j) for j in range(lab.n) if j != i]
            listen = f":{PORT}" if lab.netns else lab.addr(i)
            cfg = {
                "node_id": f"n{i}",
                "listen_addr": listen,
                "advertise_addr": lab.addr(i),
                "peers": peers,
                "data_dir": os.path.join(d, "data"),
                "origins": [{"url": origin_tmpl}],
                "health_interval": "1s",
                "peer_timeout": "5s",
            }
            if swarm:
                cfg["swarm"] = True
            path = os.path.join(d, "config.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            log = open(os.path.join(d, "log"), "w")
            env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
            self.procs[i] = subprocess.Popen(
                lab.prefix(i) + [cairn, "serve", "--config", path], stdout=log, stderr=log, env=env
            )
        for i in range(lab.n):
            if i == liar:
                continue
            url = f"http://{lab.addr(i)}/v1/peers"

            def ready(i=i, url=url):
                p = get_json(lab, i, url)
                return p is not None and len(p) == lab.n - 1 and all(x["healthy"] and x["node_id"] for x in p)

            wait_for(f"node n{i} to see all its peers healthy", ready)

    def go_file(self):
        return os.path.join(os.path.dirname(self.dirs[0]), "go")

    def metric(self, i, name):
        r = subprocess.run(self.lab.prefix(i) + ["curl", "-sf", "--max-time", "5", f"http://{self.lab.addr(i)}/metrics"],
                           capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
        return 0.0

    def kill(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def verify(self, digests, alive):
        """Re-hash every copy on every surviving node. Returns the number of bad or missing copies."""
        # A fetched blob is linked into objects/ just after its response ends.
        paths = [os.path.join(self.dirs[i], "data", "objects", d) for i in alive for d in digests]
        deadline = time.monotonic() + 60
        while not all(os.path.exists(p) for p in paths) and time.monotonic() < deadline:
            time.sleep(0.05)
        bad = 0
        for i in alive:
            for d in digests:
                p = os.path.join(self.dirs[i], "data", "objects", d)
                try:
                    with open(p, "rb") as f:
                        h = hashlib.file_digest(f, "sha256").hexdigest()
                except OSError:
                    h = None
                bad += h != d
        return bad


def origin_stats(lab):
    return get_json(lab, "origin", f"http://{lab.origin_addr()}/stats")


def origin_reset(lab):
    subprocess.run(lab.prefix("origin") + ["curl", "-sf", "-X", "POST", f"http://{lab.origin_addr()}/stats/reset"], check=True)


def fetch_cmd(lab, i, digest):
    # A consumer that retries once more if its transfer is cut (cairn-kill).
    url = f"http://{lab.addr(i)}/v1/fetch/{digest}"
    loop = f"for t in 1 2 3 4 5; do curl -sf -o /dev/null {url} && exit 0; sleep 0.2; done; exit 1"
    return lab.prefix(i) + ["bash", "-c", loop]


def manifest_cmd(lab, i, rf, path):
    # A push: the node takes it only from loopback without an auth section,
    # so inside a namespace it goes to 127.0.0.1 (the node listens on all addresses).
    addr = f"127.0.0.1:{PORT}" if lab.netns else lab.addr(i)
    url = f"http://{addr}/v1/manifests/{rf}"
    return lab.prefix(i) + ["curl", "-sf", "-o", "/dev/null", "-X", "PUT", "--data-binary", f"@{path}", url]


# The plain design for one blob, in shell: each peer's /v1/blobs in turn,
# then the origin; the first that answers 200 is streamed into the node's
# PUT /v1/blobs (which verifies the digest). curl -f turns a 404 into an
# empty body, which the PUT rejects, so the loop moves on.
PLAIN_ONE = r"""
d=$1
for src in $PEERS_URLS; do
    curl -sf "$src/v1/blobs/$d" | curl -sf -o /dev/null -H "Expect:" -T - "http://$ME/v1/blobs/$d" && exit 0
done
o=${ORIGIN//\{digest\}/$d}
curl -sf "$o" | curl -sf -o /dev/null -H "Expect:" -T - "http://$ME/v1/blobs/$d"
"""


def plain_cmd(lab, i, digests, origin_tmpl, manifest=None):
    peers = " ".join(f"http://{lab.addr(j)}" for j in range(lab.n) if j != i)
    script = f"set -o pipefail; printf '%s\\n' {' '.join(digests)} | xargs -P 16 -n 1 bash -c {shlex.quote('set -o pipefail;' + PLAIN_ONE)} _"
    if manifest:
        rf, path = manifest.split("=", 1)
        script += f" && curl -sf -o /dev/null -X PUT --data-binary @{path} http://{lab.addr(i)}/v1/manifests/{rf}"
    env = ["env", f"ME={lab.addr(i)}", f"PEERS_URLS={peers}", f"ORIGIN={origin_tmpl}"]
    return lab.prefix(i) + env + ["bash", "-c", script]


def machine_busy():
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = v[3] + v[4]
    return (sum(v) - idle) / hz, sum(v) / hz


def procs_cpu(pids):
    """CPU seconds (user + system) the processes used so far."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / hz
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_all(cmds, kill_at=None, on_kill=None):
    """Starts every command at once; returns (seconds until each ended, failures)."""
    t0 = time.monotonic()
    ps = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in cmds]
    ends = [None] * len(ps)
    killed = False
    while any(e is None for e in ends):
        if kill_at is not None and not killed and time.monotonic() - t0 >= kill_at:
            on_kill()
            killed = True
        for k, p in enumerate(ps):
            if ends[k] is None and p.poll() is not None:
                ends[k] = time.monotonic() - t0
        time.sleep(0.002)
    return ends, sum(p.returncode != 0 for p in ps)


def make_blob(path, size, seed):
    key = hashlib.sha256(f"cairn-fanout-{seed}".encode()).hexdigest()[:32]
    with open(path, "wb") as out:
        p = subprocess.Popen(["openssl", "enc", "-aes-128-ctr", "-nosalt", "-K", key, "-iv", "0"],
                             stdin=subprocess.PIPE, stdout=out, stderr=subprocess.DEVNULL)
        p.communicate(b"\0" * size)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    d = h.hexdigest()
    os.rename(path, os.path.join(os.path.dirname(path), d))
    return d


def cmd_run(a):
    netns = os.geteuid() == 0 and not a.loopback
    work = a.work
    blobs = os.path.join(work, "origin")
    os.makedirs(blobs, exist_ok=True)
    print(f"# generating inputs in {blobs}", file=sys.stderr)
    big = make_blob(os.path.join(blobs, "big.tmp"), a.big_mib << 20, 1)
    small = [make_blob(os.path.join(blobs, f"s{k}.tmp"), a.small_mib << 20, 100 + k) for k in range(a.manifest_blobs)]
    manifest = {"name": "fanout", "created_at": "2026-01-01T00:00:00Z",
                "objects": {f"layer/{k:02d}": d for k, d in enumerate(small)}}
    mbytes = json.dumps(manifest, indent=2).encode()
    rf = f"fanout-{hashlib.sha256(mbytes).hexdigest()[:12]}.json"
    mpath = os.path.join(work, rf)
    with open(mpath, "wb") as f:
        f.write(mbytes)

    rows = []
    for n in a.nodes:
        lab = Lab(n, netns, a.uplink_mbit, a.mtu)
        origin = None
        try:
            origin = subprocess.Popen(
                lab.prefix("origin") + [a.origin_bin, blobs, lab.origin_addr(), str(a.first_byte_ms), str(a.rate)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for("the origin", lambda: origin_stats(lab) is not None)
            tmpl = f"http://{lab.origin_addr()}/blobs/{{digest}}"
            ids = [f"n{i}" for i in range(n)]
            for mode in a.modes:
                for what, digests, size in [("256MiB blob" if a.big_mib == 256 else f"{a.big_mib}MiB blob", [big], a.big_mib << 20),
                                            (f"{a.manifest_blobs}-blob manifest", small, (a.small_mib << 20) * len(small))]:
                    is_manifest = digests is small
                    if mode in ("cairn-kill", "cairn-liar", "alone", "independent") and is_manifest:
                        continue
                    shutil.rmtree(os.path.join(work, "nodes"), ignore_errors=True)
                    origin_reset(lab)
                    alive = list(range(n))
                    cpu = {}
                    if mode == "independent":
                        url = tmpl.replace("{digest}", big)
                        cmds = [lab.prefix("client") + ["curl", "-sf", "-o", "/dev/null", url] for _ in range(n)]
                        ends, failed = run_all(cmds)
                        bad = 0
                    else:
                        liar = None
                        if mode == "cairn-liar":
                            # The lowest-ranked node lies: a peer, never the owner.
                            liar = int(min(ids, key=lambda i: (hrw_score(big, i), [-ord(c) for c in i]))[1:])
                            alive.remove(liar)
                        cl = Cluster(lab, a.cairn, os.path.join(work, "nodes"), tmpl, a.swarm, liar, big)
                        try:
                            kill_at, on_kill = None, None
                            if mode == "plain":
                                cmds = [plain_cmd(lab, i, digests, tmpl, f"{rf}={mpath}" if is_manifest else None)
                                        for i in range(n)]
                            elif is_manifest:
                                cmds = [manifest_cmd(lab, i, rf, mpath) for i in range(n)]
                            else:
                                cmds = [fetch_cmd(lab, i, big) for i in range(n)]
                            if mode == "alone":
                                # T1: one node fetching alone, the others idle.
                                alive = [0]
                                cmds = [cmds[0]] + [["true"]] * (n - 1)
                            if liar is not None:
                                cmds[liar] = ["true"]
                            if mode == "cairn-kill":
                                victim = int(owner(big, ids)[1:])
                                alive.remove(victim)
                                cmds[victim] = ["true"]
                                # Halfway: half of T1 when this run measured it (the
                                # uplinks, not the origin's pace, set the time then).
                                t1 = next((r["secs"] for r in rows if r["n"] == n and r["mode"] == "alone"
                                           and r["what"] == what), None)
                                kill_at = t1 / 2 if t1 else size / a.rate / 2
                                on_kill = lambda v=victim: cl.kill(v)
                            pids = [p.pid for p in cl.procs.values()]
                            open(cl.go_file(), "w").close()
                            m0, c0 = machine_busy(), procs_cpu(pids)
                            each0 = [procs_cpu([p]) for p in pids]
                            ends, failed = run_all(cmds, kill_at, on_kill)
                            m1, c1 = machine_busy(), procs_cpu(pids)
                            each = [round(procs_cpu([p]) - e, 2) for p, e in zip(pids, each0)]
                            wall = max(e for e in ends if e is not None)
                            # Cores in use over the run: the nodes', and the whole machine's.
                            cpu = {"node_cpu_s": round(c1 - c0, 2), "node_cores": round((c1 - c0) / wall, 2),
                                   "machine_cores": round((m1[0] - m0[0]) / wall, 2),
                                   "machine_cpus": os.cpu_count(), "node_cpu_each": each}
                            bad = cl.verify(digests, alive)
                            cpu["excluded"] = sum(cl.metric(i, "cairn_swarm_excluded_peers_total") for i in alive)
                        finally:
                            cl.close()
                            if a.keep_logs:
                                keep = os.path.join(a.keep_logs, f"n{n}-{mode}-{'manifest' if is_manifest else 'blob'}")
                                os.makedirs(keep, exist_ok=True)
                                for i, d in cl.dirs.items():
                                    shutil.copy(os.path.join(d, "log"), os.path.join(keep, f"n{i}.log"))
                    st = origin_stats(lab) or {"bytes": -1, "requests": -1}
                    live = [e for k, e in enumerate(ends) if mode not in ("cairn-kill", "cairn-liar", "alone") or k in alive]
                    row = {"n": n, "mode": mode, "what": what, "secs": round(max(live), 2), "first": round(min(live), 2),
                           "origin_ratio": round(st["bytes"] / size, 3), "origin_requests": st["requests"],
                           "failed_clients": failed, "bad_copies": bad,
                           "ends": [None if e is None else round(e, 2) for e in ends], **cpu}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            if origin:
                origin.terminate()
                origin.wait()
            lab.close()
    with open(a.out, "w") as f:
        json.dump({"netns": netns, "rate": a.rate, "first_byte_ms": a.first_byte_ms, "big_mib": a.big_mib,
                   "uplink_mbit": a.uplink_mbit, "swarm": a.swarm, "mtu": a.mtu,
                   "small_mib": a.small_mib, "manifest_blobs": a.manifest_blobs, "rows": rows}, f, indent=1)


def cmd_liar(a):
    """A lying swarm member: healthy, it announces every piece to whichever
    node is the digest's owner, and serves every piece wrong (right length,
    wrong bytes) with a bitfield saying it holds them all."""
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    served = {"pieces": 0}

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, code, body=b"", headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):
            self.reply(404)

        def do_POST(self):
            n = int(self.headers.get("content-length", "0"))
            self.rfile.read(n)
            self.reply(409, b"not the owner")

        def do_GET(self):
            u = urlparse(self.path)
            parts = u.path.strip("/").split("/")
            if u.path == "/v1/health":
                body = json.dumps({"status": "ok", "node_id": a.node_id, "time": "2026-01-01T00:00:00Z"}).encode()
                return self.reply(200, body, [("content-type", "application/json")])
            if len(parts) == 5 and parts[:2] == ["v1", "swarm"] and parts[3] == "piece":
                q = parse_qs(u.query)
                blob, piece, i = int(q["blob_size"][0]), int(q["piece_size"][0]), int(parts[4])
                count = -(-blob // piece)
                length = min(piece, blob - i * piece)
                served["pieces"] += 1
                return self.reply(200, b"\x5a" * length, [("x-cairn-swarm-have", full_hex(count))])
            self.reply(404)

    def full_hex(count):
        bits = bytearray((count + 7) // 8)
        for i in range(count):
            bits[i // 8] |= 0x80 >> (i % 8)
        return bits.hex()

    def post(addr, body):
        req = urllib.request.Request(f"http://{addr}/v1/swarm/{a.digest}/announce?node={a.node_id}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=2) as r:
            return json.loads(r.read())

    def announce():
        # From the moment the run starts (a member announces when it wants
        # the blob), to every node: whichever owns the digest takes it.
        while not os.path.exists(a.go):
            time.sleep(0.01)
        geo = None
        while True:
            for addr in a.peers:
                try:
                    if geo is None:
                        ans = post(addr, {"blob_size": 0, "piece_size": 0, "have": ""})
                        geo = (ans["hashes"]["blob_size"], ans["hashes"]["piece_size"])
                    count = -(-geo[0] // geo[1])
                    post(addr, {"blob_size": geo[0], "piece_size": geo[1], "have": full_hex(count)})
                except Exception:
                    pass
            time.sleep(0.05)

    threading.Thread(target=announce, daemon=True).start()
    host, port = a.listen.rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), H).serve_forever()


def cmd_table(a):
    with open(a.results) as f:
        res = json.load(f)
    rows = res["rows"]
    where = "network namespaces on one bridge" if res["netns"] else "loopback (not root)"
    print(f"Setup: {where}; origin +{res['first_byte_ms']} ms before the first byte, paced to "
          f"{res['rate'] / (1 << 20):.0f} MiB/s; blob {res['big_mib']} MiB; manifest {res['manifest_blobs']} x "
          f"{res['small_mib']} MiB.\n")
    if res.get("uplink_mbit"):
        print(f"Every host's uplink capped at {res['uplink_mbit']} Mbit/s (tc tbf); swarm: {res.get('swarm', False)}.\n")
    print("| N | content | design | all verified (s) | first (s) | independent / this | plain / this "
          "| this / T1 | origin bytes / size | origin requests | failed consumers | bad copies |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        def base(mode):
            return next((x["secs"] for x in rows if x["n"] == r["n"] and x["what"] == r["what"] and x["mode"] == mode), None)
        ind, plain, t1 = base("independent"), base("plain"), base("alone")
        vs_ind = f"{ind / r['secs']:.2f}" if ind and r["mode"] != "independent" else ""
        vs_plain = f"{plain / r['secs']:.2f}" if plain and r["mode"] not in ("plain", "independent") else ""
        vs_t1 = f"{r['secs'] / t1:.2f}" if t1 and r["mode"] != "alone" else ""
        print(f"| {r['n']} | {r['what']} | {r['mode']} | {r['secs']:.2f} | {r.get('first', r['secs']):.2f} | {vs_ind} "
              f"| {vs_plain} | {vs_t1} | {r['origin_ratio']:.3f} | {r['origin_requests']} | {r['failed_clients']} "
              f"| {r['bad_copies']} |")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--cairn", required=True)
    r.add_argument("--origin-bin", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--nodes", type=int, nargs="+", default=[2, 4, 8])
    r.add_argument("--modes", nargs="+", default=["independent", "cairn", "cairn-kill", "plain"],
                   help="also: alone (T1, one node fetching while the others idle)")
    r.add_argument("--big-mib", type=int, default=256)
    r.add_argument("--small-mib", type=int, default=2)
    r.add_argument("--manifest-blobs", type=int, default=50)
    r.add_argument("--rate", type=int, default=100 << 20, help="origin bandwidth, bytes/s")
    r.add_argument("--first-byte-ms", type=int, default=20)
    r.add_argument("--loopback", action="store_true", help="no namespaces even as root")
    r.add_argument("--uplink-mbit", type=int, default=None, help="cap every host's uplink with tc tbf (netns only)")
    r.add_argument("--swarm", action="store_true", help="nodes run with swarm: true (issue 15)")
    r.add_argument("--mtu", type=int, default=None, help="MTU of every veth (default 1500); fewer packets cost the 2 cores less")
    r.add_argument("--keep-logs", default=None, help="copy every node's log here after each row (set RUST_LOG to choose what they hold)")
    lr = sub.add_parser("liar", help="a lying swarm member (started by the cairn-liar mode)")
    lr.add_argument("--listen", required=True)
    lr.add_argument("--node-id", required=True)
    lr.add_argument("--digest", required=True)
    lr.add_argument("--peers", nargs="+", required=True)
    lr.add_argument("--go", required=True, help="announce once this file exists")
    t = sub.add_parser("table")
    t.add_argument("results")
    a = ap.parse_args()
    {"run": cmd_run, "table": cmd_table, "liar": cmd_liar}[a.cmd](a)


if __name__ == "__main__":
    main()
