"""The dashboard and JSON API against a real store made by the engine's own code (engine.web.demo:
sample messages journaled and processed into referrals), real argon2 logins, real roles, real CSRF.
The app runs in-process under Starlette's TestClient (httpx), as uvicorn would serve it."""
from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from engine.config import load_config
from engine.db import columns
from engine.web import users
from engine.web.app import create_app
from engine.web.demo import seed
from tests.conftest import open_store

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
LOOPBACK = ("127.0.0.1", 50123)

pytestmark = pytest.mark.store


@pytest.fixture(scope="module")
def config(tmp_path_factory, backend_name, request):
    """One seeded store for the module: the data folder's SQLite file, or a fresh PostgreSQL database."""
    data = tmp_path_factory.mktemp("web")
    env = {"ENGINE_DATA_DIR": str(data)}
    cluster = request.getfixturevalue("pg_cluster") if backend_name == "postgresql" else None
    if cluster is not None:
        env["ENGINE_STORE_URL"] = cluster.new_database()
    cfg = load_config(REPO / "config.yaml", env=env)
    seed(cfg, referrals=6)
    conn = open_store(cfg.store_location)
    for name, role in (("ada", "admin"), ("ana", "analyst"), ("cora", "coordinator"), ("vic", "viewer")):
        users.add(conn, name, role, PASSWORD)
    conn.close()
    yield cfg
    if cluster is not None:
        cluster.drop_database(env["ENGINE_STORE_URL"])


@pytest.fixture(scope="module")
def app(config):
    return create_app(config)


def conn_of(config):
    """A connection to the module's store with rows readable by column name (either backend)."""
    conn = open_store(config.store_location)
    conn.row_factory = sqlite3.Row        # PostgreSQL rows read by name already (the attribute is ignored)
    return conn


def login(app, name: str, password: str = PASSWORD, base_url: str = "http://testserver") -> TestClient:
    client = TestClient(app, client=LOOPBACK, base_url=base_url, follow_redirects=False)
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    r = client.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": "/"})
    client.last_login = r
    return client


def csrf_of(client: TestClient, path: str = "/channels") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def token_for(config, name: str) -> dict:
    conn = open_store(config.store_location)
    try:
        return {"Authorization": f"Bearer {users.create_token(conn, name, 'test')}"}
    finally:
        conn.close()


def audit_rows(config, **where) -> list[dict]:
    conn = conn_of(config)
    # quoted: `user` is a reserved word in PostgreSQL
    sql = "SELECT * FROM audit_log" + (" WHERE " + " AND ".join(f'"{k}"=?' for k in where) if where else "")
    rows = [dict(r) for r in conn.execute(sql + " ORDER BY id", tuple(where.values()))]
    conn.close()
    return rows


def all_routes(routes) -> list:
    """Routes of the app and of the routers it includes."""
    out = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out += all_routes(inner.routes) if inner is not None else [route]
    return out


# ---- nothing without login -------------------------------------------------------------------------

