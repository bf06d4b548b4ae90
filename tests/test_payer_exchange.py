"""Eligibility and prior authorization through an exchange folder instead of HTTP.

The engine writes its 270/278 into `payers.destination` (a file destination); a test
"clearinghouse" reads each request file, has payer_simulator's rules answer it
(`Payer.answer`, the same logic the HTTP simulator runs) and drops the answer into
`payers.inbox`, written as `.part` and renamed as real clearinghouses do. The engine's
`payer_inbox` job applies it with the same handlers as an HTTP answer. Real engine,
real files, the real store (SQLite and PostgreSQL); the CLI as a subprocess.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config
from payer_simulator import Rules
from payer_simulator.server import Payer
from tests.conftest import REPO, EngineThread, wait_until, write_config
from tests.test_eligibility import RULES, cli, make_270, order, referral, row, rows, send_orders

pytestmark = pytest.mark.store


def exchange_config(tmp_path: Path, *, auth_specialties: tuple[str, ...] = (), inbox: bool = True) -> Path:
    auth = f"""      prior_auth:
        - specialty: [{', '.join(auth_specialties)}]
""" if auth_specialties else ""
    return write_config(tmp_path, channel_extra=f"""    transformer: {{mappings: {REPO / 'mappings'}}}
    destinations:
      - {{name: payer_outbox, type: file, directory: ./var/payer/outbox, name_pattern: "{{control_id}}.x12"}}
outbound:
  backoff_seconds: 0.05
  max_backoff_seconds: 0.2
  templates: {REPO / 'mappings' / 'outbound'}
schedules:
  retry_pump_seconds: 0.2
outreach:
  templates: {REPO / 'mappings' / 'outreach'}
