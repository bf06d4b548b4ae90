"""Outbound templates (engine/templates.py, mappings/outbound/): structure-checked with hl7apy, rendered exactly."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.hl7v2.parse import get, get_all, parse
from engine.templates import MSH, TemplateError, Templates, check_structure, compile_template, sample_context

FOLDER = Path(__file__).parent.parent / "mappings" / "outbound"
NAMES = sorted(p.stem for p in FOLDER.glob("*.yaml"))


def test_the_issue_names_every_generated_message():
    types = {compile_template(FOLDER / f"{n}.yaml").message_type for n in NAMES}
    assert {"ADT^A04", "ORM^O01", "REF^I12", "SIU^S12", "MDM^T02", "ORU^R01", "RRI^I12"} <= types


@pytest.mark.parametrize("name", NAMES)
def test_each_template_matches_its_hl7_structure(name):
    assert check_structure(compile_template(FOLDER / f"{name}.yaml")) == []


def test_a_template_that_breaks_its_structure_is_refused_with_file_and_reason(tmp_path):
    broken = (FOLDER / "siu_notification.yaml").read_text().replace("      20.2: {value: REFERRAL_ENGINE}\n", "")
    (tmp_path / "siu_broken.yaml").write_text(broken)     # SCH-20 (entered by) is required in 2.5.1
    with pytest.raises(TemplateError) as err:
        Templates.load(tmp_path)
    assert err.value.problems == [f"{tmp_path / 'siu_broken.yaml'}:1: structure SIU_S12 (2.5.1): hl7apy: "
                                  "Missing required child SCH.SCH_20"]


def test_a_bad_key_names_the_file_line_and_what_is_valid(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("type: ADT^A04\nversion: '2.5.1'\nstructure: ADT_A01\nsegments:\n  - segment: PID\n"
                    "    fields:\n      5.1: {path: patient.family_name, fromat: upper}\n")
    with pytest.raises(TemplateError) as err:
        compile_template(path)
    assert err.value.problems == [f"{path}:7: PID-5.1: unknown keys ['fromat']; valid: path, value, format, table, "
                                  "default, max, index"]


def test_siu_trigger_follows_the_referral_event_and_values_are_escaped():
    t = compile_template(FOLDER / "siu_notification.yaml")
    ctx = sample_context()
    ctx["event"]["kind"] = "appointment.canceled"
    ctx["appointment"]["status"] = "canceled"
    ctx["appointment"]["reason"] = "Pain | swelling ^ & more"
    text = t.render(ctx, MSH(receiving_application="EHR", receiving_facility="CLINIC"), "CID42").decode()
    m = parse(text)
    assert (get(m, "MSH-9.1"), get(m, "MSH-9.2"), get(m, "MSH-10"), get(m, "MSH-5")) == ("SIU", "S15", "CID42", "EHR")
    assert get(m, "SCH-25.1") == "Cancelled" and get(m, "SCH-6.1") == "CANCEL"
    assert get(m, "SCH-7.2") == "Pain | swelling ^ & more"        # escaped on the wire, intact when read
    assert "\\F\\" in text and get(m, "SCH-11.4") == "20261202143000"


def test_mdm_carries_the_note_one_line_per_obx_and_repeats_identifiers():
    t = compile_template(FOLDER / "mdm_t02.yaml")
    ctx = sample_context()
    ctx["patient"]["identifiers"].append({"id": "998877", "authority": "MAPLE", "type": "PI"})
    m = parse(t.render(ctx, MSH(), "C1").decode())
    assert get_all(m, "OBX[*]-5") == ctx["document"]["lines"]
    assert get_all(m, "PID-3[*].1") == ["10483726", "998877"]
    assert get(m, "TXA-17") == "AU" and get(m, "TXA-13.1") == "RF250304-0481"


def test_a_segment_with_when_is_left_out_without_its_value():
    t = compile_template(FOLDER / "adt_a04.yaml")
    ctx = sample_context()
    ctx["referral"]["payer"] = None
    text = t.render(ctx, MSH(), "C1").decode()
    assert "\rIN1|" not in text and "\rPID|" in text