def test_only_health_and_login_are_open(app):
    anon = TestClient(app, client=("10.1.2.3", 4000), follow_redirects=False)
    assert anon.get("/health").json() == {"status": "ok"}
    assert anon.get("/login").status_code == 200
    checked = 0
    for route in all_routes(app.routes):
        path = getattr(route, "path", None)
        if not path or path in ("/health", "/login", "/static") or path.startswith("/static"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method in getattr(route, "methods", {"GET"}) - {"HEAD"}:
            r = anon.request(method, concrete)
            if path == "/logout":
                assert r.status_code == 303 and r.headers["location"] == "/login"
                continue
            if path.startswith("/api/") or path == "/metrics":
                assert r.status_code == 401, (method, path, r.status_code)
            else:
                assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (method, path)
            checked += 1
    assert checked >= 25


def test_metrics_answer_loopback_or_a_token(app, config):
    remote = TestClient(app, client=("10.1.2.3", 4000))
    assert remote.get("/metrics").status_code == 401
    assert remote.get("/metrics", headers=token_for(config, "vic")).status_code == 200
    body = TestClient(app, client=LOOPBACK).get("/metrics").text
    assert "engine_messages_waiting 0.0" in body
    assert 'engine_referrals{status="scheduled"} 3.0' in body
    assert 'engine_channel_paused{channel="ehr_inbound"}' in body


# ---- login, cookies, lockout, sessions ---------------------------------------------------------------

def test_login_sets_a_hardened_session_cookie(app):
    client = login(app, "vic")
    assert client.last_login.status_code == 303
    cookie = client.last_login.headers["set-cookie"]
    assert "rie_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie                       # plain http: a Secure cookie would never come back
    secure = login(app, "vic", base_url="https://testserver")
    assert "Secure" in secure.last_login.headers["set-cookie"]
    page = client.get("/channels")
    assert page.status_code == 200 and "ehr_inbound" in page.text
    assert page.headers["cache-control"] == "no-store" and "script-src 'self'" in page.headers["content-security-policy"]


def test_login_form_needs_its_csrf_cookie(app):
    client = TestClient(app, client=LOOPBACK, follow_redirects=False)
    r = client.post("/login", data={"username": "vic", "password": PASSWORD, "csrf_token": "forged"})
    assert r.status_code == 403 and "rie_session" not in r.headers.get("set-cookie", "")


def test_wrong_passwords_lock_the_account(app, config):
    conn = open_store(config.store_location)
    users.add(conn, "lockme", "viewer", PASSWORD)
    conn.close()
    for attempt in range(config.web.lockout_attempts):
        r = login(app, "lockme", "wrong password!").last_login
        assert r.status_code == 401
    assert "locked" in r.text
    assert login(app, "lockme").last_login.status_code == 401          # the right password is refused too
    failures = audit_rows(config, user="lockme")
    assert [a["action"] for a in failures].count("login_failed:bad_credentials") == config.web.lockout_attempts - 1
    assert failures[-1]["action"] == "login_failed:locked"
    conn = open_store(config.store_location)
    users.set_password(conn, "lockme", PASSWORD + "2")                 # an admin resets: unlocked
    conn.close()
    assert login(app, "lockme", PASSWORD + "2").last_login.status_code == 303


def test_unknown_user_and_wrong_password_look_the_same(app):
    a = login(app, "nobody-here", PASSWORD).last_login
    b = login(app, "vic", "not the password").last_login
    assert a.status_code == b.status_code == 401
    assert "Wrong user name or password" in a.text and "Wrong user name or password" in b.text


def test_password_change_and_disable_end_sessions_and_tokens(app, config):
    conn = open_store(config.store_location)
    users.add(conn, "temp", "analyst", PASSWORD)
    conn.close()
    client = login(app, "temp")
    headers = token_for(config, "temp")
    assert client.get("/channels").status_code == 200
    conn = open_store(config.store_location)
    users.set_password(conn, "temp", PASSWORD + "!")
    conn.close()
    assert client.get("/channels").status_code == 303                   # old session ended
    api = TestClient(app, client=LOOPBACK)
    assert api.get("/api/me", headers=headers).json()["role"] == "analyst"
    conn = open_store(config.store_location)
    users.disable(conn, "temp")
    conn.close()
    assert api.get("/api/me", headers=headers).status_code == 401       # token revoked
    assert login(app, "temp", PASSWORD + "!").last_login.status_code == 401


def test_logout_needs_csrf_and_ends_the_session(app):
    client = login(app, "vic")
    copied = dict(client.cookies)               # someone copied the session cookie before the logout
    client.post("/logout", data={"csrf_token": csrf_of(client)})
    assert client.get("/channels").status_code == 303
    thief = TestClient(app, client=LOOPBACK, follow_redirects=False, cookies=copied)
    assert thief.get("/channels").status_code == 303          # the copy stopped working too


# ---- roles -----------------------------------------------------------------------------------------

def test_viewer_cannot_reprocess_analyst_can(app, config):
    api = TestClient(app, client=LOOPBACK)
    r = api.post("/api/messages/1/reprocess", headers=token_for(config, "vic"))
    assert r.status_code == 403 and "viewer" in r.json()["detail"]
    r = api.post("/api/messages/1/reprocess", headers=token_for(config, "cora"))
    assert r.status_code == 403
    r = api.post("/api/messages/1/reprocess", headers=token_for(config, "ana"))
    assert r.status_code == 200, r.text
    conn = conn_of(config)
    assert conn.execute("SELECT status FROM messages WHERE id=1").fetchone()[0] == "received"
    conn.execute("UPDATE messages SET status='transformed' WHERE id=1")   # as the processor would (idempotent replay)
    conn.close()
    assert audit_rows(config, action="reprocess", target_id="1")[-1]["user"] == "ana"


def test_coordinator_cannot_pause_channels_analyst_can(app, config):
    api = TestClient(app, client=LOOPBACK)
    assert api.post("/api/channels/ehr_inbound/pause", headers=token_for(config, "cora")).status_code == 403
    assert api.post("/api/channels/no_such/pause", headers=token_for(config, "ana")).status_code == 404
    r = api.post("/api/channels/ehr_inbound/pause", headers=token_for(config, "ana"))
    assert r.json() == {"channel": "ehr_inbound", "paused": True}
    conn = conn_of(config)
    assert tuple(conn.execute("SELECT paused, changed_by FROM channel_state WHERE channel='ehr_inbound'").fetchone()) == (1, "ana")
    conn.close()
    channels = api.get("/api/channels", headers=token_for(config, "vic")).json()["channels"]
    assert channels[0]["paused"] is True
    api.post("/api/channels/ehr_inbound/resume", headers=token_for(config, "ana"))
    assert api.get("/api/channels", headers=token_for(config, "vic")).json()["channels"][0]["paused"] is False


def test_forms_need_the_csrf_token(app, config):
    client = login(app, "ana")
    assert client.post("/messages/2/reprocess", data={}).status_code == 403
    assert client.post("/messages/2/reprocess", data={"csrf_token": "x" * 40}).status_code == 403
    r = client.post("/messages/2/reprocess", data={"csrf_token": csrf_of(client)})
    assert r.status_code == 303 and r.headers["location"] == "/messages/2?notice=reprocessed"
    assert "Queued for processing again" in client.get(r.headers["location"]).text
    # A JSON POST with a session (not a token) needs the header.
    assert client.post("/api/channels/ehr_inbound/pause").status_code == 403
    assert client.post("/api/channels/ehr_inbound/resume", headers={"X-CSRF-Token": csrf_of(client)}).status_code == 200
    conn = conn_of(config)
    conn.execute("UPDATE messages SET status='transformed' WHERE id=2")
    conn.close()


def test_pages_hide_actions_a_role_may_not_do(app):
    viewer, analyst = login(app, "vic"), login(app, "ana")
    assert 'id="reprocess"' not in viewer.get("/messages/1").text
    assert 'id="reprocess"' in analyst.get("/messages/1").text
    assert ">Pause<" not in viewer.get("/channels").text and ">Pause<" in analyst.get("/channels").text
    assert viewer.get("/audit").status_code == 403
    assert login(app, "ada").get("/audit").status_code == 200


# ---- message browser -----------------------------------------------------------------------------

def test_message_search_filters_and_keyset_pages(app, config):
    api = TestClient(app, client=LOOPBACK, headers=token_for(config, "vic"))
    found = api.get("/api/messages", params={"control_id": "DEMO-SIU-0002"}).json()["messages"]
    assert [m["control_id"] for m in found] == ["DEMO-SIU-0002"]
    by_patient = api.get("/api/messages", params={"patient_id": "D0000002"}).json()["messages"]
    assert sorted(m["message_type"] for m in by_patient) == ["ORM^O01", "SIU^S12"]
    by_name = api.get("/api/messages", params={"name": "lindqvist"}).json()["messages"]
    assert {m["patient_id"] for m in by_name} == {"D0000002"}
    assert len(api.get("/api/messages", params={"message_type": "SIU"}).json()["messages"]) == 3
    assert len(api.get("/api/messages", params={"message_type": "ORM^O01"}).json()["messages"]) == 6
    assert api.get("/api/messages", params={"status": "nonsense"}).status_code == 422
    assert api.get("/api/messages", params={"since": "2999-01-01"}).json()["messages"] == []
    seen, before = [], None
    while True:
        page = api.get("/api/messages", params={"limit": 4, **({"before": before} if before else {})}).json()
        seen += [m["id"] for m in page["messages"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 9


def test_message_page_shows_raw_and_field_breakdown(app):
    client = login(app, "vic")
    listing = client.get("/messages", params={"control_id": "DEMO-ORM-0003"})
    assert "DEMO-ORM-0003" in listing.text and 'href="/messages/4"' in listing.text
    page = client.get("/messages/4").text
    assert "PID-5" in page and "Patient Name" in page and "BARRETO" in page
    assert "MSH-10" in page and "DEMO-ORM-0003" in page
    assert 'href="/referrals/4"' in page
    assert client.get("/messages/999999").status_code == 404


def test_every_view_of_patient_data_is_audited(app, config):
    client = login(app, "vic")
    client.get("/messages/5")
    client.get("/referrals/5")
    client.get("/messages", params={"patient_id": "D0000004"})
    assert audit_rows(config, user="vic", target_kind="message", target_id="5")[-1]["action"] == "view"
    assert audit_rows(config, user="vic", target_kind="referral", target_id="5")[-1]["action"] == "view"
    search = audit_rows(config, user="vic", target_kind="message_search")[-1]
    assert "D0000004" in search["detail"] and search["client"] == "127.0.0.1"


# ---- referrals --------------------------------------------------------------------------------------

def test_worklist_filters_and_aging(app, config):
    api = TestClient(app, client=LOOPBACK, headers=token_for(config, "cora"))
    ready = api.get("/api/referrals", params={"status": "ready"}).json()["referrals"]
    assert [r["id"] for r in ready] == [2, 4, 6] and all(r["aging"] == "green" for r in ready)
    scheduled = api.get("/api/referrals", params={"status": "scheduled", "specialty": "cardiology"}).json()
    assert all(r["aging"] == "grey" for r in scheduled["referrals"]) and len(scheduled["referrals"]) == 3
    assert api.get("/api/referrals", params={"min_age_days": 1}).json()["referrals"] == []
    page1 = api.get("/api/referrals", params={"limit": 4}).json()
    page2 = api.get("/api/referrals", params={"limit": 4, "after": page1["next_after"]}).json()
    assert [r["id"] for r in page1["referrals"] + page2["referrals"]] == [1, 2, 3, 4, 5, 6]
    assert page2["next_after"] is None
    html = login(app, "cora").get("/referrals", params={"status": "ready"}).text
    assert 'class="aging-green"' in html and "OKONKWO" in html


def test_coordinator_works_a_referral_viewer_cannot(app, config):
    cora = TestClient(app, client=LOOPBACK, headers=token_for(config, "cora"))
    viewer = TestClient(app, client=LOOPBACK, headers=token_for(config, "vic"))
    assert viewer.post("/api/referrals/2/assign", json={"owner": "vic"}).status_code == 403
    assert cora.post("/api/referrals/2/assign", json={"owner": "cora"}).json()["referral"]["owner"] == "cora"
    r = cora.post("/api/referrals/2/next-action", json={"text": "call the patient", "due": "2026-12-01"})
    assert r.json()["referral"]["next_action_due"] == "2026-12-01"
    assert cora.post("/api/referrals/2/next-action", json={"text": "x", "due": "soon"}).status_code == 409
    refused = cora.post("/api/referrals/2/status", json={"status": "closed", "reason": "done"})
    assert refused.status_code == 409 and "closed" in refused.json()["detail"]
    assert cora.post("/api/referrals/99999/assign", json={"owner": "x"}).status_code == 404
    canceled = cora.post("/api/referrals/2/status", json={"status": "canceled", "reason": "patient moved"})
    assert canceled.json()["referral"]["status"] == "canceled"
    timeline = viewer.get("/api/referrals/2").json()
    assert [e["kind"] for e in timeline["events"]] == ["owner", "next_action"]
    assert timeline["history"][-1] == {**timeline["history"][-1], "to_status": "canceled", "cause_kind": "user",
                                       "cause_id": "cora"}
    assert viewer.get("/api/referrals", params={"owner": "cora"}).json()["referrals"][0]["id"] == 2
    # The same through the page's forms.
    client = login(app, "cora")
    r = client.post("/referrals/4/assign", data={"owner": "cora", "csrf_token": csrf_of(client)})
    assert r.headers["location"] == "/referrals/4?notice=saved"
    page = client.get("/referrals/4").text
    assert 'id="owner">cora<' in page and "Status history" in page
    bad = client.post("/referrals/4/status", data={"status": "closed", "reason": "x", "csrf_token": csrf_of(client)})
    assert "error=" in bad.headers["location"]


# ---- outbound ---------------------------------------------------------------------------------------

def test_dead_letter_retry(app, config):
    from engine import outbound
    conn = conn_of(config)
    conn.execute("BEGIN IMMEDIATE")
    row = outbound.enqueue(conn, outbound.Outbound("referring_ehr", "SIU^S12", b"MSH|^~\\&|X\r", "OUT1",
                                                   referral_id=1, source_message_id=7))
    outbound.record_failure(conn, row, "AR: unknown patient", "AR", dead=True, max_attempts=5, backoff=1,
                            max_backoff=60)
    conn.execute("COMMIT")
    client = login(app, "ana")
    page = client.get("/outbound").text
    assert "referring_ehr" in page and "AR: unknown patient" in page and f'/outbound/{row}/resend' in page
    assert f'/outbound/{row}/resend' in client.get("/messages/7").text           # resend from the message too
    assert TestClient(app, client=LOOPBACK, headers=token_for(config, "cora")).post(
        f"/api/outbound/{row}/resend").status_code == 403
    r = client.post(f"/outbound/{row}/resend", data={"csrf_token": csrf_of(client), "back": "/outbound"})
    assert r.headers["location"] == "/outbound?notice=resent"
    assert tuple(conn.execute("SELECT status, attempts FROM outbound WHERE id=?", (row,)).fetchone()) == ("queued", 0)
    assert 'engine_outbound_queue_depth{destination="referring_ehr",status="queued"} 1.0' in \
        TestClient(app, client=LOOPBACK).get("/metrics").text
    conn.close()


# ---- KPIs --------------------------------------------------------------------------------------------

def test_kpis_json_page_and_csv(app, config):
    api = TestClient(app, client=LOOPBACK, headers=token_for(config, "vic"))
    doc = api.get("/api/kpis").json()
    s = doc["summary"]
    assert s["referrals"] == 6 and s["median_days_to_appointment"] is not None
    assert s["completion_rate"] == 0.0 and s["loop_closure_rate"] is None
    assert len(doc["daily"]) == 30 and sum(d["created"] for d in doc["daily"]) == 6
    assert doc["aging"][0]["specialty"] == "cardiology"
    assert api.get("/api/kpis", params={"start": "2026-02-30"}).status_code == 422
    client = login(app, "vic")
    page = client.get("/kpis").text
    assert page.count("<svg") == 2 and 'data-series="created"' in page and 'class="bar"' in page
    csv = client.get("/kpis.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "metric,value" and "referrals,6" in csv.text
    assert audit_rows(config, user="vic", action="export")


def test_fax_review_says_when_not_enabled(app, config):
    conn = conn_of(config)
    enabled = bool(columns(conn, "faxes"))
    conn.close()
    page = login(app, "cora").get("/faxes")
    assert page.status_code == 200
    assert ("not enabled" in page.text) != enabled


def test_api_docs_need_login(app):
    client = login(app, "vic")
    schema = client.get("/api/openapi.json").json()
    assert "/api/messages/{message_id}/reprocess" in schema["paths"]
    assert "/api/referrals/{referral_id}/assign" in client.get("/api/docs").text


# ---- the CLI -----------------------------------------------------------------------------------------

def test_user_cli_add_token_disable(config, app, tmp_path):
    env_config = tmp_path / "config.yaml"
    location = config.store_location
    url = location if isinstance(location, str) else f"sqlite:///{location}"
    env_config.write_text(f"data_dir: {config.data_dir}\nstore:\n  url: {url}\n")
    run = lambda *args, stdin="": subprocess.run(   # noqa: E731
        [sys.executable, str(REPO / "run_engine.py"), "user", *args, "--config", str(env_config)],
        input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60)
    r = run("add", "cli-user", "--role", "coordinator", stdin="a long cli password\n")
    assert r.returncode == 0, r.stderr
    assert run("add", "cli-user", "--role", "viewer", stdin="a long cli password\n").returncode == 2
    assert "at least 10" in run("add", "short", "--role", "viewer", stdin="short\n").stderr
    assert "valid roles" in run("add", "x", "--role", "boss", stdin="a long cli password\n").stderr
    token = run("token", "cli-user").stdout.strip()
    assert token.startswith("rie_")
    api = TestClient(app, client=LOOPBACK, headers={"Authorization": f"Bearer {token}"})
    assert api.get("/api/me").json() == {"user": "cli-user", "role": "coordinator", "via": "token",
                                         "permissions": ["faxes.review", "referrals.edit", "view"]}
    assert login(app, "cli-user", "a long cli password").last_login.status_code == 303
    assert run("disable", "cli-user").returncode == 0
    assert api.get("/api/me").status_code == 401
    assert run("passwd", "nobody", stdin="a long cli password\n").returncode == 2


# ---- fax review --------------------------------------------------------------------------------------

def file_fax(config, tmp_path, name: str, family: str) -> int:
    """A fax filed by the engine's own fax intake (engine.fax_intake.commit_fax), as the fax channel
    does after OCR: the family name read with low confidence, so it waits for review."""
    from PIL import Image, ImageDraw
    from engine.fax_intake import FaxResult, commit_fax
    pages = tmp_path / f"pages-{name}"
    pages.mkdir()
    image = Image.new("L", (850, 1100), 255)
    ImageDraw.Draw(image).text((60, 60), f"REFERRAL  Patient: {family}, Ada", fill=0)
    image.save(pages / "page-001.png")
    extraction = {"patient_family_name": family, "patient_given_name": "Ada", "patient_dob": "1961-04-02",
                  "patient_sex": "F", "patient_mrn": f"FX-{name}", "insurance_payer": "Cascadia Mutual",
                  "insurance_member_id": "CM123", "referring_provider_name": "Rowan Lindqvist",
                  "referring_provider_npi": "1234567893", "referred_to_specialty": "cardiology",
                  "urgency": "routine", "diagnosis_codes": ["I10"], "reason": "uncontrolled hypertension",
                  "confidence": {"patient_family_name": 0.41, "patient_given_name": 0.93, "patient_dob": 0.97,
                                 "referred_to_specialty": 0.9, "referring_provider_name": 0.9, "reason": 0.8,
                                 "patient_mrn": 0.9, "insurance_payer": 0.9, "insurance_member_id": 0.9,
                                 "referring_provider_npi": 0.95, "urgency": 0.9, "diagnosis_codes": 0.9,
                                 "patient_sex": 0.9}, "pages": 1, "ocr_text": f"REFERRAL Patient: {family}"}
    conn = conn_of(config)
    conn.execute("BEGIN IMMEDIATE")
    filed = commit_fax(conn, FaxResult("fax_inbox", f"{name}.pdf", f"sha-{name}", "2026-11-23T10:00:00+00:00",
                                       extraction=extraction, pages_dir=str(pages)), config.referrals)
    conn.execute("COMMIT")
    conn.close()
    assert filed.status == "needs_review", filed
    return filed.fax_id


def test_fax_review_edit_accept_and_reject(app, config, tmp_path):
    accept_id = file_fax(config, tmp_path, "fa1", "HALVRSEN")
    reject_id = file_fax(config, tmp_path, "fa2", "QUISPE")
    cora = TestClient(app, client=LOOPBACK, headers=token_for(config, "cora"))
    viewer = TestClient(app, client=LOOPBACK, headers=token_for(config, "vic"))
    analyst = TestClient(app, client=LOOPBACK, headers=token_for(config, "ana"))
    listing = viewer.get("/api/faxes").json()["faxes"]
    assert {f["id"] for f in listing} >= {accept_id, reject_id}
    doc = viewer.get(f"/api/faxes/{accept_id}").json()
    family = next(f for f in doc["fields"] if f["name"] == "patient_family_name")
    assert family == {**family, "value": "HALVRSEN", "confidence": 0.41, "flagged": True}
    assert doc["images"] == ["page-001.png"]
    assert viewer.post(f"/api/faxes/{accept_id}/accept", json={}).status_code == 403
    assert analyst.post(f"/api/faxes/{accept_id}/accept", json={}).status_code == 403
    # The page: image beside the fields; a coordinator corrects the name and accepts.
    client = login(app, "cora")
    page = client.get(f"/faxes/{accept_id}").text
    assert f'src="/faxes/{accept_id}/pages/1"' in page and 'class="conf-low"' in page and 'value="HALVRSEN"' in page
    image = client.get(f"/faxes/{accept_id}/pages/1")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert client.get(f"/faxes/{accept_id}/pages/2").status_code == 404
    form = {f["name"]: f["text"] for f in doc["fields"]}
    r = client.post(f"/faxes/{accept_id}/accept", data={**form, "patient_family_name": "HALVORSEN",
                                                         "csrf_token": csrf_of(client)})
    assert r.headers["location"] == f"/faxes/{accept_id}?notice=accepted", r.headers["location"]
    done = viewer.get(f"/api/faxes/{accept_id}").json()
    assert done["status"] == "accepted" and done["extraction"]["reviewed_fields"] == ["patient_family_name"]
    assert done["extraction"]["confidence"]["patient_family_name"] == 1.0
    referral = viewer.get(f"/api/referrals/{done['referral_id']}").json()
    assert referral["referral"]["status"] == "ready" and referral["referral"]["patient_family_name"] == "HALVORSEN"
    assert referral["history"][-1]["cause_id"] == "cora"
    assert all(x["resolved_by"] == "cora" for x in referral["exceptions"])
    assert cora.post(f"/api/faxes/{accept_id}/accept", json={}).status_code == 409       # not in review any more
    # Reject needs a reason; then the referral is rejected.
    assert cora.post(f"/api/faxes/{reject_id}/reject", json={"reason": ""}).status_code == 422
    rejected = cora.post(f"/api/faxes/{reject_id}/reject", json={"reason": "not our patient"}).json()
    assert rejected["status"] == "rejected"
    assert viewer.get(f"/api/referrals/{rejected['referral_id']}").json()["referral"]["status"] == "rejected"
    assert audit_rows(config, action="fax_accept", target_id=str(accept_id))[-1]["user"] == "cora"


@pytest.mark.postgresql_only
def test_requests_borrow_from_one_bounded_pool_and_give_the_connection_back(app, config):
    """On PostgreSQL the dashboard's request threads share a pool of at most store.pool_size connections;
    each request gives its connection back when it is answered, so many requests never hold more."""
    from concurrent.futures import ThreadPoolExecutor
    web = app.state.web
    client = login(app, "vic")
    with ThreadPoolExecutor(16) as threads:
        codes = list(threads.map(lambda _: client.get("/referrals").status_code, range(64)))
    assert codes == [200] * 64
    stats = web.pool.stats()
    assert stats["requests_num"] >= 64
    assert 1 <= stats["pool_size"] <= config.store.pool_size == 8
    assert stats["pool_available"] == stats["pool_size"]        # every connection is back in the pool
