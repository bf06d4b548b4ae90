"""HL7 v2 on the hot path: tidy the bytes, trust (or refuse) the MSH, decode, split, acknowledge.

Also the full parse and the HL7 paths analysts write in mappings, and the intake
step that turns one frame into journal rows and the ACKs sent after the commit.
"""
from __future__ import annotations

from pathlib import Path

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from engine import intake
from engine.hl7v2 import (AckCode, CharsetError, ErrorDetail, HeaderError, build_ack, decode, enhanced_ack_wanted,
                          get, get_all, parse, prepare, read_header, split_frame, wants_enhanced_ack)
from engine.hl7v2.parse import PathError
from engine.store import Stored

SAMPLES = Path(__file__).resolve().parent.parent / "sample_messages"
TIMESTAMP = "20261123101500+0000"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def single_message_samples() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*.hl7") if not p.name.startswith("batch"))


def message(version: str = "2.5.1", *, msh9: str = "ADT^A01", control_id: str = "CTRL-1", msh11: str = "P",
            msh15: str = "", msh16: str = "", msh18: str = "", body: bytes = b"PID|1||MRN1^^^GENHOSP^MR\r") -> bytes:
    fields = ["MSH", "^~\\&", "EPIC", "GENHOSP", "ENGINE", "SPEC", "20261123101500", "", msh9, control_id, msh11,
              version, "", "", msh15, msh16, "", msh18]
    return "|".join(fields).encode("latin-1") + b"\r" + body


def segments(ack: bytes) -> dict[str, list[str]]:
    """Segment name -> its fields, split on the ACK's own field separator (MSH fields numbered as HL7 does)."""
    text = ack.decode("latin-1")
    fs = text[3]
    out = {}
    for line in text.split("\r"):
        if line:
            fields = line.split(fs)
            out[fields[0]] = ["MSH", fs] + fields[1:] if fields[0] == "MSH" else fields
    return out


# ---- prepare ---------------------------------------------------------------

def test_prepare_leaves_a_clean_message_as_it_is():
    msg = message()
    assert prepare(msg) == msg


@pytest.mark.parametrize("raw", [
    b"MSH|^~\\&|A\nPID|1\n",                      # LF
    b"MSH|^~\\&|A\r\nPID|1\r\n",                  # CRLF
    b"\xef\xbb\xbfMSH|^~\\&|A\rPID|1\r",          # UTF-8 BOM
    b"\r\n\r\nMSH|^~\\&|A\r\n\r\nPID|1\n\n\n",    # blank lines before, between, after
    b"MSH|^~\\&|A\rPID|1\r \t\r\n\x00",           # trailing whitespace and NUL
    b"MSH|^~\\&|A\n   \nPID|1\n",                 # a line of spaces between segments
    b"MSH|^~\\&|A\rPID|1",                        # no final CR
])
def test_prepare_normalises_what_senders_send_to_cr_separated_segments(raw):
    assert prepare(raw) == b"MSH|^~\\&|A\rPID|1\r"


def test_prepare_does_not_touch_content_inside_segments():
    raw = b"MSH|^~\\&|A\rOBX|1|TX|||  indented text  |\r"
    assert prepare(raw) == raw


# ---- read_header -----------------------------------------------------------

@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"])
def test_read_header_slices_the_msh_of_each_version(version):
    header = read_header(message(version, msh9="ORM^O01^ORM_O01", control_id="MSG-0042", msh18="8859/1"))
    assert header.version == version
    assert header.control_id == "MSG-0042"
    assert header.message_type == "ORM^O01"
    assert header.sender == "EPIC|GENHOSP"
    assert (header.text(3), header.text(4), header.text(5), header.text(6)) == ("EPIC", "GENHOSP", "ENGINE", "SPEC")
    assert header.field_sep == b"|" and header.encoding == b"^~\\&"
    assert header.text(18) == "8859/1"
    assert header.field(1) == b"|" and header.field(2) == b"^~\\&"
    assert header.field(40) == b""


def test_read_header_accepts_alternate_separators():
    header = read_header(b"MSH#^~\\&#EPIC#GENHOSP#ENGINE#SPEC#20261123##ORM^O01#C9#P#2.4\rPID#1\r")
    assert header.field_sep == b"#"
    assert header.control_id == "C9" and header.version == "2.4" and header.message_type == "ORM^O01"


