"""Summarise a py-spy ``--format raw`` profile (``python -m bench.run --profile --keep``).

    python -m bench.profile /tmp/relay-bench-*/relay-profile.txt [--top 30] [--filter relay/]

Prints the functions with the largest inclusive share of samples (a function counted once per
stack), which is what points at a hot spot in an asyncio program whose stacks are shallow.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.profile")
    p.add_argument("path", type=Path)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--filter", default="", help="only frames whose text contains this")
    args = p.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in args.path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            if args.filter in frame:
                inclusive[frame] += n
        own[frames[-1]] += n
    print(f"{total} samples\n-- inclusive --")
    for frame, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {frame}")
    print("-- own --")
    for frame, n in own.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
