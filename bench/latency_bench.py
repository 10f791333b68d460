"""Acknowledgement latency: APPEND a complaint to the mailbox, time until its acknowledgement reaches SMTP.

    .venv/bin/python bench/latency_bench.py [--count 200] [--interval 0.15] [--pg]

`complaints-worker run` idles on the recipe's Dovecot (../shared/bench/mailserver.sh, free port)
with the shortest poll interval (1 s), sending to the recipe's aiosmtpd sink. After one warm-up
message, COUNT new complaints from the shared mail set (each from a different customer, so no
per-recipient limit applies) are APPENDed one at a time, INTERVAL seconds apart. A message's
latency runs from the moment its APPEND completed to the moment the sink received the
acknowledgement whose In-Reply-To is its Message-ID (one clock: same machine). Prints p50, p99,
max, whether the worker waited with IMAP IDLE or polled (from its log), and its peak RSS.
Without ../shared (or $BENCH_SHARED) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from benchlib import MailServer, Sink

TARGET_P99_S = 1.0
ACK_TIMEOUT_S = 30.0
STARTUP_TIMEOUT_S = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200, help="messages timed (default 200)")
    parser.add_argument("--interval", type=float, default=0.15,
                        help="seconds between two APPENDs (default 0.15)")
    parser.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, database)")
    args = parser.parse_args(argv)
    recipe = benchlib.require_shared("latency benchmark")
    if recipe is None:
        return 0
    work = benchlib.begin("latency", "APPEND -> `run` -> acknowledgement at the sink")
    server = MailServer(recipe, work / "dovecot")
    try:
        messages = complaints(recipe, work, args.count + 1)
        server.start()
        server.load_empty()
        with contextlib.ExitStack() as stack:
            if args.pg:
                db_url = stack.enter_context(benchlib.postgres_database(f"bench_latency_{os.getpid()}"))
            else:
                db_url = benchlib.sqlite_url(work / "latency.db")
            result = measure(server, recipe, work, db_url, messages, args.interval)
        report(result, args, "PostgreSQL" if args.pg else "SQLite")
    finally:
        server.stop()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if not result["missing"] else 1


def complaints(recipe: Path, work: Path, count: int) -> list[tuple[str, bytes]]:
    """(Message-ID, raw) of `count` new complaints from the shared set, one per customer."""
    folder, manifest = benchlib.generate_mail(recipe, max(1000, count * 4), work, eml=True)
    chosen: list[tuple[str, bytes]] = []
    customers: set[str] = set()
    for m in manifest:
        if m["kind"] == "new" and m["customer"] not in customers:
            customers.add(m["customer"])
            chosen.append((m["message_id"], (folder / f"{m['seq']:06d}.eml").read_bytes()))
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"only {len(chosen)} first complaints in the generated set, {count} needed")


def measure(server: MailServer, recipe: Path, work: Path, db_url: str,
            messages: list[tuple[str, bytes]], interval: float) -> dict[str, Any]:
    from imapclient import IMAPClient

    sink = Sink(recipe / "smtp_sink.py", work / "sink.jsonl")
    config = benchlib.worker_config(work / "latency.toml", db_url=db_url, imap_port=server.port,
                                    smtp_port=sink.port, worker={"poll_interval_seconds": 1})
    benchlib.migrate(config)
    log = work / "run.log"
    with sink, log.open("wb") as out:
        worker = subprocess.Popen(benchlib.worker_command(config, "run"), cwd=benchlib.ROOT,
                                  stdout=out, stderr=subprocess.STDOUT)
        try:
            client = IMAPClient("127.0.0.1", server.port, ssl=False)
            client.login(benchlib.MAIL_USER, benchlib.MAIL_PASSWORD)
            server_idle = client.has_capability("IDLE")
            # The warm-up message: start-up, the first poll and SMTP connection are not timed.
            (warm_id, warm_raw), timed = messages[0], messages[1:]
            client.append("INBOX", warm_raw)
            if not wait_for_acks(sink, {warm_id}, STARTUP_TIMEOUT_S, worker):
                raise RuntimeError(f"no acknowledgement of the warm-up message within "
                                   f"{STARTUP_TIMEOUT_S:.0f} s:\n{log.read_text()[-2000:]}")
            appended: dict[str, float] = {}
            for message_id, raw in timed:
                client.append("INBOX", raw)
                appended[message_id] = time.time()
                time.sleep(interval)  # pacing the arrivals: this is the load, not a wait for a result
            client.logout()
            arrived = wait_for_acks(sink, set(appended), ACK_TIMEOUT_S, worker)
            peak_rss_kb = peak_rss(worker.pid)
        finally:
            benchlib.terminate(worker, 30)
    latencies = sorted(arrived[mid] - appended[mid] for mid in appended if mid in arrived)
    text = log.read_text(errors="replace")
    return {"latencies": latencies, "missing": len(appended) - len(latencies),
            "peak_rss_kb": peak_rss_kb, "mode": waiting_mode(text, server_idle),
            "exit": worker.returncode}


def wait_for_acks(sink: Sink, message_ids: set[str], timeout: float,
                  worker: subprocess.Popen[bytes]) -> dict[str, float]:
    """Arrival time at the sink of the acknowledgement of each of `message_ids` (those that came)."""
    deadline = time.monotonic() + timeout
    while worker.poll() is None:
        arrived = {(r.get("in-reply-to") or "").strip(): float(r["t"]) for r in sink.records()
                   if benchlib.NOTIFY not in r.get("rcpt_tos", [])}
        found = {mid: arrived[mid] for mid in message_ids if mid in arrived}
        if len(found) == len(message_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)  # the sink is another process writing a file; nothing to block on
    raise RuntimeError(f"the worker exited with {worker.returncode} during the benchmark")


def peak_rss(pid: int) -> int:
    """VmHWM of a live process, in KiB (the worker is stopped by signal, so no /usr/bin/time)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def waiting_mode(log_text: str, server_idle: bool) -> str:
    """How the worker waits for new mail, as far as its log and the server's CAPABILITY tell."""
    offered = f"the server {'offers' if server_idle else 'does NOT offer'} IDLE"
    idle = [line for line in log_text.splitlines() if re.search(r"\bidle\b", line, re.IGNORECASE)]
    if idle:
        return f"{offered}; the worker's log: {idle[0].split(': ', 1)[-1][:120]}"
    running = [line for line in log_text.splitlines() if "worker running" in line]
    detail = running[0].split(": ", 1)[-1] if running else "no start line in the log"
    return f"{offered}; no IDLE in the worker's log, so polling ({detail})"


def report(result: dict[str, Any], args: argparse.Namespace, database: str) -> None:
    latencies: list[float] = result["latencies"]
    print(f"\nacknowledgement latency over {args.count} messages, one every {args.interval:.2f} s, "
          f"{database}")
    print(f"  waiting     {result['mode']}")
    if latencies:
        p50, p99 = benchlib.percentile(latencies, 50), benchlib.percentile(latencies, 99)
        print(f"  p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms, "
              f"min {latencies[0] * 1000:.0f} ms")
        verdict = "meets" if p99 < TARGET_P99_S else "BELOW"
        print(f"  p99 {verdict} the < {TARGET_P99_S:.0f} s target")
    print(f"  acknowledged {len(latencies)}/{args.count}"
          + (f"; {result['missing']} not within {ACK_TIMEOUT_S:.0f} s" if result["missing"] else ""))
    print(f"  worker peak RSS {result['peak_rss_kb'] / 1024:.1f} MiB; exit status after SIGTERM "
          f"{result['exit']}")


if __name__ == "__main__":
    sys.exit(main())
