"""Does make run's filesystem broker lose messages? One producer and one consumer process.

    .venv/bin/python bench/broker_race.py [--messages 20000] [--interval-ms 0] [--transport cxrfs|filesystem|both]
                                        [--keep-processed] [--busy N]

The producer publishes numbered messages, one every --interval-ms (0: as fast as it can); the
consumer, in another process, takes them with make run's poll (BROKER_POLLING_INTERVAL from the
environment, 0.02 s by default) until it has all or none came for 10 s. Taken messages are not kept,
as in make run; --keep-processed keeps them (kombu's store_processed). --busy processes (one per core
by default) burn CPU meanwhile, as make run's inference processes share the cores with the web.
Prints, per transport, how many arrived, how many reads failed and how fast the consumer took them.
``filesystem`` is kombu's own transport, ``cxrfs`` this project's (config/broker.py), which writes each
message under a partial name and renames it into the queue.
The folders are made under var/bench/ and removed afterwards.
"""

import argparse
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import bench_folder  # noqa: E402


def _connection(transport: str, folder: Path, keep: bool):
    from kombu import Connection

    import config.broker  # noqa: F401 - registers cxrfs://

    options = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "store_processed": keep,
        "polling_interval": float(os.environ.get("BROKER_POLLING_INTERVAL", "0.02")),
    }
    return Connection(f"{transport}://", transport_options=options)


def produce(transport: str, folder: Path, messages: int, interval: float, keep: bool) -> None:
    with _connection(transport, folder, keep) as connection:
        queue = connection.SimpleQueue("inference")
        for number in range(messages):
            queue.put({"n": number})
            time.sleep(interval)


def consume(transport: str, folder: Path, messages: int, keep: bool, results: "multiprocessing.Queue") -> None:
    received, failed, first = set(), 0, None
    with _connection(transport, folder, keep) as connection:
        queue = connection.SimpleQueue("inference")
        last = time.monotonic() + 5  # the producer starts within a second or two
        while len(received) < messages and time.monotonic() - last < 10:
            try:
                message = queue.get(block=True, timeout=0.02)
            except queue.Empty:
                continue
            except Exception:  # kombu's transport: an empty or half-written message file
                failed += 1
                continue
            last = time.monotonic()
            first = first or last
            received.add(message.payload["n"])
            message.ack()
    results.put((len(received), failed, len(received) / max(1e-9, last - (first or last))))


def burn(stop: "multiprocessing.Event") -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def race(transport: str, messages: int, interval: float, keep: bool, busy: int) -> tuple[int, int, float]:
    folder = bench_folder("broker-race-")
    try:
        for name in ("queue", "processed"):
            (folder / name).mkdir()
        results: multiprocessing.Queue = multiprocessing.Queue()
        consumer = multiprocessing.Process(target=consume, args=(transport, folder, messages, keep, results))
        consumer.start()
        stop = multiprocessing.Event()
        burners = [multiprocessing.Process(target=burn, args=(stop,)) for _ in range(busy)]
        for burner in burners:
            burner.start()
        time.sleep(1)  # the consumer is polling before the first message
        producer = multiprocessing.Process(target=produce, args=(transport, folder, messages, interval, keep))
        producer.start()
        producer.join()
        outcome = results.get()
        consumer.join()
        stop.set()
        for burner in burners:
            burner.join()
        return outcome
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--interval-ms", type=float, default=0.0)
    parser.add_argument("--transport", choices=["cxrfs", "filesystem", "both"], default="both")
    parser.add_argument("--keep-processed", action="store_true", help="keep taken messages (store_processed)")
    parser.add_argument(
        "--busy", type=int, default=os.cpu_count() or 2, help="processes burning CPU meanwhile (make run's workers)"
    )
    args = parser.parse_args()
    transports = ["filesystem", "cxrfs"] if args.transport == "both" else [args.transport]
    for transport in transports:
        received, failed, rate = race(transport, args.messages, args.interval_ms / 1000, args.keep_processed, args.busy)
        print(
            f"{transport:<11} {received:>7,} of {args.messages:,} messages arrived, {args.messages - received:,} lost; "
            f"{failed:,} reads failed; taken at {rate:,.0f} messages/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
