"""Benchmark HL7 message: a realistic 25-segment, ~2 KB ORM^O01 v2.5.1 order.

Nothing is measured here. The module provides the payload that every benchmark
sends, and makes producing a copy with a new MSH-10 (message control id) cheap:
the template is split once into the bytes before and after MSH-10, so each
message costs a single bytes concatenation.

If ``sample_messages/ORM_O01_v2.5.1_bench25.hl7`` exists in the repository it
is used as the template (LF / CRLF turned into CR); otherwise the built-in
template below is used.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FILE = REPO_ROOT / "sample_messages" / "ORM_O01_v2.5.1_bench25.hl7"

# 25 segments: MSH PID PD1 PV1 PV2 IN1 IN2 GT1 AL1 ORC OBR NTEx4 DG1x3 OBXx6 BLG
_BUILTIN_SEGMENTS = [
    "MSH|^~\\&|EPIC|MERCY_HOSP|LAB_SYS|MERCY_LAB|20240517143512-0500||ORM^O01^ORM_O01|CTRLID0000|P|2.5.1"
    "|||AL|NE|USA|ASCII",
    "PID|1||MRN00482211^^^MERCY_HOSP^MR~123456789^^^USSSA^SS||HARTMANN^ELIZABETH^ANNE^^MRS||19620314|F"
    "||2106-3^White^CDCREC|4512 ORCHARD LANE^APT 3B^SPRINGFIELD^IL^62704^USA^H||^PRN^PH^^1^217^5550143"
    "|||M^Married^HL70002||ACC7781200^^^MERCY_HOSP^AN",
    "PD1|||MERCY FAMILY PRACTICE^^10045|1234567893^WALLACE^GREGORY^^^DR^^^NPI",
    "PV1|1|O|OUTPT^ROOM12^BED1^MERCY_HOSP||||1234567893^WALLACE^GREGORY^^^DR^^^NPI||MED|||||||"
    "|OP|VN20240517-0042^^^MERCY_HOSP^VN",
    "PV2|||R51^Headache^I10",
    "IN1|1|BCBS-PPO^Blue Cross PPO|60054|BLUE CROSS BLUE SHIELD OF IL|PO BOX 805107^^CHICAGO^IL^60680"
    "||^WPN^PH^^1^800^5551234|GRP0098812|MERCY EMPLOYEES||||20240101|20241231|||HARTMANN^ELIZABETH"
    "|SEL^Self^HL70063",
    "IN2|1|123456789|||||||||||||||||||||||||||||||||||||ESP",
    "GT1|1|GT00482211|HARTMANN^ELIZABETH^ANNE||4512 ORCHARD LANE^APT 3B^SPRINGFIELD^IL^62704^USA"
    "|^PRN^PH^^1^217^5550143||19620314|F",
    "AL1|1|DA^Drug allergy^HL70127|70618^Penicillin^RXNORM|MO|Hives",
    "ORC|NW|ORD7734521^EPIC|||SC||^^^20240517150000^^R||20240517143500|JSMITH^SMITH^JANE"
    "||1234567893^WALLACE^GREGORY^^^DR^^^NPI|OUTPT^ROOM12^^MERCY_HOSP",
    "OBR|1|ORD7734521^EPIC||80053^Comprehensive metabolic panel^CPT4|R|20240517143500|20240517144500"
    "||||N|||SER|1234567893^WALLACE^GREGORY^^^DR^^^NPI||||||||LAB",
    "NTE|1|P|Patient fasting since 22:00 the previous evening.",
    "NTE|2|P|Draw before morning dose of metformin.",
    "NTE|3|P|Call critical results to ordering provider pager 4471.",
    "NTE|4|L|Collect in gold-top SST tube, spin within 30 minutes.",
    "DG1|1|I10|E11.9^Type 2 diabetes mellitus without complications^I10||20240517|W",
    "DG1|2|I10|I10^Essential (primary) hypertension^I10||20240517|W",
    "DG1|3|I10|E78.5^Hyperlipidemia, unspecified^I10||20240517|W",
    "OBX|1|NM|29463-7^Body weight^LN||72.4|kg^kilogram^UCUM|||||F",
    "OBX|2|NM|8302-2^Body height^LN||165|cm^centimeter^UCUM|||||F",
    "OBX|3|NM|8480-6^Systolic BP^LN||138|mm[Hg]^mmHg^UCUM|||||F",
    "OBX|4|NM|8462-4^Diastolic BP^LN||86|mm[Hg]^mmHg^UCUM|||||F",
    "OBX|5|CWE|11341-5^History of occupation^LN||RN^Registered nurse^L||||||F",
    "OBX|6|ST|49541-6^Fasting status^LN||Fasting 12 hours||||||F",
    "BLG|CH|CR|ACC7781200^^^MERCY_HOSP^AN",
]


def _normalise(raw: bytes) -> bytes:
    """Turn a file's line endings into HL7 CR segment separators (one trailing CR)."""
    text = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    segments = [s for s in text.split(b"\r") if s.strip()]
    return b"\r".join(segments) + b"\r"


def _split_at_msh10(msg: bytes) -> tuple[bytes, bytes]:
    """Return (bytes before MSH-10, bytes after MSH-10) of a CR-separated message."""
    if not msg.startswith(b"MSH"):
        raise ValueError("template does not start with MSH")
    fs = msg[3:4]
    seg_end = msg.find(b"\r")
    pos = 3  # MSH-1 is the separator itself; MSH-n (n >= 2) follows the (n-1)th separator
    for _ in range(8):
        pos = msg.index(fs, pos + 1, seg_end)
    start = pos + 1
    end = msg.find(fs, start, seg_end)
    if end < 0:
        end = seg_end
    return msg[:start], msg[end:]


def load_template() -> tuple[bytes, bytes, str]:
    """Return (head, tail, source): the template split around MSH-10 and where it came from."""
    if SAMPLE_FILE.is_file():
        try:
            head, tail = _split_at_msh10(_normalise(SAMPLE_FILE.read_bytes()))
            return head, tail, str(SAMPLE_FILE.relative_to(REPO_ROOT))
        except ValueError:
            pass  # malformed / half-written file: fall back to the built-in template
    builtin = ("\r".join(_BUILTIN_SEGMENTS) + "\r").encode("ascii")
    head, tail = _split_at_msh10(builtin)
    return head, tail, "builtin"


_HEAD, _TAIL, TEMPLATE_SOURCE = load_template()


def orm_o01(control_id: str) -> bytes:
    """The benchmark ORM^O01 (CR separators, no MLLP framing) with MSH-10 = control_id."""
    return _HEAD + control_id.encode("ascii") + _TAIL


def orm_o01_parts() -> tuple[bytes, bytes]:
    """(head, tail) so that head + control_id + tail is the message; for hot loops."""
    return _HEAD, _TAIL


if __name__ == "__main__":
    m = orm_o01("DEMO0001")
    segs = m.rstrip(b"\r").split(b"\r")
    print(f"source={TEMPLATE_SOURCE} bytes={len(m)} segments={len(segs)}")
    print(" ".join(s[:3].decode() for s in segs))
