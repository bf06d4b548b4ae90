"""Declarative mappings: every sample to its event and key fields; vendor variants by YAML only;
errors that name file, line and key; reload without restart; the `map` and `check-config` CLI."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.hl7v2 import decode, prepare, read_header, split_frame
from engine.mapping import MappingError, Mappings, NoMapping, compile_file

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_messages"
MAPPINGS = REPO / "mappings"


def text_of(name: str) -> tuple[str, str]:
    raw = prepare((SAMPLES / name).read_bytes())
    header = read_header(raw)
    return decode(raw, header.text(18)).text, header.message_type


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return Mappings.load(MAPPINGS)


def mapped(mappings: Mappings, name: str):
    text, message_type = text_of(name)
    return mappings.map(text, message_type)


def referring_npis(result) -> list[str]:
    return [p.npi for p in result.providers if p.role == "referring"]


# ---- every sample ------------------------------------------------------------

ORDERS = {
    # file: (event, family, mrn, placer, urgency, specialty, diagnoses, referring npi)
    "ORM_O01_v2.5.1_bench25.hl7": ("referral.order", "FAIRWEATHER", "10483726", "RF250304-0481", "urgent",
                                   "cardiology", ["R07.9", "I10", "E11.9"], "1408511859"),
    "ORM_O01_v2.3.hl7": ("referral.order", "ACHTERBERG", "20577341", "LFM-ORD-77152", "routine", "orthopedics",
                         ["M17.11", "M25.561"], "1947282863"),
    "ORM_O01_v2.4.hl7": ("referral.order", "OYELARAN-PIKE", "30914458", "CKIM-250115-0309", "routine",
                         "gastroenterology", ["K21.9", "R10.13", "Z12.11"], "1408504813"),
    "ORM_O01_v2.5.1_utf8.hl7": ("referral.order", "Müller", "40266195", "RF250218-0502", "urgent", "dermatology",
                                ["D48.5", "Z80.8", "L57.0"], "1408511859"),
    "ORM_O01_v2.5_altsep.hl7": ("referral.order", "HOLLOWAY-TRENT", "60158247", "CKIM-250226-0388", "routine",
                                "neurology", ["R25.1", "R26.81"], "1408504813"),
    "OMG_O19_v2.5.1.hl7": ("referral.order", "FAIRWEATHER", "10483726", "CO250327-0112", "routine",
                           "endocrinology", ["E11.65", "I20.89"], "1363669569"),
    "REF_I12_v2.4.hl7": ("referral.order", "OYELARAN-PIKE", "30914458", "RFH25-000213", "routine",
                         "gastroenterology", ["K21.9", "R10.13", "Z12.11"], "1408504813"),
    "REF_I12_v2.5.1.hl7": ("referral.order", "Müller", "40266195", "RFH25-000502", "urgent", "dermatology",
                           ["D48.5", "Z80.8"], "1408511859"),
}


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_referral_orders_map_their_key_fields(mappings, name):
    event, family, mrn, placer, urgency, specialty, codes, npi = ORDERS[name]
    result = mapped(mappings, name)
    assert result.event == event
    assert result.patient.family_name == family
    assert result.patient.identifiers[0].model_dump() == {"id": mrn, "authority": "GENHOSP", "type": "MR"}
    assert result.placer_order_number == placer
    assert result.urgency == urgency
    assert result.specialty == specialty
    assert [d.code for d in result.diagnoses] == codes
    assert all(d.system == "I10" for d in result.diagnoses)
    assert referring_npis(result)[0] == npi


def test_referral_details(mappings):
    ref = mapped(mappings, "REF_I12_v2.4.hl7")
    assert ref.referral_number == "RFH25-000213"
    referred_to = [p for p in ref.providers if p.role == "referred_to"][0]
    assert (referred_to.family_name, referred_to.npi) == ("BRANDVOLD", "2142102450")
    referring = [p for p in ref.providers if p.role == "referring"][0]
    assert (referring.phone, referring.fax) == ("5415550120", "5415550121")
    assert ref.insurance[0].member_id == "NWA550918273"
    assert ref.extras["originating_order"] == "CKIM-250115-0309"
    bench = mapped(mappings, "ORM_O01_v2.5.1_bench25.hl7")
    assert bench.patient.birth_date == "1958-03-14" and bench.patient.sex == "M"
    assert bench.patient.phone == "5415550142"
    assert bench.event_time == "2025-03-04T09:12:00"
    assert mapped(mappings, "OMG_O19_v2.5.1.hl7").extras["parent_placer_order_number"] == "RF250304-0481"


SCHEDULING = {
    # file: (event, placer id, filler id, start, status, placer order number)
    "SIU_S12_v2.5.1.hl7": ("appointment.booked", "PA250305-0481", "88120455", "2025-03-24T10:30:00", "booked",
                           "RF250304-0481"),
    "SIU_S13_v2.5.1.hl7": ("appointment.rescheduled", "PA250305-0481", "88120455", "2025-03-27T14:00:00",
                           "booked", "RF250304-0481"),
    "SIU_S14_v2.5.1.hl7": ("appointment.completed", "PA250305-0481", "88120455", "2025-03-27T14:00:00",
                           "completed", "RF250304-0481"),
    "SIU_S12_v2.3.1.hl7": ("appointment.booked", "PA250212-0552", "40022871", "2025-03-03T08:45:00", "booked",
                           None),
    "SIU_S15_v2.3.1.hl7": ("appointment.canceled", "PA250117-0213", "BDH-A-661904", "2025-02-04T09:30:00",
                           "canceled", None),
    "SIU_S26_v2.3.1.hl7": ("appointment.no_show", "PA250212-0552", "40022871", "2025-03-03T08:45:00", "no_show",
                           None),
}


@pytest.mark.parametrize("name", sorted(SCHEDULING))
def test_scheduling_maps_appointment_ids_start_and_status(mappings, name):
    event, placer_id, filler_id, start, status, order = SCHEDULING[name]
    result = mapped(mappings, name)
    assert result.event == event
    assert (result.appointment.placer_id, result.appointment.filler_id) == (placer_id, filler_id)
    assert result.appointment.start == start
    assert result.appointment.status == status
    assert result.placer_order_number == order
    assert result.patient.identifiers


def test_old_siu_carry_the_order_only_in_nte_text(mappings):
    assert mapped(mappings, "SIU_S26_v2.3.1.hl7").extras["note_reference"] == "LFM-ORD-77152"
    siu = mapped(mappings, "SIU_S15_v2.3.1.hl7")
    assert siu.extras["note_reference"] == "RFH25-000213"
    assert [i.authority for i in siu.patient.identifiers] == ["BDH", "GENHOSP"]


def test_consult_note_text_lines_are_joined_with_escapes_resolved(mappings):
    result = mapped(mappings, "ORU_R01_v2.5.1_consultnote.hl7")
    assert result.event == "note.received"
    assert result.placer_order_number == "RF250304-0481"
    doc = result.document
    assert (doc.id, doc.status, doc.author) == ("CN250327-0044", "final", "BENEDICT NAKAMURA-HOLT")
    lines = doc.text.split("\n")
    assert lines[0] == "RIVERBEND HEART INSTITUTE - OUTPATIENT CARDIOLOGY CONSULTATION"
    assert sum(1 for line in lines[:83] if line.strip()) == 69        # 83 TX lines, 69 not blank
    assert "walks 2 blocks | stops | resumes" in doc.text              # \F\
    assert "BMI 31.4 kg/m^2" in doc.text                               # \S\
    assert "MFP\\ECG\\20250304" in doc.text                            # \E\
    assert "IMPRESSION\nCCS class II" in doc.text                      # FT: \H\ \N\ dropped, \.br\ newline
    assert doc.content_base64 is None


def test_pdf_consult_note_keeps_the_base64(mappings):
    import base64
    doc = mapped(mappings, "ORU_R01_v2.5.1_pdf.hl7").document
    assert doc.content_type == "application/pdf"
    assert base64.b64decode(doc.content_base64).startswith(b"%PDF-")
    assert doc.text is None


def test_mdm_document(mappings):
    result = mapped(mappings, "MDM_T02_v2.5.hl7")
    assert result.event == "note.received"
    assert (result.placer_order_number, result.filler_order_number) == ("RF250304-0481", "CN250327-0044")
    assert result.document.id == "DOC-RBH-20250327-00044"
    assert result.document.status == "final"
    assert len(result.document.text.split("\n")) == 29
    assert referring_npis(result) == ["1408511859"]


@pytest.mark.parametrize("name,event", [("ADT_A04_v2.4.hl7", "patient.registered"),
                                        ("ADT_A04_v2.4_latin1.hl7", "patient.registered"),
                                        ("ADT_A08_v2.5.1.hl7", "patient.updated"),
                                        ("ADT_A03_v2.3.hl7", "visit.completed")])
def test_adt(mappings, name, event):
    result = mapped(mappings, name)
    assert result.event == event
    assert result.patient.identifiers[0].authority == "GENHOSP"
    assert result.extras["visit_number"].startswith("V25")


def test_adt_details(mappings):
    assert mapped(mappings, "ADT_A04_v2.4_latin1.hl7").patient.given_name == "Inês"
    a08 = mapped(mappings, "ADT_A08_v2.5.1.hl7")
    assert (a08.patient.phone, a08.patient.email) == ("5415550142", "tjfairweather@example.net")
    assert mapped(mappings, "ADT_A04_v2.4.hl7").extras["referral_reference"] == "RF250304-0481"


def test_batch_messages_map_too(mappings):
    messages, _ = split_frame(prepare((SAMPLES / "batch_ORM_ADT_v2.5.1.hl7").read_bytes()))
    results = [mappings.map(m.decode()) for m in messages]
    assert [r.event for r in results] == ["patient.registered", "referral.order", "patient.updated",
                                          "referral.order"]
    assert [r.urgency for r in results[1::2]] == ["routine", "stat"]
    assert [r.specialty for r in results[1::2]] == ["pulmonology", "otolaryngology"]


def test_a_type_without_mapping_is_no_mapping_not_a_crash(mappings):
    text, _ = text_of("ORM_O01_v2.3.hl7")
    with pytest.raises(NoMapping) as caught:
        mappings.map(text.replace("ORM^O01", "ORL^O22", 1))
    assert caught.value.message_type == "ORL^O22"
    assert "handles" in str(caught.value)
    with pytest.raises(NoMapping):
        mappings.map(text, "SIU^S16")


def test_an_event_mapped_to_ignored(mappings):
    text, _ = text_of("REF_I12_v2.4.hl7")
    assert mappings.map(text.replace("REF^I12", "REF^I15", 1)).event == "ignored"


# ---- vendor variants and reload: YAML only --------------------------------------

ZRF_MESSAGE = (SAMPLES / "ORM_O01_v2.5.1_bench25.hl7").read_text() + "ZRF|RFZ-778812^VENDORHUB|EXPRESS\n"


@pytest.fixture
def folder(tmp_path) -> Path:
    copy = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, copy)
    return copy


def add_fields(path: Path, lines: str) -> None:
    """Append entries under fields: (the last top-level key of each shipped file)."""
    text = path.read_text()
    assert text.rstrip().split("\n")[-1].startswith("  "), "fields: must be the last block"
    path.write_text(text.rstrip("\n") + "\n" + lines)


def test_a_z_segment_read_by_editing_yaml_only(folder):
    before = Mappings.load(folder).map(ZRF_MESSAGE)
    assert before.referral_number is None and before.urgency == "urgent"
    add_fields(folder / "orders.yaml", "  referral_number: ZRF-1.1\n"
                                       "  extras.vendor_priority: ZRF-2\n")
    text = (folder / "orders.yaml").read_text()
    (folder / "orders.yaml").write_text(text.replace(
        "  - event: referral.order                  # NW and anything else",
        "  - {when: {path: ZRF-2, equals: test}, event: ignored}\n  - event: referral.order"))
    after = Mappings.load(folder).map(ZRF_MESSAGE)
    assert after.referral_number == "RFZ-778812"
    assert after.extras["vendor_priority"] == "EXPRESS"
    assert Mappings.load(folder).map(ZRF_MESSAGE.replace("|EXPRESS", "|TEST")).event == "ignored"


def test_mapping_files_reload_without_restart(folder):
    live = Mappings.load(folder, reload_interval=0)
    assert live.map(ZRF_MESSAGE).referral_number is None
    add_fields(folder / "orders.yaml", "  referral_number: ZRF-1.1\n")
    assert live.map(ZRF_MESSAGE).referral_number == "RFZ-778812"
    # a broken edit keeps the last good version and says what is wrong
    good = (folder / "orders.yaml").read_text()
    (folder / "orders.yaml").write_text(good + "  specialty: PV1-\n")
    assert live.map(ZRF_MESSAGE).referral_number == "RFZ-778812"
    assert any("orders.yaml" in p and "fields.specialty" in p for p in live.problems)
    (folder / "orders.yaml").write_text(good)
    live.map(ZRF_MESSAGE)
    assert live.problems == []


def test_files_are_checked_at_most_once_per_interval(folder):
    slow = Mappings.load(folder, reload_interval=3600)
    add_fields(folder / "orders.yaml", "  referral_number: ZRF-1.1\n")
    assert slow.map(ZRF_MESSAGE).referral_number is None
    assert slow.refresh(force=True) is True
    assert slow.map(ZRF_MESSAGE).referral_number == "RFZ-778812"
    start = time.perf_counter()
    for _ in range(1000):
        slow.refresh()
    assert time.perf_counter() - start < 0.05


# ---- errors: file, line, key ---------------------------------------------------

BROKEN = """\
handles: [XYZ^Z01]
events:
  - event: referral.nonsense
