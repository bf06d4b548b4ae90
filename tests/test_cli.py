"""The command line as an analyst uses it: send, messages, show, and a clean SIGTERM."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, SAMPLES, sample

pytestmark = pytest.mark.slow


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run_engine.py"), *args], cwd=REPO, input=stdin,
                          capture_output=True, timeout=120)


def test_send_a_folder_then_find_and_show_a_message(engine_process):
    engine = engine_process()
    config = str(engine.config_path)
    sent = cli("send", str(SAMPLES), "--port", str(engine.port))
    assert sent.returncode == 0, sent.stderr.decode()
    lines = sent.stdout.decode().splitlines()
    assert len(lines) == len(list(SAMPLES.glob("*.hl7")))
    assert all(("\tAA" in line or "\tCA" in line) for line in lines)
    assert any(line.startswith("batch_") and "batch of 4" in line for line in lines)

    found = json.loads(cli("messages", "--config", config, "--type", "SIU", "--json").stdout)["messages"]
    assert {m["message_type"] for m in found} == {"SIU^S12", "SIU^S13", "SIU^S14", "SIU^S15", "SIU^S26"}

    orm = json.loads(cli("messages", "--config", config, "--type", "ORM^O01", "--json").stdout)["messages"]
    bench = sample("ORM_O01_v2.5.1_bench25.hl7").decode()
    control_id = bench.split("\r")[0].split("|")[9]
    by_id = json.loads(cli("messages", "--config", config, "--control-id", control_id, "--json").stdout)["messages"]
    assert len(by_id) == 1 and by_id[0] in orm
    patient = by_id[0]["patient_id"]
    by_patient = json.loads(cli("messages", "--config", config, "--patient-id", patient, "--json").stdout)
    assert by_id[0]["id"] in {m["id"] for m in by_patient["messages"]}

    shown = cli("show", str(by_id[0]["id"]), "--config", config)
    text = shown.stdout.decode()
    assert shown.returncode == 0 and control_id in text
    assert "PID-5" in text and "Patient Name" in text and "--- raw ---" in text
    doc = json.loads(cli("show", str(by_id[0]["id"]), "--config", config, "--json").stdout)
    assert doc["raw"].startswith("MSH|") and any(s["segment"] == "OBR" for s in doc["segments"])

    table = cli("messages", "--config", config, "--since", "1h").stdout.decode()
    assert control_id in table
    assert cli("messages", "--config", config, "--status", "bogus").returncode == 2
    assert cli("show", "999999", "--config", config).returncode == 1
    assert engine.terminate() == 0


def test_send_reports_a_refusal_with_exit_code_1(engine_process, tmp_path):
    engine = engine_process()
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5.1\nPID|1\n")
    result = cli("send", str(bad), "--port", str(engine.port))
    assert result.returncode == 1
    assert "\tAR\t" in result.stdout.decode()
    assert cli("send", str(tmp_path / "missing.hl7"), "--port", str(engine.port)).returncode == 2


def test_sigterm_drains_and_exits_zero_and_logs_carry_no_patient_data(engine_process):
    engine = engine_process(env={"LOG_LEVEL": "INFO"})
    assert cli("send", str(SAMPLES), "--port", str(engine.port)).returncode == 0
    assert engine.terminate() == 0
    log_text = engine.stderr() + (engine.config.data_dir / "logs" / "engine.log").read_text()
    assert "engine stopped" in log_text
    # Names, birth dates and identifiers that are in the sample messages must not be in INFO+ logs.
    phi = set()
    for path in SAMPLES.glob("*.hl7"):
        for segment in path.read_bytes().decode("latin-1").splitlines():
            if segment.startswith("PID"):
                fields = segment.split(segment[3])
                phi.add(fields[3].split("^")[0])          # MRN
                phi.add(fields[5].split("^")[0])          # family name
                phi.add(fields[7][:8])                    # date of birth
    phi.discard("")
    assert len(phi) > 5
    leaked = [value for value in phi if value in log_text]
    assert not leaked, f"PHI in logs: {leaked}"
