"""Soak driver for bench/soak.sh: mixed load against a running 3-node cluster.

  soak.py DURATION_S STATE_DIR

STATE_DIR/nodes.json (written and updated by soak.sh) maps node names to
{"url", "addr", "data"}; soak.sh restarts nodes under it (kill -9), so every
request here may meet a refused connection, which is counted by kind, never
hidden. An origin serving STATE_DIR/origin/<hex> is at the URL in
STATE_DIR/origin.url.

Every 2xx body of a blob is hashed and compared with its digest: a mismatch
is a "wrong body" and fails the run. Prints one JSON report on stdout.
"""

import hashlib
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

BLOB_MIN, BLOB_MAX = 1 << 10, 2 << 20
# Distinct bytes pushed, at most; past it pushes repeat earlier content (to
# any node), so the soak's disk use stays bounded however long it runs.
BUDGET = int(os.environ.get("SOAK_MAX_BYTES", str(1536 << 20)))


def make_blob(seed):
    """Bytes from a seed, so content can be pushed again without keeping it."""
    rng = random.Random(seed)
    return rng.randbytes(rng.randint(BLOB_MIN, BLOB_MAX))


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.lat = {}  # kind -> [seconds]
        self.errors = {}  # "kind: what" -> count
        self.wrong_bodies = 0

    def ok(self, kind, secs):
        with self.lock:
            self.lat.setdefault(kind, []).append(secs)

    def err(self, kind, what):
        with self.lock:
            key = f"{kind}: {what}"
            self.errors[key] = self.errors.get(key, 0) + 1

    def wrong(self, kind, detail):
        with self.lock:
            self.wrong_bodies += 1
            key = f"{kind}: WRONG BODY"
            self.errors[key] = self.errors.get(key, 0) + 1
        print(f"soak: wrong body: {kind}: {detail}", file=sys.stderr)


class World:
    """What the clients know exists: digests per node, refs, origin blobs."""

    def __init__(self, state):
        self.state = state
        self.lock = threading.Lock()
        self.pushed = []  # (hex, node name) pushed and referenced by a ref
        self.refs = []  # (ref_file, node name)
        self.origin = []  # hex served by the origin only at first
        self.v2 = []  # (node, repo, tag, manifest digest, [layer hex], layer seed, config bytes)
        self.manifests = []  # (name, created_at, [blob seeds]) of /v1 pushes
        self.bytes = 0  # distinct bytes pushed

    def fresh(self, n):
        """True (and counted) when `n` more distinct bytes fit the budget."""
        with self.lock:
            if self.bytes + n > BUDGET:
                return False
            self.bytes += n
            return True

    def nodes(self):
        with open(os.path.join(self.state, "nodes.json")) as f:
            return json.load(f)


