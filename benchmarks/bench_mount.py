"""``envcrypt mount`` against its baselines, all measured in one run (local disk target).

Run:  .venv/bin/python benchmarks/bench_mount.py [--mib 256] [--random 2000] [--repeat 3]

Each row is a throughput ratio (medians of ``--repeat`` runs; 2 noisy cores, so
compare ratios, not absolute figures):

1. sequential write of N MiB by a program (1 MiB ``write`` calls, then ``close``,
   which publishes) through the mount vs ``envcrypt put`` of the same file
   (the CLI, a process per run)                                      (target >= 0.4x)
   and vs the same program writing a plain directory
2. sequential read of the N MiB file through the mount (1 MiB reads) vs
   ``envcrypt cat FILE > /dev/null``                                  (target >= 0.5x)
   and vs reading the plain file

The CLI baselines include the start of a Python process (~0.3-0.5 s); the
in-process rows (``fs.put_file``, ``fs.open().read``) are the stricter comparison.
3. 4 KiB reads at random offsets through the mount (``pread`` on one open file)
   vs ``seek``+``read`` on an open ``EnvcryptFileSystem`` file in-process, and vs
   the plain file

Plain files and stored objects are read from the page cache (warm); the mount
drops its page cache for a file on every open, so its reads go through FUSE.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import median_time

MiB = 1 << 20
BLOCK = MiB
REPO = Path(__file__).resolve().parent.parent


def write_file(path: Path, data: memoryview) -> None:
    with open(path, "wb") as f:
        for offset in range(0, len(data), BLOCK):
            f.write(data[offset : offset + BLOCK])


def read_file(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(BLOCK):
            pass


def random_reads(path: Path, offsets: list[int]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in offsets:
            os.pread(fd, 4096, offset)
    finally:
        os.close(fd)


def mounted(path: Path) -> bool:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == str(path) for line in f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="size of the sequential file (MiB)")
    parser.add_argument("--random", type=int, default=2000, help="number of 4 KiB random reads")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="envcrypt-bench-mount-"))
    env = dict(os.environ, ENVCRYPT_VAULT=str(base / "vault"), PYTHONPATH=str(REPO))
    os.environ["ENVCRYPT_VAULT"] = env["ENVCRYPT_VAULT"]
    store, plain, mnt = base / "store", base / "plain", base / "mnt"
    for d in (store, plain, mnt):
        d.mkdir()
    size = args.mib * MiB
    data = memoryview(os.urandom(size))
    src = base / "src.bin"
    src.write_bytes(data)
    cli = [sys.executable, "-m", "envcrypt"]
    subprocess.run(cli + ["put", str(src), f"{store}/warmup.bin"], env=env, check=True)  # creates the key
    log = open(base / "mount.log", "wb")
    proc = subprocess.Popen(cli + ["mount", str(store), str(mnt)], env=env, stdout=log, stderr=log, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"mount failed: {(base / 'mount.log').read_text()}")
            time.sleep(0.05)
        print(f"envcrypt mount benchmark: {args.mib} MiB sequential, {args.random} x 4 KiB random reads, "
              f"median of {args.repeat}")
        rows = []

        # 1. sequential write
        t_mount_w = median_time(lambda: write_file(mnt / "seq.bin", data), args.repeat)
        t_plain_w = median_time(lambda: write_file(plain / "seq.bin", data), args.repeat)
        t_put = median_time(lambda: subprocess.run(cli + ["put", str(src), f"{store}/put.bin"], env=env,
                                                   check=True), args.repeat)
        rows.append(("sequential write: mount / envcrypt put", t_put / t_mount_w, ">= 0.4x"))
        rows.append(("sequential write: mount / plain directory", t_plain_w / t_mount_w, "-"))
        from envcrypt.fs import EnvcryptFileSystem

        fs = EnvcryptFileSystem(skip_instance_cache=True)
        t_api_put = median_time(lambda: fs.put_file(str(src), f"{store}/api.bin"), args.repeat)
        rows.append(("sequential write: mount / fs.put_file (in-process)", t_api_put / t_mount_w, "-"))

        # 2. sequential read
        t_mount_r = median_time(lambda: read_file(mnt / "seq.bin"), args.repeat)
        t_plain_r = median_time(lambda: read_file(plain / "seq.bin"), args.repeat)
        with open(os.devnull, "wb") as null:
            t_cat = median_time(lambda: subprocess.run(cli + ["cat", f"{store}/seq.bin"], env=env, stdout=null,
                                                       check=True), args.repeat)
        rows.append(("sequential read: mount / envcrypt cat", t_cat / t_mount_r, ">= 0.5x"))
        rows.append(("sequential read: mount / plain directory", t_plain_r / t_mount_r, "-"))

        def api_read() -> None:
            with fs.open(f"{store}/seq.bin", "rb") as f:
                while f.read(8 * MiB):
                    pass

        t_api_r = median_time(api_read, args.repeat)
        rows.append(("sequential read: mount / fs.open().read (in-process)", t_api_r / t_mount_r, "-"))

        # 3. 4 KiB random reads
        rng = random.Random(1)
        offsets = [rng.randrange(0, size - 4096) for _ in range(args.random)]
        def envcrypt_random() -> None:
            with fs.open(f"{store}/seq.bin", "rb") as f:
                for offset in offsets:
                    f.seek(offset)
                    f.read(4096)

        t_mount_rr = median_time(lambda: random_reads(mnt / "seq.bin", offsets), args.repeat)
        t_plain_rr = median_time(lambda: random_reads(plain / "seq.bin", offsets), args.repeat)
        t_api_rr = median_time(envcrypt_random, args.repeat)
        rows.append(("4 KiB random reads: mount / envcrypt file (in-process)", t_api_rr / t_mount_rr, "-"))
        rows.append(("4 KiB random reads: mount / plain directory", t_plain_rr / t_mount_rr, "-"))

        for name, ratio, target in rows:
            print(f"  {name:56} {ratio:6.2f}x  (target {target})")
        mbs = size / MiB
        print(f"  (seconds: mount write {t_mount_w:.2f} = {mbs / t_mount_w:.0f} MiB/s, put {t_put:.2f}, "
              f"plain write {t_plain_w:.2f}; mount read {t_mount_r:.2f} = {mbs / t_mount_r:.0f} MiB/s, "
              f"cat {t_cat:.2f}, plain read {t_plain_r:.2f}; random reads mount {t_mount_rr:.3f}, "
              f"in-process {t_api_rr:.3f}, plain {t_plain_rr:.3f})")
    finally:
        subprocess.run(cli + ["unmount", str(mnt)], env=env, check=False, timeout=60)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
