"""python -m payer_simulator --port 8590 [--host 127.0.0.1] [--rules FILE]"""
from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from payer_simulator.server import PayerSimulator, Rules


def main() -> None:
    parser = argparse.ArgumentParser(prog="payer_simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8590)
    parser.add_argument("--rules", type=Path, default=Path(__file__).with_name("rules.yaml"))
    args = parser.parse_args()
    simulator = PayerSimulator(Rules.load(args.rules), host=args.host, port=args.port).start()
    print(f"payer simulator on {simulator.url} (rules: {args.rules})", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    simulator.stop()


if __name__ == "__main__":
    main()
