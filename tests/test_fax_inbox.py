"""The fax drop folder: claim, read (real tesseract), file as referral / review item / error, survive crashes."""
from __future__ import annotations

import json
import shutil
import socket
import sqlite3
from pathlib import Path

import pytest

from channels.fax.completeness import InboxTracker
from engine.config import ConfigError, FaxReview, load_config
from engine.fax_intake import FaxResult, commit_fax, review_reasons, to_mapped
from engine.store import Journal
from tests.conftest import REPO, EngineProcess, EngineThread, open_store, sample, wait_until, write_config

pytestmark = pytest.mark.store

FAXES = REPO / "sample_messages" / "faxes"
TEXT_PDF = FAXES / "fax_2026_0002.pdf"        # EHR printout with a text layer
TIFF = FAXES / "fax_2026_0010.tif"            # EHR printout, fine-resolution G4 TIFF (OCR)
TWO_PAGES = FAXES / "fax_2026_0014.tif"       # two pages, standard resolution


def fax_config(tmp_path: Path, extra: str = "", completeness: str = "rename", **kwargs) -> Path:
    return write_config(tmp_path, channel_extra=f"""
  - name: fax_inbound
    source:
      type: fax_folder
      completeness: {completeness}
      poll_seconds: 0.5
      workers: 1
{extra}
""", **kwargs)


def wait_for(predicate, timeout: float = 90.0, what: str = "condition"):
    return wait_until(predicate, timeout, what, step=0.1)


def drop(target: Path, source: Path | None = None, data: bytes | None = None) -> None:
    """As a fax server does under the `rename` rule: write NAME.part, then rename it to NAME."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)    # the engine may still be starting its fax channel
    if source is not None:
        shutil.copyfile(source, part)
    else:
        part.write_bytes(data)
    part.rename(target)


def db(config) -> sqlite3.Connection:
    """The engine's store (SQLite file or PostgreSQL database), rows readable by column name."""
    conn = open_store(config.store_location)
    conn.row_factory = sqlite3.Row        # PostgreSQL rows read by name already (the attribute is ignored)
    return conn


def folder(tmp_path: Path, name: str) -> list[str]:
    return sorted(p.name for p in (tmp_path / "var" / "fax" / name).iterdir())


