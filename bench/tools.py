"""Small helpers for bench/lib.sh that are awkward in shell.

  tools.py time 'CMD'            run CMD with bash -c, print wall seconds (monotonic clock)
  tools.py tree DIR N SEED       N files of 1-64 KiB from the bytes on stdin
  tools.py port                  print a free TCP port on 127.0.0.1
  tools.py oci DIR BYTES TAG     an OCI image layout with one gzip layer: a tar
                                 holding one file of BYTES bytes from stdin
"""

import gzip
import hashlib
import json
import os
import random
import tarfile
import socket
import subprocess
import sys
import time


def time_cmd(cmd):
    t0 = time.monotonic()
    r = subprocess.run(["bash", "-c", cmd])
    elapsed = time.monotonic() - t0
    print(f"{elapsed:.6f}")
    return r.returncode


def tree(root, n, seed):
    rng = random.Random(seed)
    src = sys.stdin.buffer
    for i in range(n):
        d = os.path.join(root, f"d{i // 100:03d}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        size = rng.randint(1024, 64 * 1024)
        data = src.read(size)
        if len(data) != size:
            sys.exit("tree: input ended early")
        with open(os.path.join(d, f"f{i % 100:02d}.bin"), "wb") as f:
            f.write(data)
    return 0


def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    return 0


class _HashingWriter:
    """Hashes what tarfile writes (the diff_id) and passes it to gzip."""

    def __init__(self, inner):
        self.inner = inner
        self.sha = hashlib.sha256()

    def write(self, b):
        self.sha.update(b)
        return self.inner.write(b)


def _put_blob(root, data_or_path):
    if isinstance(data_or_path, bytes):
        digest = hashlib.sha256(data_or_path).hexdigest()
        with open(os.path.join(root, "blobs", "sha256", digest), "wb") as f:
            f.write(data_or_path)
        return digest, len(data_or_path)
    h = hashlib.sha256()
    with open(data_or_path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    os.rename(data_or_path, os.path.join(root, "blobs", "sha256", digest))
    return digest, os.path.getsize(os.path.join(root, "blobs", "sha256", digest))


def oci(root, size, tag):
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    tmp = os.path.join(root, "layer.tmp")
    # Level 0 (stored deflate blocks): a real gzip stream, written at disk
    # speed; the registries never decompress layers.
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0, mtime=0) as gz:
        hw = _HashingWriter(gz)
        with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("data.bin")
            info.size = size
            info.mode = 0o644
            tar.addfile(info, sys.stdin.buffer)
    diff_id = "sha256:" + hw.sha.hexdigest()
    layer, layer_size = _put_blob(root, tmp)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    cfg, cfg_size = _put_blob(root, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cfg, "size": cfg_size},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + layer, "size": layer_size}
        ],
    }
    man, man_size = _put_blob(root, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + man,
                "size": man_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(f"{layer} {man}")
    return 0


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "time" and len(argv) == 3:
        return time_cmd(argv[2])
    if cmd == "tree" and len(argv) == 5:
        return tree(argv[2], int(argv[3]), int(argv[4]))
    if cmd == "oci" and len(argv) == 5:
        return oci(argv[2], int(argv[3]), argv[4])
    if cmd == "port" and len(argv) == 2:
        return port()
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
