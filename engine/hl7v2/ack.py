"""The one ACK builder.

Rules (HL7 v2 chapter 2):
- original mode (MSH-15 and MSH-16 both empty): MSA-1 is AA / AE / AR;
- enhanced mode (either one valued): this engine sends the accept (commit)
  acknowledgment CA / CE / CR as MSH-15 asks (AL always, NE never, ER only on
  error, SU only on success; empty counts as AL);
- MSA-2 echoes MSH-10; the ACK swaps MSH-3/4 with MSH-5/6, keeps the
  message's separators, encoding characters, MSH-11, MSH-12 and MSH-18;
- MSH-9 is `ACK` (2.1/2.2), `ACK^<trigger>` (2.3, 2.3.1), `ACK^<trigger>^ACK` (2.4+);
- errors go in ERR: ERR-1 (ELD) before 2.5, ERR-2/3/4/8 from 2.5; MSA-3 carries
  the text too up to 2.6 (it is withdrawn in 2.7).
When the header could not be read at all, the ACK uses `|^~\\&`, version 2.5.1
and an empty MSA-2: there is no control id to echo.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from engine.hl7v2.header import Header

FALLBACK_VERSION = "2.5.1"
_ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}


class AckCode(str, Enum):
    AA = "AA"
    AE = "AE"
    AR = "AR"


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One ERR segment: an HL7 table 0357 code, the text, where (e.g. 'MSH-10'), severity E/W."""
    code: str
    text: str
    location: str = ""
    severity: str = "E"


_ERROR_NAMES = {
    "0": "Message accepted", "100": "Segment sequence error", "101": "Required field missing",
    "102": "Data type error", "103": "Table value not found", "200": "Unsupported message type",
    "203": "Unsupported version id", "204": "Unknown key identifier", "206": "Application record locked",
    "207": "Application internal error",
}


def wants_enhanced_ack(header: Header | None) -> bool:
    return header is not None and bool(header.field(15).strip() or header.field(16).strip())


def ack_code_for(header: Header | None, code: AckCode) -> str:
    """MSA-1 as sent: AA/AE/AR in original mode, CA/CE/CR in enhanced mode."""
    return _ENHANCED[code.value] if wants_enhanced_ack(header) else code.value


def enhanced_ack_wanted(header: Header, accepted: bool) -> bool:
    """Whether MSH-15 asks for an accept acknowledgment for this outcome."""
    condition = header.field(15).strip().upper() or b"AL"
    if condition == b"NE":
        return False
    if condition == b"ER":
        return not accepted
    if condition == b"SU":
        return accepted
    return True


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (2, 5, 1)


def escape(text: str, field_sep: str, encoding: str) -> str:
    """HL7 escape sequences for text placed inside a field."""
    comp, rep, esc, sub = (encoding + "^~\\&"[len(encoding):])[:4]
    out = text.replace(esc, f"{esc}E{esc}")
    for char, code in ((field_sep, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


def _cut(escaped: str, limit: int, esc: str) -> str:
    """At most `limit` characters of escaped text, never ending inside an escape sequence
    (escape characters come in pairs, so an odd count means the last sequence was cut)."""
    cut = escaped[:limit]
    return cut[:cut.rindex(esc)] if cut.count(esc) % 2 else cut


def build_ack(header: Header | None, code: AckCode, control_id: str, timestamp: str,
              errors: tuple[ErrorDetail, ...] | list[ErrorDetail] = ()) -> bytes:
    """One ACK message as bytes (latin-1 for the bytes we copy; the text we add is ASCII-escaped)."""
    if header is not None:
        fs = header.field_sep.decode("latin-1")
        enc = header.encoding.decode("latin-1")
        msh = {n: header.text(n) for n in (3, 4, 5, 6, 11, 12, 18)}
        trigger = header.trigger
    else:
        fs, enc, msh, trigger = "|", "^~\\&", {}, ""
    comp = enc[:1]
    version_field = msh.get(12) or FALLBACK_VERSION
    version = _version_tuple(version_field.split(comp, 1)[0])
    if version < (2, 3):
        msg_type = "ACK"
    elif version < (2, 4) or not trigger:
        msg_type = f"ACK{comp}{trigger}" if trigger else "ACK"
    else:
        msg_type = f"ACK{comp}{trigger}{comp}ACK"
    fields = ["MSH", enc, msh.get(5, ""), msh.get(6, ""), msh.get(3, ""), msh.get(4, ""), timestamp, "",
              msg_type, control_id, msh.get(11) or "P", version_field]
    if msh.get(18):
        fields += ["", "", "", "", "", msh[18]]
    ack_code = ack_code_for(header, code)
    msa = ["MSA", ack_code, header.text(10) if header is not None else ""]
    if errors and version < (2, 7):
        msa.append(_cut(escape(errors[0].text, fs, enc), 80, enc[2:3] or "\\"))
    segments = [fs.join(fields), fs.join(msa)]
    segments += [_err(e, version, fs, enc) for e in errors]
    return ("\r".join(segments) + "\r").encode("latin-1", "replace")


def _err(error: ErrorDetail, version: tuple[int, ...], fs: str, enc: str) -> str:
    comp, sub = enc[:1], (enc[3:4] or "&")
    segment, _, position = error.location.partition("-")
    name = _ERROR_NAMES.get(error.code, "Application error")
    text = escape(error.text, fs, enc)
    if version < (2, 5):
        # ERR-1 ELD: segment^sequence^field^code&text&table
        eld = comp.join([segment, "1" if segment else "", position, sub.join([error.code, name, "HL70357"])])
        return fs.join(["ERR", eld])
    location = comp.join([segment, "1", position] if position else [segment, "1"]) if segment else ""
    severity = error.severity if error.severity in ("E", "W", "I", "F") else "E"
    return fs.join(["ERR", "", location, comp.join([error.code, name, "HL70357"]), severity,
                    "", "", "", text])


def _batch_header(name: str, received: bytes, control_id: str, timestamp: str) -> tuple[str, str]:
    """(header segment, field separator) answering a received FHS/BHS: sender and receiver swapped,
    field 12 (reference control id) = the received field 11."""
    fs = received[3:4].decode("latin-1") or "|"
    fields = received.decode("latin-1").split(fs)
    get = (lambda n: fields[n - 1] if n - 1 < len(fields) else "")
    return fs.join([name, get(2) or "^~\\&", get(5), get(6), get(3), get(4), timestamp, "", "", "", control_id,
                    get(11)]), fs


def build_batch_ack(fhs: bytes | None, bhs: bytes | None, acks: list[bytes], control_id: str,
                    timestamp: str) -> bytes:
    """The answer to a batch: [FHS] BHS, the ACKs, BTS (count) [FTS], FHS/FTS only if the batch had them."""
    bhs_out, fs = _batch_header("BHS", bhs or fhs or b"BHS|^~\\&", control_id, timestamp)
    segments = [bhs_out]
    if fhs is not None:
        segments.insert(0, _batch_header("FHS", fhs, control_id, timestamp)[0])
    out = "\r".join(segments).encode("latin-1", "replace") + b"\r" + b"".join(acks)
    out += f"BTS{fs}{len(acks)}\r".encode("latin-1")
    if fhs is not None:
        out += f"FTS{fs}1\r".encode("latin-1")
    return out