def request(url, method="GET", body=None, headers=None, timeout=60):
    """One request on a fresh connection; returns (status, headers, body bytes)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        path = u.path + (f"?{u.query}" if u.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, dict(r.getheaders()), data
    finally:
        conn.close()


def classify(e):
    name = type(e).__name__
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (node restarting)"
    if isinstance(e, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
        return "connection cut (node killed)"
    if isinstance(e, http.client.IncompleteRead):
        return "body cut short"
    if "timed out" in str(e):
        return "timeout"
    return name


def timed(stats, kind, fn):
    t0 = time.monotonic()
    try:
        res = fn()
    except Exception as e:  # noqa: BLE001 - every failure is counted by kind
        stats.err(kind, classify(e))
        return None
    if res is not None and res is not False:
        stats.ok(kind, time.monotonic() - t0)
    return res


def check_blob(stats, kind, hexd, status, body, node):
    if status == 200:
        if hashlib.sha256(body).hexdigest() != hexd:
            stats.wrong(kind, f"{hexd} from {node}: {len(body)} bytes hash to {hashlib.sha256(body).hexdigest()}")
            return False
        return True
    stats.err(kind, f"HTTP {status}")
    return False


def ref_file_for(name, data):
    return f"{name}-{hashlib.sha256(data).hexdigest()[:12]}.json"


def push_v1(world, stats, rng):
    nodes = world.nodes()
    name = rng.choice(sorted(nodes))
    url = nodes[name]["url"]
    seeds = [rng.getrandbits(48) for _ in range(rng.randint(1, 3))]
    blobs = [make_blob(x) for x in seeds]
    mname = f"soak-{rng.getrandbits(32):08x}"
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if not world.fresh(sum(map(len, blobs))):
        with world.lock:
            if not world.manifests:
                return
            mname, created, seeds = rng.choice(world.manifests)
        blobs = [make_blob(x) for x in seeds]
    hexes = []

    def go():
        for b in blobs:
            h = hashlib.sha256(b).hexdigest()
            st, _, body = request(f"{url}/v1/blobs/{h}", "PUT", b)
            if st not in (200, 201):
                stats.err("push", f"blob HTTP {st}")
                return False
            hexes.append(h)
        doc = {"name": mname, "created_at": created, "objects": {f"f{i}": h for i, h in enumerate(hexes)}}
        data = json.dumps(doc, indent=2).encode()
        rf = ref_file_for(mname, data)
        st, _, _ = request(f"{url}/v1/manifests/{rf}", "PUT", data, {"Content-Type": "application/json"})
        if st != 201:
            stats.err("push", f"manifest HTTP {st}")
            return False
        with world.lock:
            world.pushed.extend((h, name) for h in hexes)
            world.refs.append((rf, name))
            world.manifests.append((mname, created, seeds))
        return True

    timed(stats, "push", go)


def pull_local(world, stats, rng):
    with world.lock:
        if not world.pushed:
            return
        hexd, name = rng.choice(world.pushed)
    nodes = world.nodes()

    def go():
        st, _, body = request(f"{nodes[name]['url']}/v1/blobs/{hexd}")
        return check_blob(stats, "pull", hexd, st, body, name)

    timed(stats, "pull", go)


def pull_through(world, stats, rng):
    with world.lock:
        pool = [(h, None) for h in world.origin] + world.pushed
        if not pool:
            return
        hexd, holder = rng.choice(pool)
    nodes = world.nodes()
    name = rng.choice(sorted(n for n in nodes if n != holder))

    def go():
        st, _, body = request(f"{nodes[name]['url']}/v1/fetch/{hexd}")
        return check_blob(stats, "pull-through", hexd, st, body, name)

    timed(stats, "pull-through", go)


def sync(world, stats, rng):
    with world.lock:
        if not world.refs:
            return
        rf, holder = rng.choice(world.refs)
    nodes = world.nodes()
    name = rng.choice(sorted(n for n in nodes if n != holder))

    def go():
        peer = nodes[holder]["addr"]
        st, _, body = request(f"{nodes[name]['url']}/v1/manifests/{rf}/sync?peer={peer}", "POST", b"")
        if st != 200:
            stats.err("sync", f"HTTP {st}")
            return False
        return True

    timed(stats, "sync", go)


def push_v2(world, stats, rng):
    nodes = world.nodes()
    name = rng.choice(sorted(nodes))
    url = nodes[name]["url"]
    repo = f"soak/r{rng.randint(0, 7)}"
    lseed = rng.getrandbits(48)
    layer = make_blob(lseed)
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": rng.getrandbits(32)}).encode()
    tag = f"t{rng.getrandbits(24):06x}"
    if not world.fresh(len(layer)):
        with world.lock:
            if not world.v2:
                return
            _, repo, tag, _, _, lseed, config = rng.choice(world.v2)
        layer = make_blob(lseed)

    def put_blob(data):
        h = hashlib.sha256(data).hexdigest()
        st, _, _ = request(f"{url}/v2/{repo}/blobs/uploads/?digest=sha256:{h}", "POST", data,
                           {"Content-Type": "application/octet-stream"})
        if st != 201:
            raise RuntimeError(f"v2 blob upload HTTP {st}")
        return h

    def go():
        lh, ch = put_blob(layer), put_blob(config)
        man = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{ch}",
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{lh}",
                        "size": len(layer)}],
        }).encode()
        st, _, _ = request(f"{url}/v2/{repo}/manifests/{tag}", "PUT", man,
                           {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        if st != 201:
            stats.err("v2-push", f"manifest HTTP {st}")
            return False
        with world.lock:
            world.v2.append((name, repo, tag, hashlib.sha256(man).hexdigest(), [lh, ch], lseed, config))
        return True

    try:
        timed(stats, "v2-push", go)
    except RuntimeError as e:
        stats.err("v2-push", str(e))


def pull_v2(world, stats, rng):
    with world.lock:
        if not world.v2:
            return
        name, repo, tag, mhex, layers, _, _ = rng.choice(world.v2)
    nodes = world.nodes()
    url = nodes[name]["url"]
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}

    def go():
        st, _, body = request(f"{url}/v2/{repo}/manifests/{tag}", headers=accept)
        if not check_blob(stats, "v2-pull", mhex, st, body, name):
            return False
        for h in layers:
            st, _, body = request(f"{url}/v2/{repo}/blobs/sha256:{h}")
            if not check_blob(stats, "v2-pull", h, st, body, name):
                return False
        return True

    timed(stats, "v2-pull", go)


ACTIONS = [(push_v1, 2), (pull_local, 5), (pull_through, 4), (sync, 1), (push_v2, 2), (pull_v2, 4)]


def client(world, stats, seed, deadline):
    rng = random.Random(seed)
    fns = [f for f, w in ACTIONS for _ in range(w)]
    while time.monotonic() < deadline:
        rng.choice(fns)(world, stats, rng)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else None


def main():
    duration, state = float(sys.argv[1]), sys.argv[2]
    clients = int(os.environ.get("SOAK_CLIENTS", "6"))
    world, stats = World(state), Stats()
    with open(os.path.join(state, "origin.list")) as f:
        world.origin = [line.strip() for line in f if line.strip()]
    deadline = time.monotonic() + duration
    threads = [threading.Thread(target=client, args=(world, stats, 1000 + i, deadline)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = {
        "clients": clients,
        "duration_s": duration,
        "requests_ok": {k: len(v) for k, v in sorted(stats.lat.items())},
        "latency_ms": {k: {"p50": round(pct(v, 0.5) * 1000, 1), "p99": round(pct(v, 0.99) * 1000, 1)}
                       for k, v in sorted(stats.lat.items())},
        "errors": dict(sorted(stats.errors.items())),
        "wrong_bodies": stats.wrong_bodies,
        "pushed_blobs": len(world.pushed),
        "refs": len(world.refs),
        "v2_images": len(world.v2),
        "distinct_bytes_pushed": world.bytes,
    }
    print(json.dumps(report, indent=2))
    return 1 if stats.wrong_bodies else 0


if __name__ == "__main__":
    sys.exit(main())
