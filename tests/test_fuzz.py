"""Mutated sample messages never break intake: every frame yields journal rows and, unless the
sender's MSH-15 asked for none, an ACK; refusals always carry a reason."""
from __future__ import annotations

import random

from engine.hl7v2 import AckCode
from engine.intake import acks, take_frame
from engine.store import Stored
from tests.conftest import sample_files


def mutate(rnd: random.Random, message: bytes) -> bytes:
    m = bytearray(message)
    for _ in range(rnd.randint(1, 8)):
        op, pos = rnd.random(), rnd.randrange(len(m)) if m else 0
        if op < 0.4 and m:
            m[pos] = rnd.randrange(256)
        elif op < 0.6:
            m[pos:pos] = bytes([rnd.choice(b"|^~\\&\r\n\x00\xff")])
        elif op < 0.8 and m:
            del m[pos:pos + rnd.randint(1, 40)]
        else:
            del m[pos:]
    return bytes(m)


def test_mutated_messages_are_always_journaled_and_answered():
    samples = [p.read_bytes() for p in sample_files()]
    rnd = random.Random(20261123)
    for _ in range(20000):
        raw = mutate(rnd, rnd.choice(samples))
        intake = take_frame(raw, "ehr_inbound", "127.0.0.1:1")
        assert intake.received
        answers = acks(intake, [Stored(i + 1) for i in range(len(intake.received))])
        for r in intake.received:
            assert r.message.status in ("received", "error")
            assert (r.code is AckCode.AA) == (not r.errors) and (r.message.status == "error") == bool(r.errors)
        if not answers:
            assert all(r.header.field(15).strip().upper() in (b"NE", b"SU", b"ER") for r in intake.received)
