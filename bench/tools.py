"""Small helpers for bench/lib.sh that are awkward in shell.

  tools.py time 'CMD'            run CMD with bash -c, print wall seconds (monotonic clock)
  tools.py tree DIR N SEED       N files of 1-64 KiB from the bytes on stdin
  tools.py port                  print a free TCP port on 127.0.0.1
"""

import os
import random
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


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "time" and len(argv) == 3:
        return time_cmd(argv[2])
    if cmd == "tree" and len(argv) == 5:
        return tree(argv[2], int(argv[3]), int(argv[4]))
    if cmd == "port" and len(argv) == 2:
        return port()
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