def test_read_header_reports_the_message_type_with_a_caret_whatever_the_component_separator():
    header = read_header(prepare(sample("ORM_O01_v2.5_altsep.hl7")))
    assert header.field_sep == b"#" and header.encoding == b"@~\\&"
    assert header.message_type == "ORM^O01"
    assert header.control_id == "CKI20250226154108388"
    assert header.version == "2.5"


def test_read_header_takes_the_version_from_the_first_component_of_msh12():
    assert read_header(message("2.5.1^USA")).version == "2.5.1"


def header_error(raw: bytes) -> HeaderError:
    with pytest.raises(HeaderError) as caught:
        read_header(raw)
    return caught.value


@pytest.mark.parametrize("raw", [
    b"PID|1||MRN1\rMSH|^~\\&|A|B|C|D|2026||ADT^A01|C1|P|2.5\r",   # MSH not first
    b"\x00\x01\x02\xff\xfe garbage \x8f\r",                      # binary junk
    b"",                                                         # empty
    prepare(b""),                                                # empty after prepare
    b"msh|^~\\&|A|B|C|D|2026||ADT^A01|C1|P|2.5\r",               # lower case is not MSH
], ids=["no-msh", "binary", "empty", "empty-prepared", "lowercase"])
def test_a_message_that_does_not_start_with_msh_is_a_segment_sequence_error(raw):
    exc = header_error(raw)
    assert (exc.code, exc.field) == ("100", "MSH")
    assert exc.header is None
    assert "MSH" in exc.text


def test_a_message_too_short_to_hold_separators_is_refused():
    exc = header_error(b"MSH|^~\r")
    assert exc.code == "100" and exc.field == "MSH-1" and exc.header is None


@pytest.mark.parametrize("sep", [b"A", b"7", b" ", b"\t"])
def test_a_letter_digit_or_blank_as_field_separator_is_a_data_type_error_in_msh1(sep):
    raw = b"MSH" + sep + b"^~\\&" + sep + b"A" + sep + b"B" + sep * 5 + b"ADT^A01" + sep + b"C1\r"
    exc = header_error(raw)
    assert (exc.code, exc.field) == ("102", "MSH-1")
    assert exc.header is None


@pytest.mark.parametrize("encoding", [b"", b"^", b"^^\\&", b"^~A&", b"^~ &", b"^~\\&^~"],
                         ids=["empty", "one", "duplicate", "letter", "space", "too-long"])
def test_bad_encoding_characters_are_a_data_type_error_in_msh2(encoding):
    exc = header_error(b"MSH|" + encoding + b"|EPIC|GENHOSP|ENGINE|SPEC|2026||ADT^A01|C1|P|2.5\r")
    assert (exc.code, exc.field) == ("102", "MSH-2")
    assert exc.header is None


def test_the_field_separator_inside_msh2_is_refused():
    exc = header_error(b"MSH#^#\\&#EPIC#GENHOSP#ENGINE#SPEC#2026##ADT^A01#C1#P#2.5\r")
    assert (exc.code, exc.field) == ("102", "MSH-2")


def test_missing_message_type_is_a_required_field_error_and_keeps_the_header():
    exc = header_error(message(msh9=""))
    assert (exc.code, exc.field) == ("101", "MSH-9")
    assert exc.header is not None and exc.header.control_id == "CTRL-1"


def test_missing_control_id_is_a_required_field_error_and_keeps_the_header():
    exc = header_error(message(control_id="  "))
    assert (exc.code, exc.field) == ("101", "MSH-10")
    assert exc.header is not None and exc.header.text(3) == "EPIC" and exc.header.message_type == "ADT^A01"


def test_an_unsupported_version_is_error_203_in_msh12():
    exc = header_error(message("3.0"))
    assert (exc.code, exc.field) == ("203", "MSH-12")
    assert "3.0" in exc.text and "2.5.1" in exc.text       # what was sent, and what would do
    assert exc.header is not None and exc.header.control_id == "CTRL-1"


def test_an_empty_version_is_a_required_field_error_in_msh12():
    exc = header_error(message(""))
    assert (exc.code, exc.field) == ("101", "MSH-12")
    assert exc.header is not None


