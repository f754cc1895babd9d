"""ORAS (oras-py) against a Cairn registry: push and pull a multi-file
artifact (one file chunked), then an artifact referring to it, found through
the referrers API. Usage: oras_roundtrip.py HOST:PORT WORKDIR. Exits non-zero
with a message on any mismatch."""

import hashlib
import os
import sys

import oras.client
import oras.oci
import requests

host, work = sys.argv[1], sys.argv[2]
os.chdir(work)
client = oras.client.OrasClient(hostname=host, insecure=True)
base = f"http://{host}/v2"


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


files = {"readme.txt": b"hello from oras\n", "data.bin": bytes((i * 7) % 256 for i in range(3 * 1024 * 1024 + 5))}
os.makedirs("in", exist_ok=True)
for name, data in files.items():
    with open(os.path.join("in", name), "wb") as f:
        f.write(data)

target = f"{host}/artifacts/multi:v1"
r = client.push(files=["in/readme.txt", "in/data.bin"], target=target, do_chunked=True, chunk_size=1024 * 1024)
subject_digest = r.headers.get("Docker-Content-Digest")
if not subject_digest:
    fail(f"manifest PUT answered without Docker-Content-Digest: {r.status_code} {dict(r.headers)}")

pulled = client.pull(target=target, outdir="out")
if sorted(os.path.basename(p) for p in pulled) != sorted(files):
    fail(f"pulled {pulled}, expected {sorted(files)}")
for name, data in files.items():
    with open(os.path.join("out", name), "rb") as f:
        if f.read() != data:
            fail(f"{name} differs after the round trip")

m = requests.get(f"{base}/artifacts/multi/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
if hashlib.sha256(m.content).hexdigest() != subject_digest.split(":", 1)[1]:
    fail("manifest bytes do not hash to Docker-Content-Digest")
subject = oras.oci.Subject(mediaType=m.headers["Content-Type"], digest=subject_digest, size=len(m.content))

with open("in/sig.txt", "wb") as f:
    f.write(b"signed, sealed, delivered\n")
r = client.push(
    files=["in/sig.txt"],
    target=f"{host}/artifacts/multi:sig",
    subject=subject,
    manifest_config="in/sig.txt:application/vnd.example.signature",
)
if r.headers.get("OCI-Subject") != subject_digest:
    fail(f"referrer push did not answer OCI-Subject {subject_digest}: {dict(r.headers)}")
sig_digest = r.headers["Docker-Content-Digest"]

idx = requests.get(f"{base}/artifacts/multi/referrers/{subject_digest}").json()
found = [d["digest"] for d in idx.get("manifests", [])]
if found != [sig_digest]:
    fail(f"referrers of {subject_digest} are {found}, expected [{sig_digest}]")
filtered = requests.get(f"{base}/artifacts/multi/referrers/{subject_digest}?artifactType=application/vnd.example.signature")
if [d["digest"] for d in filtered.json()["manifests"]] != [sig_digest]:
    fail(f"artifactType filter lost the signature: {filtered.text}")
if filtered.headers.get("OCI-Filters-Applied") != "artifactType":
    fail("OCI-Filters-Applied missing")
none = requests.get(f"{base}/artifacts/multi/referrers/{subject_digest}?artifactType=application/other").json()
if none["manifests"]:
    fail(f"artifactType filter let through {none['manifests']}")
print("ok")
