"""Outbound connectors against real peers on loopback and real files.

MLLP sender -> tests.receivers.MLLPReceiver (real sockets, ACKs from the engine's
ACK builder); file writer and fax outbox -> real folders, PDFs checked with
poppler's pdfinfo/pdftotext; webhook -> a real HTTP server; SMTP -> aiosmtpd.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import time

import pytest
from fpdf import FPDF
from PIL import Image

from channels.fax_outbox import FaxOutbox, fax_number
from channels.file_writer import FileWriter
from channels.mllp.sender import MLLPSender, error_text
from channels.outbound import Delivery
from channels.smtp import SMTPSender
from channels.webhook import Webhook
from tests.receivers import Reply, free_port

pytestmark = pytest.mark.timeout(60)


def hl7(control_id: str, extra: bytes = b"", msh15: bytes = b"") -> bytes:
    return (b"MSH|^~\\&|REFHUB|SPECIALTY|EPIC|MERCY|20250601120000||SIU^S12^SIU_S12|" + control_id.encode()
            + b"|P|2.5.1" + (b"|||" + msh15 if msh15 else b"")
            + b"\rSCH||A1001|||||||30|min\rPID|1||MRN123^^^MERCY^MR||MULLER^JOSE" + extra)


def row(n: int, payload: bytes | None = None, control_id: str | None = "same-as-payload",
        message_type: str = "SIU^S12", attempt: int = 1) -> Delivery:
    if payload is None:
        payload = hl7(f"CTRL{n}")
    if control_id == "same-as-payload":
        control_id = payload.split(b"\r", 1)[0].split(b"|")[9].decode() if payload.startswith(b"MSH") else None
    return Delivery(n, "referring_ehr", message_type, control_id, payload, attempt)


def run(coro):
    return asyncio.run(coro)


async def deliver_all(sender, *deliveries):
    try:
        return [await sender.deliver(d) for d in deliveries]
    finally:
        await sender.close()


# --- MLLP sender ----------------------------------------------------------------------------------------

def test_mllp_aa_is_sent_and_the_peer_gets_the_exact_message(mllp_receiver):
    sender = MLLPSender("127.0.0.1", mllp_receiver.port)
    results = run(deliver_all(sender, row(1), row(2)))
    assert [r.outcome for r in results] == ["sent", "sent"]
    assert "MSA|AA|CTRL1" in results[0].ack and results[0].detail is None
    assert mllp_receiver.wait_for(2) == [hl7("CTRL1"), hl7("CTRL2")]
    assert mllp_receiver.connections == 1          # one persistent connection


@pytest.mark.parametrize("policy", ["retry", "dead", "sent"])
def test_mllp_ae_follows_the_on_error_policy(mllp_receiver, policy):
    mllp_receiver.script(Reply("AE", text="PID-3 unknown|MRN"))
    [result] = run(deliver_all(MLLPSender("127.0.0.1", mllp_receiver.port, on_error=policy), row(1)))
    assert result.outcome == policy
    assert "AE" in result.detail and "PID-3 unknown|MRN" in result.detail    # unescaped ERR/MSA-3 text
    assert "MSA|AE|CTRL1" in result.ack


def test_mllp_reject_is_dead_by_default_and_enhanced_codes_count_the_same(mllp_receiver):
    mllp_receiver.script(Reply("AR", text="unsupported trigger"), Reply("CR"), Reply("CA"), Reply("CE"))
    sender = MLLPSender("127.0.0.1", mllp_receiver.port)
    results = run(deliver_all(sender, row(1), row(2), row(3), row(4)))
    assert [r.outcome for r in results] == ["dead", "dead", "sent", "retry"]
    assert results[0].detail.startswith("AR (rejected)") and "unsupported trigger" in results[0].detail
    assert results[1].detail.startswith("CR (rejected)")
    mllp_receiver.script(Reply("AR"))
    [again] = run(deliver_all(MLLPSender("127.0.0.1", mllp_receiver.port, on_reject="retry"), row(5)))
    assert again.outcome == "retry"


def test_mllp_ack_timeout_retries_and_a_late_ack_is_not_taken_for_the_next_message(mllp_receiver):
    mllp_receiver.script(Reply(delay=0.6))       # answers CTRL1 after the sender gave up on it
    sender = MLLPSender("127.0.0.1", mllp_receiver.port, ack_timeout=0.3)

    async def scenario():
        started = time.monotonic()
        first = await sender.deliver(row(1))
        waited = time.monotonic() - started
        await asyncio.sleep(0.5)                 # the late ACK for CTRL1 is sent meanwhile
        second = await sender.deliver(row(2))
        await sender.close()
        return first, waited, second

    first, waited, second = run(scenario())
    assert first.outcome == "retry" and "no ACK" in first.detail and 0.25 < waited < 1.0
    assert second.outcome == "sent" and "MSA|AA|CTRL2" in second.ack
    assert mllp_receiver.connections == 2        # the timed-out connection was dropped


def test_mllp_ack_for_another_message_is_retried_on_a_new_connection(mllp_receiver):
    mllp_receiver.script(Reply(control_id="CTRL0"))
    results = run(deliver_all(MLLPSender("127.0.0.1", mllp_receiver.port), row(1), row(2)))
    assert results[0].outcome == "retry" and "MSA-2 'CTRL0'" in results[0].detail and "'CTRL1'" in results[0].detail
    assert results[1].outcome == "sent"
    assert mllp_receiver.connections == 2


def test_mllp_a_repeated_ack_for_an_earlier_message_is_not_taken_for_the_next(mllp_receiver):
    mllp_receiver.script(Reply(repeat=2))

    async def scenario(sender):
        first = await sender.deliver(row(1))
        await asyncio.sleep(0.1)                 # the second copy of CTRL1's ACK arrives while idle
        second = await sender.deliver(row(2))
        await sender.close()
        return first, second

    first, second = run(scenario(MLLPSender("127.0.0.1", mllp_receiver.port)))
    assert first.outcome == second.outcome == "sent" and "MSA|AA|CTRL2" in second.ack
    assert mllp_receiver.connections == 1


def test_mllp_peer_down_retries_at_once_then_backs_off_then_delivers_when_back(mllp_receiver):
    port = mllp_receiver.port
    mllp_receiver.stop()
    sender = MLLPSender("127.0.0.1", port, reconnect_backoff=(0.2, 0.4))

    async def scenario():
        started = time.monotonic()
        down = await sender.deliver(row(1))
        fast = time.monotonic() - started
        backing_off = await sender.deliver(row(1, attempt=2))     # no connect attempt: not hammering
        mllp_receiver.start()
        await asyncio.sleep(0.25)
        back = await sender.deliver(row(1, attempt=3))
        await sender.close()
        return down, fast, backing_off, back

    down, fast, backing_off, back = run(scenario())
    assert down.outcome == "retry" and f"cannot connect to 127.0.0.1:{port}" in down.detail and fast < 0.5
    assert backing_off.outcome == "retry" and "next attempt in" in backing_off.detail
    assert back.outcome == "sent"
    assert mllp_receiver.wait_for(1) == [hl7("CTRL1")]


def test_mllp_peer_going_down_mid_session_and_coming_back(mllp_receiver):
    sender = MLLPSender("127.0.0.1", mllp_receiver.port, reconnect_backoff=(0.05, 0.1))

    async def scenario():
        assert (await sender.deliver(row(1))).outcome == "sent"
        mllp_receiver.stop()
        await asyncio.sleep(0.05)
        down = await sender.deliver(row(2))
        mllp_receiver.start()
        await asyncio.sleep(0.15)
        back = await sender.deliver(row(2, attempt=2))
        await sender.close()
        return down, back

    down, back = run(scenario())
    assert down.outcome == "retry" and back.outcome == "sent"
    assert mllp_receiver.wait_for(2) == [hl7("CTRL1"), hl7("CTRL2")]


def test_mllp_peer_closing_between_messages_reconnects_and_sends_once(mllp_receiver, caplog):
    caplog.set_level("INFO", logger="engine.mllp.sender")
    mllp_receiver.script(Reply(close=True))      # the peer hangs up after ACKing the first message
    sender = MLLPSender("127.0.0.1", mllp_receiver.port)

    async def scenario():
        first = await sender.deliver(row(1))
        for _ in range(200):                     # the FIN reaches the sender while idle
            if not sender.connected:
                break
            await asyncio.sleep(0.01)
        second = await sender.deliver(row(2))
        third = await sender.deliver(row(3))
        mllp_receiver.close_connections()        # blocking: the sender's loop has not seen this FIN yet
        fourth = await sender.deliver(row(4))    # written on the stale connection, then resent once
        await sender.close()
        return first, second, third, fourth

    results = run(scenario())
    assert [r.outcome for r in results] == ["sent"] * 4
    assert mllp_receiver.wait_for(4) == [hl7(f"CTRL{i}") for i in (1, 2, 3, 4)]   # each exactly once
    assert mllp_receiver.connections == 3
    assert sum("closed the idle connection" in r.getMessage() for r in caplog.records) == 1   # the 4th only


def test_mllp_large_message_is_delivered_whole(mllp_receiver):
    note = b"OBX|1|ED|PDF^Consult note||^application^pdf^Base64^" + base64.b64encode(os.urandom(3_750_000))
    payload = hl7("BIG1", extra=b"\r" + note)
    assert len(payload) > 5_000_000
    [result] = run(deliver_all(MLLPSender("127.0.0.1", mllp_receiver.port), row(1, payload)))
    assert result.outcome == "sent"
    assert mllp_receiver.wait_for(1)[0] == payload


def test_mllp_unsendable_rows_are_dead_without_touching_the_peer(mllp_receiver):
    sender = MLLPSender("127.0.0.1", mllp_receiver.port, max_message_bytes=1000)
    results = run(deliver_all(sender, row(1, hl7("X", extra=b"\rNTE|" + b"x" * 2000)),
                              row(2, b"PID|1||123", control_id="C2"),
                              row(3, hl7("CTRL3"), control_id="OTHER")))
    assert [r.outcome for r in results] == ["dead"] * 3
    assert "over this destination's limit of 1,000 bytes" in results[0].detail
    assert "not a sendable HL7 message" in results[1].detail
    assert "differs from the payload's MSH-10" in results[2].detail
    assert mllp_receiver.messages == []


def test_mllp_close_ends_a_delivery_in_flight_as_retry(mllp_receiver):
    sender = MLLPSender("127.0.0.1", mllp_receiver.port, ack_timeout=5)

    async def scenario():
        assert (await sender.deliver(row(1, hl7("WARM")))).outcome == "sent"    # a reused connection
        mllp_receiver.script(Reply(answer=False))
        in_flight = asyncio.create_task(sender.deliver(row(2)))
        await asyncio.sleep(0.2)
        await sender.close()
        return await in_flight, await sender.deliver(row(3))

    in_flight, after = run(scenario())
    assert in_flight.outcome == "retry" and after.outcome == "retry" and "closed" in after.detail
    assert mllp_receiver.control_ids() == ["WARM", "CTRL2"]                    # not resent after close


def test_error_text_reads_old_and_new_err_segments():
    v24 = b"MSH|^~\\&|A|B|C|D|1||ACK|1|P|2.4\rMSA|AE|9\rERR|PID^1^3^204&Unknown key identifier&HL70357\r"
    v25 = b"MSH|^~\\&|A|B|C|D|1||ACK|1|P|2.5\rMSA|AE|9|Bad\\F\\id\rERR||PID^1^3|204^Unknown key^HL70357|E||||MRN 1\r"
    assert error_text(v24) == "204 Unknown key identifier"
    assert error_text(v25) == "Bad|id; MRN 1; 204 Unknown key"


# --- file writer ----------------------------------------------------------------------------------------

def test_file_writer_writes_atomically_and_resends_idempotently(tmp_path):
    folder = tmp_path / "out"
    writer = FileWriter(folder)
    first, again = run(deliver_all(writer, row(1), row(1, attempt=2)))
    assert first.outcome == "sent" and again.outcome == "sent" and "already written" in again.detail
    assert (folder / "CTRL1.hl7").read_bytes() == hl7("CTRL1")
    assert sorted(p.name for p in folder.iterdir()) == ["CTRL1.hl7"]         # no temp file left behind

    clash = row(2, hl7("CTRL1", extra=b"\rNTE|different"))
    [result] = run(deliver_all(writer, clash))
    assert result.outcome == "retry" and "different content" in result.detail
    assert (folder / "CTRL1.hl7").read_bytes() == hl7("CTRL1")               # never overwritten


def test_file_writer_name_pattern_and_disk_errors(tmp_path):
    writer = FileWriter(tmp_path, name_pattern="{destination}_{message_type}_{control_id}.hl7")
    [result] = run(deliver_all(writer, row(7, hl7("../evil"))))
    assert result.outcome == "sent"
    assert [p.name for p in tmp_path.iterdir()] == ["referring_ehr_SIU_S12_.._evil.hl7"]
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    [result] = run(deliver_all(FileWriter(blocked / "out"), row(1)))
    assert result.outcome == "retry" and "cannot write" in result.detail
    with pytest.raises(ValueError, match="name pattern"):
        FileWriter(tmp_path, name_pattern="{patient}.hl7")


# --- fax outbox -----------------------------------------------------------------------------------------

NOTE = "\n\n".join(f"Assessment {i}: exertional chest pain, stress echo négatif, follow-up in clinic "
                   f"with the referring physician; continue aspirin and statin therapy." * 3 for i in range(40))


def fax_request(**overrides) -> bytes:
    doc = {"to_fax": "(541) 555-0142", "to_name": "Dr. Zoë Adams", "subject": "Consult note",
           "kind": "consult_note",
           "referral": {"id": 1042, "patient_name": "José Müller", "patient_dob": "1958-03-14",
                        "specialty": "Cardiology", "status": "seen"},
           "body": NOTE, "attachments": []}
    doc.update(overrides)
    return json.dumps(doc).encode()


def pdf_text(path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def pdf_pages(path) -> int:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    return int(next(line.split()[1] for line in info.splitlines() if line.startswith("Pages:")))


def test_fax_outbox_builds_a_multipage_pdf_then_its_sidecar(tmp_path):
    outbox = FaxOutbox(tmp_path, sender_name="Valley Cardiology", sender_fax="541-555-0100")
    [result] = run(deliver_all(outbox, row(42, fax_request(), control_id=None, message_type="fax")))
    assert result.outcome == "sent", result.detail
    pdf, sidecar = tmp_path / "consult_note-42.pdf", tmp_path / "consult_note-42.json"
    pages = pdf_pages(pdf)
    assert pages >= 3                                   # cover + a note longer than one page
    text = pdf_text(pdf)
    assert "José Müller" in text and "Dr. Zoë Adams" in text and "(541) 555-0142" in text
    assert "Referral ID: 1042" in text and "1958-03-14" in text
    assert "stress echo négatif" in text and "Assessment 39" in text
    assert f"{pages} (including this cover page)" in text and f"Page {pages} of {pages}" in text
    assert "CONFIDENTIALITY NOTICE" in text
    meta = json.loads(sidecar.read_text())
    assert meta["fax_number"] == "5415550142" and meta["pdf"] == pdf.name and meta["pages"] == pages
    assert sidecar.stat().st_mtime_ns >= pdf.stat().st_mtime_ns          # the cue comes after the PDF
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([pdf.name, sidecar.name])

    [again] = run(deliver_all(outbox, row(42, fax_request(), control_id=None, message_type="fax", attempt=2)))
    assert again.outcome == "sent" and "already" in again.detail


def test_fax_outbox_appends_pdf_and_image_attachments(tmp_path):
    lab = FPDF()
    for label in ("Lab report page one", "Lab report page two"):
        lab.add_page()
        lab.set_font("helvetica", size=14)
        lab.cell(0, 10, label)
    attachment = {"content_type": "application/pdf", "base64": base64.b64encode(bytes(lab.output())).decode()}
    png = io.BytesIO()
    Image.new("L", (400, 300), 200).save(png, "PNG")
    image = {"content_type": "image/png", "base64": base64.b64encode(png.getvalue()).decode()}
    payload = fax_request(body="Short status letter.", kind="status_letter", attachments=[attachment, image])
    [result] = run(deliver_all(FaxOutbox(tmp_path), row(5, payload, control_id=None, message_type="fax")))
    assert result.outcome == "sent", result.detail
    pdf = tmp_path / "status_letter-5.pdf"
    assert pdf_pages(pdf) == 5                          # cover, letter, the image, 2 attached PDF pages
    text = pdf_text(pdf)
    assert "Lab report page two" in text and "5 (including this cover page)" in text
    assert "Page 3 of 5" in text                        # the image page is one of ours, footed
    assert json.loads((tmp_path / "status_letter-5.json").read_text())["pages"] == 5


@pytest.mark.parametrize("to_fax, why", [("555-12", "not a fax number"), ("", "no destination fax number"),
                                         ("call me", "not a fax number")])
def test_fax_outbox_without_a_valid_fax_number_is_dead(tmp_path, to_fax, why):
    [result] = run(deliver_all(FaxOutbox(tmp_path), row(1, fax_request(to_fax=to_fax), control_id=None)))
    assert result.outcome == "dead" and why in result.detail
    assert list(tmp_path.iterdir()) == []


def test_fax_outbox_refuses_unusable_payloads(tmp_path):
    bad_pdf = {"content_type": "application/pdf", "base64": base64.b64encode(b"%PDF-1.4 broken").decode()}
    results = run(deliver_all(FaxOutbox(tmp_path), row(1, b"not json", control_id=None),
                              row(2, fax_request(attachments=[bad_pdf]), control_id=None),
                              row(3, fax_request(body="", attachments=[]), control_id=None)))
    assert [r.outcome for r in results] == ["dead"] * 3
    assert "not UTF-8 JSON" in results[0].detail
    assert "cannot be read" in results[1].detail
    assert "nothing to fax" in results[2].detail
    assert list(tmp_path.iterdir()) == []


def test_fax_numbers():
    assert fax_number("+1 (541) 555-0142") == "5415550142" == fax_number("15415550142")
    assert fax_number("+44 20 7946 0958") == "+442079460958"
    assert fax_number("0415550142") is None and fax_number("541-555-014") is None and fax_number(None) is None


# --- webhook --------------------------------------------------------------------------------------------

def test_webhook_outcomes_by_status_class(http_receiver):
    statuses = [200, 202, 400, 401, 404, 408, 429, 500, 503]
    http_receiver.statuses.extend(statuses)
    hook = Webhook(http_receiver.url, headers={"Authorization": "Bearer test"})
    sms = json.dumps({"to": "+15415550142", "text": "Your appointment is on June 3"}).encode()
    results = run(deliver_all(hook, *[row(i, sms, control_id=None, message_type="sms") for i in range(len(statuses))]))
    assert [r.outcome for r in results] == ["sent", "sent", "dead", "dead", "dead", "retry", "retry", "retry", "retry"]
    assert results[0].ack.startswith("HTTP 200") and "HTTP 404 Not Found" in results[4].detail
    received = http_receiver.wait_for(len(statuses))
    assert received[0].body == sms and received[0].path == "/sms"
    assert received[0].headers["Authorization"] == "Bearer test"
    assert received[3].headers["Idempotency-Key"] == "referring_ehr-3"


def test_webhook_unreachable_or_slow_is_retry(http_receiver):
    [down] = run(deliver_all(Webhook(f"http://127.0.0.1:{free_port()}/sms", timeout=2), row(1, b"{}")))
    assert down.outcome == "retry" and "cannot reach" in down.detail
    http_receiver.delay = 0.5
    [slow] = run(deliver_all(Webhook(http_receiver.url, timeout=0.2), row(1, b"{}")))
    assert slow.outcome == "retry" and "timeout" in slow.detail


def test_webhook_errors_never_show_credentials_in_the_url(http_receiver):
    port = free_port()
    [down] = run(deliver_all(Webhook(f"http://gw:s3cret@127.0.0.1:{port}/sms?api_key=K3Y", timeout=2), row(1, b"{}")))
    assert down.outcome == "retry" and f"http://127.0.0.1:{port}/sms" in down.detail
    assert "s3cret" not in down.detail and "K3Y" not in down.detail


# --- SMTP -----------------------------------------------------------------------------------------------

def email_payload(**overrides) -> bytes:
    doc = {"to": "jose.muller@example.org", "subject": "Your cardiology appointment",
           "body": "Bonjour José, your appointment is on June 3 at 09:30.", "html": "<p>June 3, 09:30</p>"}
    doc.update(overrides)
    return json.dumps(doc).encode()


def test_smtp_delivers_to_a_real_server(smtp_receiver):
    sender = SMTPSender("127.0.0.1", smtp_receiver.port, sender="referrals@clinic.example")
    [result] = run(deliver_all(sender, row(9, email_payload(), control_id=None, message_type="email")))
    assert result.outcome == "sent" and result.ack.startswith("250")
    [mail] = smtp_receiver.wait_for(1)
    assert mail.mail_from == "referrals@clinic.example" and mail.rcpt_tos == ["jose.muller@example.org"]
    assert mail.message["Subject"] == "Your cardiology appointment"
    assert mail.message["Message-ID"] == "<referring_ehr.9@clinic.example>"     # the same on every resend
    assert "Bonjour José" in mail.message.get_body(("plain",)).get_content()
    assert "June 3, 09:30" in mail.message.get_body(("html",)).get_content()


def test_smtp_refusals_and_outages(smtp_receiver):
    sender = SMTPSender("127.0.0.1", smtp_receiver.port, sender="referrals@clinic.example")
    smtp_receiver.rcpt_reply = "550 5.1.1 no such user"
    [refused] = run(deliver_all(sender, row(1, email_payload())))
    assert refused.outcome == "dead" and "RCPT TO refused" in refused.detail and "550 5.1.1" in refused.detail
    smtp_receiver.rcpt_reply = None
    smtp_receiver.data_replies.append("451 4.3.0 try again later")
    [later] = run(deliver_all(sender, row(2, email_payload())))
    assert later.outcome == "retry" and "451" in later.detail
    [bad] = run(deliver_all(sender, row(3, email_payload(to="not-an-address"))))
    assert bad.outcome == "dead" and "recipient" in bad.detail
    [down] = run(deliver_all(SMTPSender("127.0.0.1", free_port(), sender="a@b.example", timeout=2),
                             row(4, email_payload())))
    assert down.outcome == "retry" and "cannot deliver" in down.detail
    assert smtp_receiver.messages == []


@pytest.mark.slow
def test_bench_outbound_sender_only_runs(capsys):
    from bench.bench_outbound import main
    main(["--sender-only", "-n", "300", "--rounds", "1", "--warmup", "0", "--json"])
    trials = json.loads(capsys.readouterr().out)
    assert {t["messages"] for runs in trials.values() for t in runs} == {300}
    assert all(t["errors"] == 0 and t["msgs_per_s"] > 0 for runs in trials.values() for t in runs)