# ---- character sets --------------------------------------------------------

def test_plain_ascii_decodes_as_ascii_without_warning():
    decoded = decode(b"MSH|^~\\&|A\rPID|1||M1||DOE^JOHN\r", "")
    assert (decoded.codec, decoded.warning) == ("ascii", None)


def test_undeclared_utf8_decodes_as_utf8_without_warning():
    decoded = decode("PID|1||M1||MÜLLER^JOSÉ\r".encode("utf-8"), "")
    assert decoded.text == "PID|1||M1||MÜLLER^JOSÉ\r"
    assert (decoded.codec, decoded.warning) == ("utf-8", None)


def test_ascii_declared_but_utf8_sent_is_taken_loosely_as_utf8():
    assert decode("JOSÉ".encode("utf-8"), "ASCII").codec == "utf-8"


def test_undeclared_bytes_that_are_not_utf8_fall_back_to_cp1252_with_a_warning():
    raw = b"NTE|1||\x93quoted\x94 note\r"
    decoded = decode(raw, "")
    assert decoded.text == "NTE|1||\u201cquoted\u201d note\r"
    assert decoded.codec == "cp1252"
    assert "offset 7" in decoded.warning and "cp1252" in decoded.warning


def test_bytes_undefined_in_cp1252_fall_back_to_latin1():
    decoded = decode(b"NTE|1||\x81\x8d\r", "")
    assert decoded.codec == "latin-1" and decoded.text == "NTE|1||\x81\x8d\r"
    assert decoded.warning


def test_declared_8859_1_is_honoured():
    decoded = decode(b"PID|1||M1||GON\xc7ALVES^IN\xcaS\r", "8859/1")
    assert decoded.text == "PID|1||M1||GONÇALVES^INÊS\r"
    assert (decoded.codec, decoded.warning) == ("iso-8859-1", None)


def test_declared_utf8_with_invalid_bytes_names_the_offset():
    raw = b"PID|1||M1||JOS\xe9\r"
    with pytest.raises(CharsetError) as caught:
        decode(raw, "UNICODE UTF-8")
    assert "offset 14" in caught.value.text and "0xE9" in caught.value.text
    assert "UNICODE UTF-8" in caught.value.text


def test_an_unknown_charset_label_is_read_as_undeclared_with_a_warning_naming_it():
    decoded = decode(b"PID|1||M1||JOS\xe9\r", "KLINGON")
    assert decoded.text.endswith("JOS\u00e9\r") and decoded.codec == "cp1252"
    assert "KLINGON" in decoded.warning


def test_charset_labels_outside_table_0211_that_python_knows_are_honoured():
    assert decode("Gonçalves".encode("latin-1"), "ISO-8859-1").text == "Gonçalves"
    assert decode("Müller".encode("utf-8"), "UTF8").text == "Müller"
    with pytest.raises(CharsetError):
        decode(b"\xff\xfe", "UTF8")


def test_the_first_repetition_of_msh18_decides():
    assert decode("É".encode("utf-8"), "UNICODE UTF-8~8859/1").codec == "utf-8"


def test_samples_declaring_a_charset_decode_with_it():
    latin1 = prepare(sample("ADT_A04_v2.4_latin1.hl7"))
    decoded = decode(latin1, read_header(latin1).text(18))
    assert decoded.codec == "iso-8859-1" and "Gonçalves" in decoded.text
    utf8 = prepare(sample("ORM_O01_v2.5.1_utf8.hl7"))
    decoded = decode(utf8, read_header(utf8).text(18))
    assert decoded.codec == "utf-8" and "Müller" in decoded.text


# ---- split_frame -----------------------------------------------------------

def test_a_single_message_frame_is_one_message_and_no_envelope():
    msg = message()
    assert split_frame(msg) == ([msg], None)


def test_two_messages_in_one_frame_are_split_at_the_second_msh():
    first, second = message(control_id="C1"), message(control_id="C2")
    messages, envelope = split_frame(first + second)
    assert messages == [first, second]
    assert envelope is None


