"""Where a benchmarked command spends its time: run it under py-spy, then rank the functions.

    .venv/bin/python bench/profiling.py STACKS.txt [--top 25]

summarises a py-spy raw file (collapsed stacks, one `frame;frame;... count` per line). The
ingest benchmark writes one with `--profile DIR`. py-spy is not a project dependency: install it
into the virtualenv by hand (`.venv/bin/pip install py-spy`) to profile.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

# "function (path/to/file.py:123)" as py-spy writes a frame with line numbers.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def pyspy_prefix(output: Path) -> list[str] | None:
    """The py-spy command line that records `output` (raw stacks, idle time included), or None."""
    binary = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if binary is None:
        return None
    # --idle: blocked in a socket or fsync counts too, since wall time is what the rate measures.
    return [binary, "record", "--idle", "--nonblocking", "--rate", "250", "--format", "raw",
            "--nolineno", "-o", str(output), "--"]


def _frame_name(frame: str) -> str:
    found = _FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    return f"{found['function']} ({found['file']})"


def summarise(raw: Path, top: int = 25) -> list[str]:
    """Inclusive (anywhere on the stack) and self (innermost frame) shares of all samples."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return [f"no samples in {raw}"]
    lines = [f"{total} samples; inclusive = on the stack, self = innermost frame", "",
             "top inclusive, our code (worker/):"]
    ours = [(n, c) for n, c in inclusive.most_common() if "worker/" in n or n.startswith("<module>")]
    lines += [f"  {c / total:6.1%}  {n}" for n, c in ours[:top]]
    lines += ["", "top inclusive, everything:"]
    lines += [f"  {c / total:6.1%}  {n}" for n, c in inclusive.most_common(top)]
    lines += ["", "top self:"]
    lines += [f"  {c / total:6.1%}  {n}" for n, c in own.most_common(top)]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stacks", type=Path, help="py-spy --format raw output")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print("\n".join(summarise(args.stacks, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
