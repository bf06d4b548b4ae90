"""The dashboard end to end: a real engine process (`run_engine.py run`) with the web enabled, real
MLLP traffic, and Debian's chromium driven by Playwright: log in, find a message by control id,
reprocess it, work a referral, see the KPI charts, pause and resume a channel (the listener really
stops accepting), read /metrics (ACK counts and latency recorded by the engine process).

Screenshots of the main pages go to $WEB_SCREENSHOTS_DIR (the README's are made with
`WEB_SCREENSHOTS_DIR=docs/screenshots`), else to the test's temp folder.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from channels.mllp.client import MLLPClient, msa
from engine.web.demo import order
from tests.conftest import EngineProcess, free_port, open_store, wait_until

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "browser test password"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.slow, pytest.mark.store]


def wait_for(predicate, timeout: float = 20.0, step: float = 0.1):
    return wait_until(predicate, timeout, getattr(predicate, "__name__", "condition"), step)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def query(db, sql: str, args: tuple = ()) -> list[tuple]:
    """One query on the engine's store (SQLite file or PostgreSQL URL) on a connection of its own,
    closed at once (the tests poll: an unclosed connection per poll would pile up on a server)."""
    conn = open_store(db)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def running(tmp_path_factory, backend_name, request):
    """One engine for the module, on this run's backend: the data folder's SQLite file, or a fresh
    database of the session's PostgreSQL cluster (written into the config, so every process started
    from it, the `user add` commands included, uses the same store)."""
    tmp = tmp_path_factory.mktemp("webe2e")
    web_port, mllp_port = free_port(), free_port()
    cluster = request.getfixturevalue("pg_cluster") if backend_name == "postgresql" else None
    store_url = cluster.new_database() if cluster is not None else "sqlite:///./var/engine.db"
    path = tmp / "config.yaml"
    path.write_text(f"""
data_dir: ./var
store:
  url: {store_url}
logging:
  level: INFO
  format: json
  file: ./var/logs/engine.log
processing:
  isolation: thread
web:
  enabled: true
  host: 127.0.0.1
  port: {web_port}
channels:
  - name: ehr_inbound
    source: {{type: mllp, host: 127.0.0.1, port: {mllp_port}}}
    transformer: {{mappings: {REPO / 'mappings'}}}
    destinations:
      - {{name: specialist_ehr, type: file, directory: ./var/specialist}}
  - name: fax_inbox
    source:
      type: fax_folder
      workers: 1
      stable_seconds: 0.3
      poll_seconds: 0.5
      review:      # every field below 1.0 confidence: the fax waits for a coordinator
        default_min_confidence: 1.0
        min_confidence: {{patient_family_name: 1.0, patient_given_name: 1.0, patient_dob: 1.0,
                          referred_to_specialty: 1.0}}
outbound:
  templates: {REPO / 'mappings' / 'outbound'}
  rules:     # a fax accepted in review registers the patient and creates the order (through the engine)
    - {{name: register_faxed_patient, on: [fax.accepted], send: adt_a04, to: specialist_ehr}}
    - {{name: order_faxed_referral, on: [fax.accepted], send: orm_o01, to: specialist_ehr}}
schedules:
  retry_pump_seconds: 0.5
outreach:
  templates: {REPO / 'mappings' / 'outreach'}