def test_a_batch_is_split_into_its_messages_and_envelope():
    messages, envelope = split_frame(prepare(sample("batch_ORM_ADT_v2.5.1.hl7")))
    assert [read_header(m).control_id for m in messages] == [
        "MFPB20250320-0001", "MFPB20250320-0002", "MFPB20250320-0003", "MFPB20250320-0004"]
    assert all(m.endswith(b"\r") and m.count(b"MSH|") == 1 for m in messages)
    assert envelope.fhs.startswith(b"FHS|") and envelope.bhs.startswith(b"BHS|")
    assert envelope.bts == b"BTS|4|Nightly referral batch complete"
    assert envelope.fts.startswith(b"FTS|1")
    assert envelope.problems == []


def test_a_batch_whose_bts_count_disagrees_reports_it():
    batch = prepare(sample("batch_ORM_ADT_v2.5.1.hl7")).replace(b"BTS|4|", b"BTS|3|")
    messages, envelope = split_frame(batch)
    assert len(messages) == 4
    assert envelope.problems == ["BTS-1 declares 3 messages, batch holds 4"]


def test_a_batch_without_bts_reports_it():
    batch = b"BHS|^~\\&|EPIC|GENHOSP\r" + message(control_id="C1") + message(control_id="C2")
    messages, envelope = split_frame(batch)
    assert len(messages) == 2
    assert envelope.problems == ["batch has no BTS trailer"]


# ---- build_ack -------------------------------------------------------------

@pytest.mark.parametrize("version, msh9", [
    ("2.2", "ACK"), ("2.3", "ACK^A01"), ("2.3.1", "ACK^A01"),
    ("2.4", "ACK^A01^ACK"), ("2.5", "ACK^A01^ACK"), ("2.5.1", "ACK^A01^ACK"),
])
def test_ack_message_type_follows_the_version(version, msh9):
    ack = segments(build_ack(read_header(message(version)), AckCode.AA, "ACK1", TIMESTAMP))
    assert ack["MSH"][9] == msh9


def test_ack_echoes_control_id_swaps_sender_and_receiver_and_mirrors_the_rest():
    header = read_header(message("2.4", control_id="MSG-77", msh11="T", msh18="8859/1"))
    raw = build_ack(header, AckCode.AA, "ACK1", TIMESTAMP)
    assert raw.startswith(b"MSH|^~\\&|") and raw.endswith(b"\r")
    ack = segments(raw)
    msh = ack["MSH"]
    assert (msh[3], msh[4], msh[5], msh[6]) == ("ENGINE", "SPEC", "EPIC", "GENHOSP")
    assert (msh[7], msh[10], msh[11], msh[12], msh[18]) == (TIMESTAMP, "ACK1", "T", "2.4", "8859/1")
    assert ack["MSA"] == ["MSA", "AA", "MSG-77"]
    assert set(ack) == {"MSH", "MSA"}


def test_ack_keeps_alternate_separators():
    header = read_header(prepare(sample("ORM_O01_v2.5_altsep.hl7")))
    raw = build_ack(header, AckCode.AE, "ACK1", TIMESTAMP, [ErrorDetail("101", "a # b @ c", "PID-3")])
    assert raw.startswith(b"MSH#@~\\&#REFHUB#RIVERBEND_GH#CEDARKNOLL_EHR#CEDAR_KNOLL_IM#")
    ack = segments(raw)
    assert ack["MSH"][9] == "ACK@O01@ACK"
    assert ack["MSA"][1:3] == ["CE", "CKI20250226154108388"]
    assert ack["ERR"][2:5] == ["PID@1@3", "101@Required field missing@HL70357", "E"]
    assert ack["ERR"][8] == "a \\F\\ b \\S\\ c"
    parsed = hl7.parse(raw.decode("latin-1"))
    assert parsed.unescape(str(parsed.segment("ERR")[8])) == "a # b @ c"


def test_original_mode_answers_aa_ae_ar():
    header = read_header(message("2.5.1"))
    assert not wants_enhanced_ack(header)
    for code in AckCode:
        assert segments(build_ack(header, code, "ACK1", TIMESTAMP))["MSA"][1] == code.value


@pytest.mark.parametrize("msh15, msh16", [("AL", ""), ("NE", "AL"), ("", "AL"), ("ER", "NE"), ("SU", "")])
def test_enhanced_mode_answers_ca_ce_cr(msh15, msh16):
    header = read_header(message("2.5.1", msh15=msh15, msh16=msh16))
    assert wants_enhanced_ack(header)
    answers = {code: segments(build_ack(header, code, "ACK1", TIMESTAMP))["MSA"][1] for code in AckCode}
    assert answers == {AckCode.AA: "CA", AckCode.AE: "CE", AckCode.AR: "CR"}