payers:
  destination: payer_outbox
{"  inbox: ./var/payer/inbox" if inbox else ""}
  inbox_every_seconds: 0.2
  escalate_to: referral-desk
  rules:
    - name: CASCADIA MUTUAL HEALTH PLAN
      aliases: [Cascadia Mutual]
      payer_id: CMH94317
{auth}""")


class Clearinghouse:
    """Answers every request file in the outbox once, into the inbox (as `.part`, then renamed)."""

    def __init__(self, config):
        self.outbox = config.destinations()["payer_outbox"].directory
        self.inbox = config.payers.inbox
        self.payer = Payer(Rules.load(RULES))
        self.answered: dict[str, str] = {}          # request file name -> the X12 it asked

    def answer_all(self) -> list[str]:
        """Answer the request files not answered yet; returns their transaction sets ('270', '278')."""
        kinds = []
        for path in sorted(self.outbox.glob("*.x12")):
            if path.name in self.answered:
                continue
            text = path.read_text()
            status, body = self.payer.answer(text)
            assert status == 200, body
            self.drop(f"answer-{path.stem}.x12", body)
            self.answered[path.name] = text
            kinds.append(text[text.index("ST*") + 3:text.index("ST*") + 6])
        return kinds

    def drop(self, name: str, body: str | bytes) -> Path:
        self.inbox.mkdir(parents=True, exist_ok=True)
        part = self.inbox / f"{name}.part"
        part.write_bytes(body.encode() if isinstance(body, str) else body)
        return part.rename(self.inbox / name)


def inbox_empty(inbox: Path) -> bool:
    return not [p for p in inbox.iterdir() if p.is_file() and not p.name.endswith(".part")
                and not p.name.startswith(".")]


def test_referral_in_270_file_out_271_file_back_eligibility_recorded(tmp_path):
    config = load_config(exchange_config(tmp_path))
    house = Clearinghouse(config)
    engine = EngineThread(config).start()
    try:
        db = config.store_location
        send_orders(engine.port, order())
        wait_until(lambda: list(house.outbox.glob("*.x12")), what="the 270 file")
        # the file written is `sent`; the request waits, visibly, for the answer file
        out = wait_until(lambda: row(db, "SELECT * FROM outbound WHERE message_type='x12_270' AND status='sent'"),
                         what="270 recorded sent")
        assert out["ack"].startswith("wrote ") and out["last_error"] is None
        assert row(db, "SELECT status FROM payer_requests WHERE referral_id=1")["status"] == "asked"
        r = referral(db)
        assert r["coverage_status"] == "pending" and r["next_action"].startswith("Eligibility pending: waiting for")
        assert rows(db, "SELECT * FROM review_exceptions") == []
        assert house.answer_all() == ["270"]
        wait_until(lambda: referral(db).get("coverage_status") == "active", what="coverage from the 271 file")
        wait_until(lambda: inbox_empty(house.inbox), what="the 271 file moved")
        [processed] = list((house.inbox / "processed").iterdir())
        # a crash between the commit and the move: the same file is swept again, and not applied twice
        shutil.copy(processed, house.inbox / processed.name)
        wait_until(lambda: inbox_empty(house.inbox), what="the repeated file moved")
    finally:
        engine.stop()
    r = referral(db)
    assert r["status"] == "ready" and r["coverage_plan"] == "PPO GOLD"
    request = row(db, "SELECT * FROM payer_requests WHERE referral_id=1")
    assert (request["status"], request["outcome"]) == ("answered", "active")
    assert json.loads(request["result"])["copay"] == "40.00"
    assert sorted(p.name for p in (house.inbox / "processed").iterdir()) == [processed.name, processed.name + ".1"]
    assert not (house.inbox / "error").exists()
    applied = rows(db, "SELECT * FROM referral_events WHERE kind='payer_answer_file'")
    assert len(applied) == 1 and applied[0]["cause_id"].startswith("file:")
    assert len(rows(db, "SELECT * FROM referral_events WHERE kind='eligibility' AND to_value='active'")) == 1
    assert rows(db, "SELECT * FROM review_exceptions") == []


@pytest.mark.slow
def test_auth_required_referral_278_file_approved_then_ready(tmp_path):
    config = load_config(exchange_config(tmp_path, auth_specialties=("cardiology",)))
    house = Clearinghouse(config)
    engine = EngineThread(config).start()
    try:
        db = config.store_location
        send_orders(engine.port, order())
        wait_until(lambda: house.answer_all() == ["270"], what="the 270 answered")
        wait_until(lambda: referral(db).get("authorization_status") == "requested", what="the 278 queued")
        assert referral(db)["status"] == "auth_pending"
        wait_until(lambda: house.answer_all() == ["278"], what="the 278 file answered")
        wait_until(lambda: referral(db).get("status") == "ready", what="ready once approved")
    finally:
        engine.stop()
    r = referral(db)
    assert r["authorization_status"] == "approved" and r["authorization_number"].startswith("AUTH")
    assert r["authorization_valid_to"] > r["authorization_valid_from"]
    last = rows(db, "SELECT * FROM status_history ORDER BY id")[-1]
    assert (last["from_status"], last["to_status"], last["cause_kind"]) == ("auth_pending", "ready", "payer")
    assert sorted(q["outcome"] for q in rows(db, "SELECT outcome FROM payer_requests")) == ["active", "approved"]
    assert len(list((house.inbox / "processed").iterdir())) == 2


def test_garbage_unknown_trace_and_malformed_answers_go_to_error_with_reasons(tmp_path):
    path = exchange_config(tmp_path)
    config = load_config(path)
    house = Clearinghouse(config)
    engine = EngineThread(config).start()
    try:
        db = config.store_location
        send_orders(engine.port, order("BAD271A"), order(placer="ORD-2"))
        wait_until(lambda: len(list(house.outbox.glob("*.x12"))) == 2, what="two 270 files")
        house.drop("garbage.x12", b"%PDF-1.4 not an interchange\n")
        _, stranger = Payer(Rules.load(RULES)).answer(make_270())           # trace RE7-42: never sent
        house.drop("stranger.x12", stranger)
        (house.inbox / "half-written.x12.part").write_text("ISA*00*")         # still being written: left alone
        (house.inbox / ".hidden").write_text("x")
        house.answer_all()                       # BAD271A's 271 has a malformed amount (EB07)
        wait_until(lambda: inbox_empty(house.inbox), what="the inbox swept")
        wait_until(lambda: referral(db, 2).get("coverage_status") == "active", what="the good answer applied")
        # the engine is still fine: a new referral goes all the way through
        send_orders(engine.port, order(placer="ORD-3"))
        wait_until(lambda: house.answer_all() == ["270"], what="the third 270 answered")
        wait_until(lambda: referral(db, 3).get("coverage_status") == "active", what="the third applied")
    finally:
        engine.stop()
    errors = {p.name: p for p in (house.inbox / "error").iterdir()}
    assert sorted(errors) == ["answer-000000001.x12", "answer-000000001.x12.error.txt", "garbage.x12",
                              "garbage.x12.error.txt", "stranger.x12", "stranger.x12.error.txt"]
    assert errors["garbage.x12"].read_bytes() == b"%PDF-1.4 not an interchange\n"        # nothing lost
    assert "unreadable X12: ISA: not an X12 interchange" in errors["garbage.x12.error.txt"].read_text()
    assert "unknown trace: no request was sent with trace 'RE7-42'" in errors["stranger.x12.error.txt"].read_text()
    assert "handler error: X12Error: EB07: '4O.OO' is not a monetary amount" in \
        errors["answer-000000001.x12.error.txt"].read_text()
    assert (house.inbox / "half-written.x12.part").exists() and (house.inbox / ".hidden").exists()
    # the malformed answer: nothing half-applied, the request still asked, a review exception as over HTTP
    r = referral(db, 1)
    assert r["coverage_status"] == "pending" and r["status"] == "ready"
    assert row(db, "SELECT status FROM payer_requests WHERE referral_id=1")["status"] == "asked"
    exception = row(db, "SELECT * FROM review_exceptions WHERE referral_id=1")
    assert exception["event"] == "response.x12_270" and "EB07" in exception["reason"]
    assert "EB07" in row(db, "SELECT last_error FROM outbound WHERE referral_id=1")["last_error"]
    # the corrected answer arrives later and is applied by the CLI's sweep (engine stopped)
    request_270 = house.answered["000000001.x12"].replace("BAD271A", "W48213377")
    _, fixed = Payer(Rules.load(RULES)).answer(request_270)
    house.drop("corrected.x12", fixed.replace("W48213377", "BAD271A"))
    result = cli(path, "sweep", "payer_inbox")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"processed": 1, "error": 0, "skipped": 0}
    assert referral(db, 1)["coverage_status"] == "active"
    assert (house.inbox / "processed" / "corrected.x12").exists()


def test_a_file_destination_needs_an_inbox_and_the_error_says_so(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(exchange_config(tmp_path, inbox=False))
    text = str(err.value)
    assert "payers.destination: 'payer_outbox' is a file destination; expected webhook" in text
    assert "or file together with payers.inbox: PATH" in text and "config.yaml:" in text
    config = load_config(exchange_config(tmp_path))
    assert config.payers.inbox == tmp_path / "var" / "payer" / "inbox"
    result = cli(REPO / "config.yaml", "sweep", "payer_inbox")
    assert result.returncode == 2 and "payers.inbox is not set" in result.stderr