""")
    for name, role in (("ana", "analyst"), ("cora", "coordinator")):
        r = subprocess.run([sys.executable, str(REPO / "run_engine.py"), "user", "add", name, "--role", role,
                            "--config", str(path)], input=PASSWORD + "\n", text=True, capture_output=True, cwd=REPO)
        assert r.returncode == 0, r.stderr
    engine = EngineProcess(path).start()
    base = f"http://127.0.0.1:{web_port}"
    try:
        wait_for(lambda: http_ok(base + "/health"), timeout=30)
        with MLLPClient("127.0.0.1", mllp_port) as client:
            for i in range(4):
                orm, siu = order(i)
                assert msa(client.send(orm))[0] in ("AA", "CA")   # CA: MSH-15 asks for enhanced mode
            for i in (0, 2):
                assert msa(client.send(order(i)[1]))[0] in ("AA", "CA")
        db = engine.config.store_location
        wait_for(lambda: query(db, "SELECT count(*) FROM messages WHERE status='transformed'")[0][0] == 6)
        yield engine, base, mllp_port, db
    finally:
        code = engine.terminate()
        if cluster is not None:
            cluster.drop_database(store_url)
        assert code == 0, engine.stderr()
        assert not http_ok(base + "/health")         # the web process stopped with the engine


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("WEB_SCREENSHOTS_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def log_in(browser, base: str, name: str):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(base + "/channels")
    assert "/login" in page.url
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/channels")
    return page


def snap(page, shots: Path, name: str) -> None:
    target = shots / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000


def test_analyst_finds_a_message_and_reprocesses_it(running, browser, shots):
    engine, base, mllp_port, db = running
    page = log_in(browser, base, "ana")
    assert page.locator("tr[data-channel=ehr_inbound]").inner_text().count("running") == 1
    snap(page, shots, "channels")
    page.click("text=Messages")
    page.fill("input[name=control_id]", "DEMO-SIU-0002")
    page.click("form.filters button[type=submit]")
    rows = page.locator("#messages tbody tr")
    assert rows.count() == 1 and "DEMO-SIU-0002" in rows.inner_text()
    page.goto(base + "/messages")
    snap(page, shots, "messages")
    page.goto(base + "/messages?control_id=DEMO-SIU-0002")
    rows.locator("a").first.click()
    assert page.locator("#status").inner_text() == "transformed"
    assert page.locator("text=Patient Name").count() >= 1
    snap(page, shots, "message")
    message_id = int(page.url.rsplit("/", 1)[1])
    page.click("#reprocess")
    assert page.locator(".notice").inner_text() == "Queued for processing again."
    # The engine's processor runs it again (idempotent for its referral) and it is transformed once more.
    wait_for(lambda: query(db, "SELECT status FROM messages WHERE id=?", (message_id,))[0][0] == "transformed")
    page.reload()
    assert page.locator("#status").inner_text() == "transformed"
    audit = query(db, 'SELECT "user", role FROM audit_log WHERE action=? AND target_id=?',
                  ("reprocess", str(message_id)))
    assert audit == [("ana", "analyst")]
    page.close()


def test_coordinator_works_the_worklist_and_sees_kpi_charts(running, browser, shots):
    engine, base, mllp_port, db = running
    page = log_in(browser, base, "cora")
    page.goto(base + "/referrals")
    assert page.locator("#worklist tbody tr").count() == 4
    snap(page, shots, "referrals")
    page.goto(base + "/referrals?status=ready")
    page.locator("#worklist tbody tr a").first.click()
    page.fill("form[action$='/assign'] input[name=owner]", "cora")
    page.click("form[action$='/assign'] button")
    assert page.locator("#owner").inner_text() == "cora"
    page.fill("form[action$='/next-action'] input[name=text]", "call the patient to book")
    page.click("form[action$='/next-action'] button")
    assert "call the patient to book" in page.locator("#next-action").inner_text()
    snap(page, shots, "referral")
    page.goto(base + "/kpis")
    chart = page.locator("#chart-daily svg")
    chart.wait_for(state="visible")
    box = chart.bounding_box()
    assert box["width"] > 300 and box["height"] > 80
    assert page.locator("#chart-daily polyline.series").count() == 3
    assert page.locator("#chart-aging rect.bar").count() >= 1
    snap(page, shots, "kpis")
    # A coordinator sees no pause button and cannot post one either.
    page.goto(base + "/channels")
    assert page.locator("text=Pause").count() == 0
    page.close()


def test_coordinator_reviews_and_accepts_a_faxed_referral(running, browser, shots):
    engine, base, mllp_port, db = running
    inbox = engine.config.data_dir / "fax" / "inbox"
    sample = REPO / "sample_messages" / "faxes" / "fax_2026_0000.tif"
    truth = json.loads(sample.with_suffix(".json").read_text())
    inbox.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample, inbox / sample.name)
    fax_id = wait_for(lambda: (query(db, "SELECT id FROM faxes WHERE status='needs_review'") or [[None]])[0][0],
                      timeout=120, step=0.5)
    page = log_in(browser, base, "cora")
    page.goto(base + "/faxes")
    page.locator(f"#faxes a[href='/faxes/{fax_id}']").click()
    image = page.locator(".pages img").first
    image.wait_for(state="visible")
    assert page.evaluate("img => img.naturalWidth", image.element_handle()) > 500    # the page image, beside ...
    assert page.locator("#fax-fields tr.conf-low").count() >= 1                    # ... fields flagged by confidence
    snap(page, shots, "fax")
    # The coordinator checks every field against the page and types what it says.
    for name, value in truth.items():
        field = page.locator(f"#fld-{name}")
        if field.count():
            field.fill(", ".join(value) if isinstance(value, list) else ("" if value is None else str(value)))
    page.click("#accept")
    page.locator(".notice").wait_for()
    assert page.locator("#fax-status").inner_text() == "accepted", page.locator("main").inner_text()[:500]
    referral_id, status = query(db, "SELECT r.id, r.status FROM faxes f JOIN referrals r ON r.id=f.referral_id "
                                    "WHERE f.id=?", (fax_id,))[0]
    assert status == "ready"
    assert query(db, "SELECT patient_family_name FROM referrals WHERE id=?",
                 (referral_id,))[0][0] == truth["patient_family_name"]
    page.close()
    # The acceptance reached the engine's outbound rules: ADT^A04 + ORM^O01 written for the specialist EHR.
    out = engine.config.data_dir / "specialist"
    files = wait_for(lambda: sorted(out.glob("*.hl7")) if len(list(out.glob("*.hl7"))) >= 2 else None, timeout=20)
    kinds = sorted(f.read_text().split("\r")[0].split("|")[8].split("^")[1] for f in files)
    assert kinds == ["A04", "O01"]
    assert all(truth["patient_family_name"].upper() in f.read_text().upper() for f in files)
    # and the page's OCR time is in /metrics
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        ocr = [line for line in r.read().decode().splitlines() if line.startswith("engine_ocr_page_seconds_count")]
    assert ocr and float(ocr[0].split()[-1]) >= 1


def test_pause_stops_the_listener_and_resume_starts_it(running, browser):
    engine, base, mllp_port, db = running
    page = log_in(browser, base, "ana")
    page.click("tr[data-channel=ehr_inbound] button:has-text('Pause')")
    assert "paused" in page.locator(".notice").inner_text()
    wait_for(lambda: not accepts(mllp_port), timeout=10)
    page.click("tr[data-channel=ehr_inbound] button:has-text('Resume')")
    wait_for(lambda: accepts(mllp_port), timeout=10)
    with MLLPClient("127.0.0.1", mllp_port) as client:
        assert msa(client.send(order(10)[0]))[0] in ("AA", "CA")
    page.close()


def test_a_crashed_dashboard_is_restarted_by_the_engine(running):
    engine, base, mllp_port, db = running
    log = engine.config.logging.file.read_text()
    pid = [json.loads(line)["pid"] for line in log.splitlines() if '"dashboard process started"' in line][-1]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not http_ok(base + "/health"), timeout=5)
    wait_for(lambda: http_ok(base + "/health"), timeout=30)       # the engine noticed and started a new one
    with MLLPClient("127.0.0.1", mllp_port) as client:               # the engine itself never stopped
        assert msa(client.send(order(11)[0]))[0] in ("AA", "CA")


def test_metrics_carry_engine_counters_and_store_gauges(running):
    engine, base, mllp_port, db = running
    def sample(body: str, name: str) -> float:
        lines = [line for line in body.splitlines() if line.startswith(name)]
        return float(lines[0].split()[-1]) if lines else 0.0

    def scrape() -> str:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            return r.read().decode()
    # ACK counts reach the metric files within engine.web.metrics.FLUSH_SECONDS of the ACK
    wait_for(lambda: sample(scrape(), 'engine_messages_in_total{ack="CA",channel="ehr_inbound"}') >= 6, timeout=5)
    body = scrape()
    assert sample(body, 'engine_ack_latency_seconds_count{channel="ehr_inbound"}') >= 6
    assert "engine_messages_waiting" in body and 'engine_referrals{status="scheduled"}' in body