@pytest.mark.parametrize("msh15, on_success, on_error", [
    ("AL", True, True), ("", True, True), ("NE", False, False), ("ER", False, True), ("SU", True, False),
    ("al", True, True),
])
def test_msh15_decides_whether_an_accept_ack_is_sent(msh15, on_success, on_error):
    header = read_header(message("2.5.1", msh15=msh15, msh16="AL"))
    assert enhanced_ack_wanted(header, accepted=True) is on_success
    assert enhanced_ack_wanted(header, accepted=False) is on_error


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4"])
def test_before_2_5_the_error_goes_in_err1_as_eld(version):
    header = read_header(message(version))
    ack = segments(build_ack(header, AckCode.AR, "ACK1", TIMESTAMP,
                             [ErrorDetail("101", "MSH-10 message control id is missing", "MSH-10")]))
    assert ack["ERR"] == ["ERR", "MSH^1^10^101&Required field missing&HL70357"]
    assert ack["MSA"] == ["MSA", "AR", "CTRL-1", "MSH-10 message control id is missing"]


@pytest.mark.parametrize("version", ["2.5", "2.5.1", "2.6"])
def test_from_2_5_each_error_goes_in_err2_3_4_8(version):
    header = read_header(message(version))
    raw = build_ack(header, AckCode.AE, "ACK1", TIMESTAMP,
                    [ErrorDetail("102", "bad date", "PID-7"), ErrorDetail("0", "note", "", "W")])
    lines = raw.decode("latin-1").split("\r")
    assert [line for line in lines if line.startswith("ERR")] == [
        "ERR||PID^1^7|102^Data type error^HL70357|E||||bad date",
        "ERR|||0^Message accepted^HL70357|W||||note",
    ]
    assert segments(raw)["MSA"] == ["MSA", "AE", "CTRL-1", "bad date"]


def test_msa3_is_withdrawn_from_2_7():
    ack = segments(build_ack(read_header(message("2.7")), AckCode.AE, "ACK1", TIMESTAMP,
                             [ErrorDetail("102", "bad date", "PID-7")]))
    assert ack["MSA"] == ["MSA", "AE", "CTRL-1"]


@pytest.mark.parametrize("version", ["2.4", "2.5.1"])
def test_error_text_with_separators_is_escaped_and_cannot_break_the_ack(version):
    text = "bad | pipe ^ caret ~ tilde \\ backslash & amp\r\nnext line"
    raw = build_ack(read_header(message(version)), AckCode.AE, "ACK1", TIMESTAMP,
                    [ErrorDetail("102", text, "PID-7")])
    assert raw.count(b"\r") == 3                     # MSH, MSA, ERR
    parsed = hl7.parse(raw.decode("latin-1"))
    msa = parsed.segment("MSA")
    assert len(msa) == 4 and str(msa[2]) == "CTRL-1"
    assert parsed.unescape(str(msa[3])) == text.replace("\r\n", "  ")


def test_a_long_error_text_is_cut_for_msa3_without_splitting_an_escape_sequence():
    text = "x" * 78 + "|" + "y" * 40
    raw = build_ack(read_header(message("2.5.1")), AckCode.AE, "ACK1", TIMESTAMP, [ErrorDetail("102", text, "")])
    msa3 = segments(raw)["MSA"][3]
    assert len(msa3) <= 80
    assert msa3.count("\\") % 2 == 0, msa3           # no escape sequence left open
    assert text.startswith(hl7.parse(raw.decode()).unescape(msa3))
    assert segments(raw)["ERR"][8] == "x" * 78 + "\\F\\" + "y" * 40   # ERR-8 keeps it all