tables:
  colours: {R: red}
fields:
  patient.family_name: PID5.1
  patient.favourite_colour: PID-99
  urgency: {path: PID-8, table: colors}
  diagnoses:
    each: DG1[*]
    fields: {code: DG1-3.1, severity: DG1-6}
  specialty: {path: PV1-10, transform: titlecase}
  reason: {path: NTE-3, when: {path: NTE-2, matches: "("}}
"""


def test_a_broken_mapping_names_file_line_and_key(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(MappingError) as caught:
        compile_file(path)
    problems = caught.value.problems
    expected = [(3, "events[0].event", "unknown event 'referral.nonsense'"),
                (7, "fields.patient.family_name", "bad HL7 path 'PID5.1'"),
                (8, "fields.patient.favourite_colour", "'favourite_colour' is not a field of Patient"),
                (9, "fields.urgency.table", "no table 'colors'"),
                (12, "fields.diagnoses.fields.severity", "not a field of Diagnosis"),
                (13, "fields.specialty.transform", "unknown transform 'titlecase'"),
                (14, "fields.reason.when.matches", "not a valid regular expression")]
    assert len(problems) == len(expected), problems
    for problem, (line, key, text) in zip(problems, expected):
        assert problem.startswith(f"{path}:{line}: {key}: "), problem
        assert text in problem


def test_invalid_yaml_and_output_that_does_not_validate(tmp_path):
    (tmp_path / "bad.yaml").write_text("handles: [ADT^A04\nfields: {}\n")
    with pytest.raises(MappingError) as caught:
        Mappings.load(tmp_path)
    assert caught.value.problems[0].startswith(f"{tmp_path / 'bad.yaml'}:")
    assert "not valid YAML" in caught.value.problems[0]
    (tmp_path / "bad.yaml").write_text("handles: [ORM^O01]\nevents: [{event: referral.order}]\n"
                                       "fields:\n  control_id: MSH-10\n  urgency: ORC-1\n")
    text, _ = text_of("ORM_O01_v2.3.hl7")
    with pytest.raises(MappingError) as caught:
        Mappings.load(tmp_path).map(text)
    assert caught.value.problems[0].startswith(f"{tmp_path / 'bad.yaml'}:5: fields.urgency: ")
    assert "'NW'" in caught.value.problems[0]


def test_two_files_handling_one_type_is_an_error(folder):
    shutil.copy(folder / "adt.yaml", folder / "adt_copy.yaml")
    with pytest.raises(MappingError) as caught:
        Mappings.load(folder)
    assert "ADT^A04 is already handled by" in str(caught.value)


# ---- CLI -------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run_engine.py"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_cli_map_prints_the_normalized_result():
    import json
    done = run_cli("map", str(SAMPLES / "SIU_S14_v2.5.1.hl7"), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["event"] == "appointment.completed" and doc["appointment"]["status"] == "completed"
    done = run_cli("map", str(SAMPLES / "ORM_O01_v2.5.1_bench25.hl7"))
    assert done.returncode == 0
    assert "placer_order_number                  RF250304-0481" in done.stdout


def test_cli_map_exits_2_on_mapping_errors_and_check_config_reports_them(tmp_path):
    from tests.conftest import write_config
    bad = tmp_path / "mappings"
    bad.mkdir()
    (bad / "broken.yaml").write_text(BROKEN)
    done = run_cli("map", str(SAMPLES / "ORM_O01_v2.3.hl7"), "--mappings", str(bad))
    assert done.returncode == 2
    assert f"{bad / 'broken.yaml'}:7: fields.patient.family_name: bad HL7 path" in done.stderr
    config = write_config(tmp_path, channel_extra="    transformer: {mappings: ./mappings}\n")
    done = run_cli("check-config", "--config", str(config))
    assert done.returncode == 2
    assert f"{bad / 'broken.yaml'}:3: events[0].event" in done.stderr


# ---- the language, one feature per line ---------------------------------------------

FEATURES = """\
handles: [ZZZ]
events:
  - {when: {any: [{path: ZZA-1, equals: cancel}, {path: ZZA-2, exists: true}]}, event: referral.cancel}
  - {type: ZZZ^Z02, event: referral.update}
  - {event: referral.order}
