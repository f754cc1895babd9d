"""ORAS (oras-py) with credentials against a Cairn registry that has auth on:
push an artifact and pull it back with Basic auth. Usage: oras_auth.py
HOST:PORT WORKDIR USER PASSWORD. Exits 0 when both worked, 1 on a mismatch,
2 when the registry refused the push (the message is printed)."""

import os
import sys

import oras.client

host, work, user, password = sys.argv[1:5]
os.chdir(work)
client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
client.auth.set_basic_auth(user, password)

os.makedirs("in", exist_ok=True)
data = b"pushed with credentials\n"
with open("in/hello.txt", "wb") as f:
    f.write(data)

target = f"{host}/team/oras:v1"
try:
    r = client.push(files=["in/hello.txt"], target=target)
except Exception as e:  # oras-py raises on a refused request
    print(f"push refused: {e}", file=sys.stderr)
    sys.exit(2)
if r.status_code != 201:
    print(f"push refused: {r.status_code} {r.text}", file=sys.stderr)
    sys.exit(2)

pulled = client.pull(target=target, outdir="out")
if [os.path.basename(p) for p in pulled] != ["hello.txt"]:
    print(f"FAIL: pulled {pulled}", file=sys.stderr)
    sys.exit(1)
with open(os.path.join("out", "hello.txt"), "rb") as f:
    if f.read() != data:
        print("FAIL: hello.txt differs after the round trip", file=sys.stderr)
        sys.exit(1)