def test_without_a_readable_header_the_ack_uses_defaults_and_an_empty_msa2():
    raw = build_ack(None, AckCode.AR, "ACK1", TIMESTAMP, [ErrorDetail("100", "no MSH", "MSH")])
    ack = segments(raw)
    assert raw.startswith(b"MSH|^~\\&|")
    assert ack["MSH"][9] == "ACK" and ack["MSH"][12] == "2.5.1"
    assert ack["MSA"][:3] == ["MSA", "AR", ""]
    assert ack["ERR"][2:5] == ["MSH^1", "100^Segment sequence error^HL70357", "E"]


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"])
@pytest.mark.parametrize("code", list(AckCode))
def test_acks_parse_with_python_hl7_and_hl7apy(version, code):
    errors = [] if code is AckCode.AA else [ErrorDetail("101", "control id | missing", "MSH-10")]
    raw = build_ack(read_header(message(version, msh15="AL")), code, "ACK9", TIMESTAMP, errors)
    text = raw.decode("latin-1")
    parsed = hl7.parse(text)
    assert str(parsed.segment("MSA")[2]) == "CTRL-1"
    tolerant = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    assert tolerant.msh.msh_12.to_er7() == version
    assert tolerant.msa.msa_1.to_er7() == {"AA": "CA", "AE": "CE", "AR": "CR"}[code.value]
    assert tolerant.msa.msa_2.to_er7() == "CTRL-1"
    assert tolerant.msh.msh_9.to_er7().startswith("ACK")


# ---- parse and paths -------------------------------------------------------

@pytest.fixture(scope="module")
def referral():
    """The batch's second message: an ORM with two DG1s."""
    messages, _ = split_frame(prepare(sample("batch_ORM_ADT_v2.5.1.hl7")))
    return parse(messages[1].decode("utf-8"))


@pytest.fixture(scope="module")
def consult_note():
    return parse(prepare(sample("ORU_R01_v2.5.1_consultnote.hl7")).decode("utf-8"))


def test_get_reads_fields_components_and_subcomponents(referral):
    assert get(referral, "MSH-9.2") == "O01"
    assert get(referral, "MSH-9") == "ORM^O01^ORM_O01"
    assert get(referral, "MSH-10") == "MFPB20250320-0002"
    assert get(referral, "PID-5.1") == "BRIGHTWATER"
    assert get(referral, "PV1-7.9.2") == "2.16.840.1.113883.4.6"


def test_star_on_a_segment_reads_every_one(referral):
    assert get_all(referral, "DG1[*]-3.1") == ["J45.909", "R06.02"]
    assert get(referral, "DG1[2]-3") == "R06.02^Shortness of breath^I10"
    assert get(referral, "DG1-3.1") == "J45.909"          # no index: the first


def test_star_on_a_field_reads_every_repetition():
    two_ids = parse(prepare(sample("SIU_S15_v2.3.1.hl7")).decode("utf-8"))
    assert get_all(two_ids, "PID-3[*].1") == ["BDH0088127", "30914458"]
    assert get(two_ids, "PID-3[2].4") == "GENHOSP"
    assert get_all(two_ids, "PID-3[*]") == ["BDH0088127^^^BDH^MR", "30914458^^^GENHOSP^MR"]


def test_indexed_segment_and_missing_values(consult_note, referral):
    assert get(consult_note, "OBX[2]-5") == "Patient: FAIRWEATHER, THEODORE JAMES    MRN: 10483726    DOB: 03/14/1958"
    assert get(referral, "OBX[2]-5") is None and get_all(referral, "OBX[*]-5") == []
    assert get(referral, "PID-3[2].1") is None
    assert get(referral, "DG1[9]-3") is None


@pytest.mark.parametrize("path", ["pid-3", "PID3", "PID-", "PID-3.x", "PID-3[a]", "PID[0]-x", "", "PID-3.1.2.3"])
def test_a_malformed_path_raises_path_error_naming_it(referral, path):
    with pytest.raises(PathError) as caught:
        get(referral, path)
    assert repr(path) in str(caught.value)


# ---- every sample, end to end through the hot path -------------------------