def truth(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def mllp_ack(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x0b" + sample("ADT_A04_v2.4.hl7") + b"\x1c\r")
        data = b""
        while not data.endswith(b"\x1c\r"):
            data += s.recv(65536)
    return data


# ---- pure parts --------------------------------------------------------------------------------

def test_stable_seconds_waits_until_size_and_mtime_settle():
    t = InboxTracker("stable_seconds", stable_seconds=2.0)
    assert t.ready({"a.tif": (10, 1)}, now=0.0) == []
    assert t.ready({"a.tif": (20, 2)}, now=1.5) == []          # still growing: the clock restarts
    assert t.ready({"a.tif": (20, 2)}, now=3.0) == []
    assert t.ready({"a.tif": (20, 2)}, now=3.6) == ["a.tif"]
    assert t.ready({".hidden": (1, 1), "x.done": (0, 1)}, now=10.0) == []


def test_rename_rule_ignores_partial_names_and_sidecar_rule_waits_for_done():
    r = InboxTracker("rename")
    assert r.ready({"a.pdf.part": (5, 1), "b.tmp": (5, 1), "c.pdf": (5, 1)}, now=0) == ["c.pdf"]
    s = InboxTracker("sidecar")
    assert s.ready({"a.pdf": (5, 1)}, now=0) == []
    assert s.ready({"a.pdf": (5, 1), "a.pdf.done": (0, 1)}, now=1) == ["a.pdf"]


def test_review_gate_names_missing_and_unconfident_fields_and_bad_npi():
    review = FaxReview(required=["patient_dob", "patient_family_name"], min_confidence={"patient_dob": 0.9},
                       default_min_confidence=0.5)
    extraction = {"patient_family_name": "Doe", "patient_dob": "1950-01-02", "referring_provider_npi": "1234567890",
                  "confidence": {"patient_family_name": 0.95, "patient_dob": 0.7, "referring_provider_npi": 0.99}}
    reasons = review_reasons(extraction, review)
    assert "patient_dob: confidence 0.70 below 0.90" in reasons
    assert "referring_provider_npi: check digit does not match" in reasons
    assert not any("family" in r for r in reasons)
    assert review_reasons({"confidence": {}}, review) == ["patient_dob: not found", "patient_family_name: not found"]
    good = {**extraction, "patient_dob": "1950-01-02", "referring_provider_npi": "1234567893",
            "confidence": {"patient_family_name": 0.95, "patient_dob": 0.95, "referring_provider_npi": 0.99}}
    assert review_reasons(good, review) == []


def test_fax_folder_config_defaults_and_errors_name_the_key(tmp_path):
    cfg = load_config(fax_config(tmp_path))
    src = cfg.channels[1].source
    assert src.inbox == tmp_path / "var" / "fax" / "inbox"
    assert src.processing == tmp_path / "var" / "fax" / "processing" and src.error == tmp_path / "var" / "fax" / "error"
    bad = fax_config(tmp_path, extra="      completeness: when_ready\n      review: {required: [patient_shoe_size]}")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    text = str(exc.value)
    assert "channels[1].source.completeness" in text and "stable_seconds" in text
    assert "channels[1].source.review.required" in text and "patient_dob" in text


def _extraction(**over) -> dict:
    base = {"patient_family_name": "Quill", "patient_given_name": "Ada", "patient_dob": "1961-04-05",
            "patient_sex": "F", "referring_provider_name": "Lee Ortiz", "referring_provider_npi": "1234567893",
            "referred_to_specialty": "cardiology", "urgency": "urgent", "diagnosis_codes": ["I48.91"],
            "reason": "Palpitations", "referring_practice_fax": "5555550142", "pages": 1, "warnings": [],
            "ocr_text": "REFERRAL ..."}
    base.update(over)
    base["confidence"] = {k: 0.99 for k in base}
    return base


def test_commit_fax_files_duplicates_addenda_and_recovered_files_once(store_url):
    journal = Journal(store_url)
    conn = journal.conn

    def file(name, sha, recovered=False, **over):
        conn.execute("BEGIN IMMEDIATE")
        filed = commit_fax(conn, FaxResult("fax", name, sha, "2026-11-23T10:00:00+00:00", recovered=recovered,
                                           extraction=_extraction(**over)))
        conn.execute("COMMIT")
        return filed
    first = file("a.tif", "h1")
    assert first.status == "accepted"
    r = conn.execute("SELECT status, origin, specialty, referring_npi FROM referrals").fetchone()
    assert tuple(r) == ("ready", "fax", "cardiology", "1234567893")    # received, then judged complete
    assert [tuple(h) for h in conn.execute("SELECT from_status, to_status FROM status_history ORDER BY id")] == [
        (None, "received"), ("received", "ready")]
    assert file("copy-of-a.tif", "h1").status == "duplicate"
    assert file("a.tif", "h1", recovered=True).status == "already_filed"
    more = file("a-page3.tif", "h2", reason="Echo report attached")
    assert (more.status, more.referral_id) == ("addendum", first.referral_id)
    other = file("b.tif", "h3", referred_to_specialty="neurology")
    assert other.status == "accepted" and other.referral_id != first.referral_id
    assert conn.execute("SELECT count(*) FROM referrals").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM documents WHERE referral_id=?", (first.referral_id,)).fetchone()[0] == 2
    assert to_mapped(_extraction(), "2026-11-23").providers[0].family_name == "Ortiz"
    journal.close()


# ---- the channel in a running engine (real files, real tesseract, the real store) ---------------

@pytest.mark.slow
def test_drop_to_referral_duplicate_and_bad_files_while_mllp_keeps_serving(tmp_path):
    cfg = fax_config(tmp_path, extra="      max_pages: 1\n      review: {required: [], min_confidence: {}, "
                                     "default_min_confidence: 0.0}")
    e = EngineThread(load_config(cfg)).start()
    try:
        inbox = tmp_path / "var" / "fax" / "inbox"
        drop(inbox / "a-referral.pdf", TEXT_PDF)
        drop(inbox / "b-copy.pdf", TEXT_PDF)
        drop(inbox / "empty.pdf", data=b"")
        drop(inbox / "corrupt.pdf", data=b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ntruncated")
        drop(inbox / "notes.txt", data=b"not a fax at all")
        _encrypted_pdf(tmp_path / "locked.pdf")
        drop(inbox / "locked.pdf", tmp_path / "locked.pdf")
        drop(inbox / "two-pages.tif", TWO_PAGES)                 # max_pages is 1
        (inbox / "still-writing.pdf.part").write_bytes(b"%PDF-")  # rename rule: not complete yet
        fax = e.engine.fax_channels[0]
        wait_for(lambda: len(fax.filed) >= 7, what="seven faxes filed")
        ack = mllp_ack(e.port)                                       # the engine kept serving MLLP
        assert b"MSA|AA|" in ack or b"MSA|CA|" in ack
    finally:
        e.stop()
    conn = db(e.config)
    rows = {r["file_name"]: r for r in conn.execute("SELECT * FROM faxes")}
    assert rows["a-referral.pdf"]["status"] == "accepted"
    assert rows["b-copy.pdf"]["status"] == "duplicate"
    assert rows["b-copy.pdf"]["referral_id"] == rows["a-referral.pdf"]["referral_id"]
    referrals = conn.execute("SELECT * FROM referrals").fetchall()
    assert len(referrals) == 1 and referrals[0]["status"] in ("ready", "incomplete") and \
        referrals[0]["origin"] == "fax"
    t = truth(TEXT_PDF)
    assert referrals[0]["patient_family_name"].lower() == t["patient_family_name"].lower()
    assert conn.execute("SELECT kind FROM documents WHERE referral_id=?", (referrals[0]["id"],)).fetchone()[0] == "fax"
    assert conn.execute("SELECT to_status, cause_kind FROM status_history ORDER BY id").fetchall()[0][:] == ("received", "fax")
    expected = {"empty.pdf": "empty", "corrupt.pdf": "corrupt", "notes.txt": "not_a_document",
                "locked.pdf": "encrypted", "two-pages.tif": "too_many_pages"}
    for name, reason in expected.items():
        assert rows[name]["status"] == "error" and rows[name]["error_reason"] == reason, name
        assert (tmp_path / "var/fax/error" / name).exists()
        assert reason in (tmp_path / "var/fax/error" / f"{name}.error.txt").read_text()
    assert folder(tmp_path, "processed") == ["a-referral.pdf", "b-copy.pdf"]
    assert [p for p in (tmp_path / "var/fax/processing").rglob("*") if p.is_file()] == []
    assert folder(tmp_path, "inbox") == ["still-writing.pdf.part"]


def _encrypted_pdf(path: Path) -> None:
    from fpdf import FPDF
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.text(20, 20, "Referral - password protected")
    pdf.set_encryption(owner_password="owner-secret", user_password="user-secret")
    pdf.output(str(path))


@pytest.mark.slow
def test_low_confidence_fax_waits_in_needs_review_with_page_images_and_text(tmp_path):
    cfg = fax_config(tmp_path, completeness="stable_seconds",
                     extra="      stable_seconds: 0.5\n      review: {default_min_confidence: 1.0, min_confidence: {}}")
    e = EngineThread(load_config(cfg)).start()
    try:
        shutil.copyfile(TIFF, tmp_path / "var/fax/inbox" / "scan.tif")    # written in place: waits until stable
        wait_for(lambda: e.engine.fax_channels[0].filed, what="the fax filed")
    finally:
        e.stop()
    conn = db(e.config)
    fax = conn.execute("SELECT * FROM faxes").fetchone()
    assert fax["status"] == "needs_review"
    assert any("below 1.00" in r for r in json.loads(fax["review_reasons"]))
    referral = conn.execute("SELECT * FROM referrals WHERE id=?", (fax["referral_id"],)).fetchone()
    assert referral["status"] == "needs_review"
    exc = conn.execute("SELECT reason FROM review_exceptions WHERE referral_id=?", (referral["id"],)).fetchone()
    assert exc["reason"].startswith("fax needs review:") and "confidence" in exc["reason"]
    pages = Path(fax["pages_dir"])
    assert (pages / "ocr.txt").read_text().strip() and fax["ocr_text"]
    assert [p for p in pages.iterdir() if p.suffix in (".png", ".tif", ".tiff", ".jpg")]


@pytest.mark.slow
def test_kill_9_during_processing_then_the_fax_is_filed_exactly_once(tmp_path, backend):
    from channels.fax.watcher import claim_folder
    cfg = fax_config(tmp_path)
    # one node claims into processing/; nodes sharing a PostgreSQL store each into processing/NODE/
    processing = claim_folder(tmp_path / "var/fax/processing", load_config(cfg).node_name if backend else None)
    engine = EngineProcess(cfg).start()
    drop(tmp_path / "var/fax/inbox" / "long.tif", TWO_PAGES)
    wait_for(lambda: (processing / "long.tif").exists(), 30, "the claim into processing/")
    engine.kill()                                            # SIGKILL while tesseract reads it
    assert (processing / "long.tif").exists()
    assert not (tmp_path / "var/fax/processed").exists() or folder(tmp_path, "processed") == []
    engine = EngineProcess(cfg).start()
    try:
        wait_for(lambda: (tmp_path / "var/fax/processed/long.tif").exists(), 120, "the fax filed after restart")
        # the crash after the commit: the same file back in processing/ is recognised, not filed twice
        shutil.copy(tmp_path / "var/fax/processed/long.tif", processing / "long.tif")
    finally:
        assert engine.terminate() == 0
    engine = EngineProcess(cfg).start()
    try:
        wait_for(lambda: (tmp_path / "var/fax/processed/long.1.tif").exists(), 60, "the recovered copy filed")
    finally:
        assert engine.terminate() == 0
    conn = db(engine.config)
    assert [r["status"] for r in conn.execute("SELECT status FROM faxes")] in (["accepted"], ["needs_review"])
    assert conn.execute("SELECT count(*) FROM referrals").fetchone()[0] == 1
    assert sorted(p.name for p in processing.iterdir()) == []