tables:
  spec: {map: {CARD: cardiology}, otherwise: keep}
fields:
  control_id: MSH-10
  specialty: {path: ZZA-3, transform: lower, table: spec}
  reason: {concat: [ZZA-4.2, ZZA-4.1], join: ", "}
  event_time: {path: ZZA-5, transform: timestamp}
  service_code: {path: ZZA-6, transform: {regex: "code=(\\\\w+)"}}
  service_text: {path: ZZA-6, when: {path: ZZA-3, matches: "^C"}, transform: upper}
  referral_number: {path: ZZA-7, default: none-given}
  extras.all_codes: {path: "ZZB[*]-1", all: true}
  extras.lines: {each: "ZZB[*]", when: {path: MSH-9.1, equals: zzz}, path: ZZB-2, join: "|"}
  extras.phone: {path: ZZA-8, transform: phone}
  diagnoses:
    distinct: [code]
    blocks:
      - each: ZZB[*]
        where: {path: ZZB-1, not_in: [skip]}
        fields: {code: ZZB-1, description: ZZB-2.2}
"""


def test_language_features(tmp_path):
    (tmp_path / "features.yaml").write_text(FEATURES)
    mappings = Mappings.load(tmp_path)
    text = ("MSH|^~\\&|A|B|C|D|20250101||ZZZ^Z01|C1|P|2.5\r"
            "ZZA|go||Card|Smith^Dr|20250304091215-0800|x code=AB12 y||+1 (541) 555-0100\r"
            "ZZB|D1|^first\rZZB|skip|\rZZB|D1|^again\rZZB|D2|^second")
    result = mappings.map(text)
    assert result.event == "referral.order"
    assert result.specialty == "cardiology"
    assert result.reason == "Dr, Smith"
    assert result.event_time == "2025-03-04T09:12:15-08:00"
    assert (result.service_code, result.service_text) == ("AB12", "X CODE=AB12 Y")
    assert result.referral_number == "none-given"
    assert result.extras["all_codes"] == ["D1", "skip", "D1", "D2"]
    assert result.extras["lines"] == "^first||^again|^second"      # whole fields, blank ones kept
    assert result.extras["phone"] == "5415550100"
    assert [(d.code, d.description) for d in result.diagnoses] == [("D1", "first"), ("D2", "second")]
    assert mappings.map(text.replace("ZZA|go|", "ZZA|go|x")).event == "referral.cancel"
    assert mappings.map(text.replace("ZZZ^Z01", "ZZZ^Z02")).event == "referral.update"
    assert mappings.map(text.replace("|Card|", "|Neuro|")).specialty == "neuro"


# ---- compiled shortcuts ------------------------------------------------------

def _values_of(value):
    """A compiled _Value and the values inside it read in the same context (alternatives, concat parts)."""
    from engine.mapping import _Value
    yield value
    if value.each is None:        # the parts of a value with its own each: read only inside its items
        for part in [*value.paths, *(value.concat or [])]:
            if isinstance(part, _Value):
                yield from _values_of(part)


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.hl7") if not p.name.startswith("batch")))
def test_shortcuts_chosen_at_compile_time_give_what_evaluate_gives(mappings, name):
    """`_Value.seal` picks a shortcut per value (a constant, a lone reader, read-then-finish): on every
    sample, for message-level fields and for each list block's items, it must agree with `evaluate`."""
    from engine.hl7v2.parse import parse
    from engine.mapping import _Ctx, _each, _ListSpec
    text, message_type = text_of(name)
    message = parse(text)
    checks = []                   # (contexts, top-level values read in them)
    for _, spec, _ in mappings.file_for(message_type).fields.values():
        if isinstance(spec, _ListSpec):
            checks += [(_each(_Ctx(message), each, where), fields.values()) for each, where, _, fields in spec.blocks]
        else:
            checks.append(([_Ctx(message)], [spec]))
    checked = 0
    for contexts, values in checks:
        for top in values:
            for value in _values_of(top):
                for ctx in contexts:
                    assert value.fn(ctx) == value.evaluate(ctx), (name, value)
                    checked += 1
    assert checked > 20


def test_a_parsed_and_mapped_message_leaves_no_garbage_for_the_cycle_collector(mappings):
    """Segments hold the separators, not their message: a message is freed when dropped (reference
    cycles made every message wait for, and pay, the cycle collector: ~15% of the referral pipeline)."""
    import gc
    text, message_type = text_of("ORM_O01_v2.5.1_bench25.hl7")
    mappings.map(text, message_type)
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            assert mappings.map(text, message_type).patient.family_name == "FAIRWEATHER"
        assert gc.collect() == 0
    finally:
        gc.enable()