@pytest.mark.parametrize("path", single_message_samples(), ids=lambda p: p.name)
def test_every_sample_reads_parses_and_is_acknowledged_with_its_control_id(path):
    raw = path.read_bytes()
    prepared = prepare(raw)
    header = read_header(prepared)
    text = decode(prepared, header.text(18)).text
    parsed = hl7.parse(text)
    assert str(parsed.segment("MSH")[10]) == header.control_id

    taken = intake.take_frame(raw, "ehr_inbound", "127.0.0.1:5000")
    assert [r.message.status for r in taken.received] == ["received"]
    assert taken.received[0].message.raw == raw
    assert taken.received[0].message.control_id == header.control_id
    acks = intake.acks(taken, [Stored(id=41)])
    if header.field(15) == b"NE":
        assert acks == []
        return
    assert len(acks) == 1
    ack = hl7.parse(acks[0].decode("latin-1"))
    msa = ack.segment("MSA")
    assert str(msa[1]) == ("CA" if wants_enhanced_ack(header) else "AA")
    assert str(msa[2]) == header.control_id
    assert str(ack.segment("MSH")[10]) == "ACK41"


# ---- intake ----------------------------------------------------------------

def test_a_batch_frame_gets_one_batch_ack_with_an_ack_per_message():
    taken = intake.take_frame(sample("batch_ORM_ADT_v2.5.1.hl7"), "ehr_inbound", "peer")
    assert len(taken.received) == 4 and taken.envelope is not None
    acks = intake.acks(taken, [Stored(id=n) for n in (11, 12, 13, 14)])
    assert len(acks) == 1
    lines = acks[0].decode("latin-1").split("\r")
    assert lines[-1] == ""
    names = [line[:3] for line in lines[:-1]]
    assert "BHS" in names and names.index("BHS") < names.index("MSH")
    bts = [line for line in lines if line.startswith("BTS")]
    assert bts == ["BTS|4"] and names.index("BTS") > max(i for i, n in enumerate(names) if n == "MSA")
    msas = [line.split("|") for line in lines if line.startswith("MSA")]
    assert [m[2] for m in msas] == [r.message.control_id for r in taken.received]
    assert [m[1] for m in msas] == ["CA"] * 4


def test_two_messages_in_one_frame_get_two_acks():
    frame = message(control_id="C1") + message(control_id="C2").replace(b"\r", b"\n")
    taken = intake.take_frame(frame, "ehr_inbound", "peer")
    assert [r.message.control_id for r in taken.received] == ["C1", "C2"]
    assert all("one of 2 messages" in r.message.warnings for r in taken.received)
    acks = intake.acks(taken, [Stored(id=1), Stored(id=2)])
    assert [segments(a)["MSA"][1:3] for a in acks] == [["AA", "C1"], ["AA", "C2"]]


def test_a_malformed_message_is_kept_byte_for_byte_as_an_error_and_answered_ar():
    raw = b"\xef\xbb\xbfMSH|^~\\&|EPIC|GENHOSP|ENGINE|SPEC|2026||ORM^O01||P|2.4\r\nPID|1||M1\n"
    taken = intake.take_frame(raw, "ehr_inbound", "peer")
    row = taken.received[0].message
    assert row.raw == raw
    assert (row.status, row.ack_code) == ("error", "AR")
    assert row.error == "MSH-10 message control id is missing"
    acks = intake.acks(taken, [Stored(id=5)])
    ack = segments(acks[0])
    assert ack["MSA"][:3] == ["MSA", "AR", ""]
    assert ack["MSH"][5:7] == ["EPIC", "GENHOSP"]      # the header was still usable: answered to the sender
    assert ack["ERR"][1] == "MSH^1^10^101&Required field missing&HL70357"


def test_junk_instead_of_a_message_is_kept_and_refused():
    raw = b"\x00\x01 not hl7 at all \xff"
    taken = intake.take_frame(raw, "ehr_inbound", "peer")
    row = taken.received[0].message
    assert row.raw == raw and (row.status, row.ack_code) == ("error", "AR")
    assert "MSH" in row.error
    assert segments(intake.acks(taken, [Stored(id=6)])[0])["MSA"][1:3] == ["AR", ""]


def test_bytes_breaking_the_declared_charset_are_kept_and_answered_ae():
    raw = message(msh18="UNICODE UTF-8", body=b"PID|1||M1||JOS\xe9\r")
    taken = intake.take_frame(raw, "ehr_inbound", "peer")
    row = taken.received[0].message
    assert (row.status, row.ack_code) == ("error", "AE") and "offset" in row.error
    assert segments(intake.acks(taken, [Stored(id=7)])[0])["MSA"][1:3] == ["AE", "CTRL-1"]
