"""What writing a new file costs on this machine: memory taken from the free pool against reused.

    python benchmarks/new_pages.py [FOLDER] [--rounds 4] [--files 20] [--mb 5]

Each round writes ``--files`` new files of ``--mb`` MB (random bytes) into FOLDER, then
deletes them; a round reuses the pages that the round before it freed. Measured 2026-12-03 on
the 2-vCPU benchmark machine (21 of its 23 GB free): 17.2 ms a 5 MB file in the first round,
1.1-1.7 ms in the rounds after; again at 13:00, after hours of work on the machine, 13.4 and
15.2 ms (20 and 200 files), then 1.2-1.5 ms. So pages taken from the free pool cost ~3 ms a
MB to fill here, each time (the free memory does not stay in the page cache: buff/cache
stayed near 1 GB; a hypervisor that takes freed pages back would behave so, a guess).
``pupsnr ingest`` writes its store into such pages: benchmarks/RESULTS.md says what that
costs the 2,000-file row.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def rounds(folder: str, n_rounds: int, n_files: int, size: int) -> list[float]:
    """Milliseconds per file written, one figure a round."""
    data = os.urandom(size)
    out = []
    for r in range(n_rounds):
        paths = [os.path.join(folder, f"round{r}-{i}.bin") for i in range(n_files)]
        start = time.perf_counter()
        for path in paths:
            with open(path, "wb") as fp:
                fp.write(data)
        out.append((time.perf_counter() - start) / n_files * 1000)
        for path in paths:
            os.remove(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=None, help="where to write [a temp folder]")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mb", type=float, default=5.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        figures = rounds(folder, args.rounds, args.files, int(args.mb * 1e6))
    for r, ms in enumerate(figures):
        print(f"round {r}: {ms:.2f} ms a {args.mb:g} MB file ({args.files} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
