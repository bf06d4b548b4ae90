"""A payer for tests and demos: answers X12 270 with 271 and 278 with 278, by rules. Not product code.

    python -m payer_simulator --port 8590 [--rules payer_simulator/rules.yaml]

See README.md. It imports nothing from the engine, so what the engine sends is read here
the way a real clearinghouse would read it: as X12 text over HTTP.
"""
from payer_simulator.server import PayerSimulator, Rules

__all__ = ["PayerSimulator", "Rules"]
