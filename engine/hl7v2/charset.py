"""MSH-18 character sets (HL7 table 0211) to Python codecs.

Declared sets are honoured strictly: bytes that are not valid in the declared
set raise `CharsetError` naming the offset, because the sender told us what it
sends. A label that is not in table 0211 but that Python knows (ISO-8859-1,
UTF8) is used; an unknown label is reported as a warning and read as undeclared. Undeclared (empty MSH-18, or ASCII, which real senders use loosely) is
decoded as UTF-8 when it is valid UTF-8, otherwise as Windows-1252 (then
Latin-1, which cannot fail), and the fallback is reported as a warning.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass

CODECS = {
    "ASCII": "ascii",
    "8859/1": "iso-8859-1", "8859/2": "iso-8859-2", "8859/3": "iso-8859-3", "8859/4": "iso-8859-4",
    "8859/5": "iso-8859-5", "8859/6": "iso-8859-6", "8859/7": "iso-8859-7", "8859/8": "iso-8859-8",
    "8859/9": "iso-8859-9", "8859/15": "iso-8859-15",
    "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "UNICODE": "utf-16", "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
    "ISO IR14": "iso2022_jp", "ISO IR87": "iso2022_jp", "ISO IR159": "iso2022_jp_1",
    "GB 18030-2000": "gb18030", "KS X 1001": "euc_kr", "BIG-5": "big5", "CNS 11643-1992": "big5",
    "ISO IR6": "ascii", "ISO IR100": "iso-8859-1", "ISO IR192": "utf-8",
}


class CharsetError(ValueError):
    """The bytes do not fit the declared character set, or the set is unknown."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    codec: str
    warning: str | None = None


def codec_for(msh18: str) -> str | None:
    """Python codec for the first repetition of MSH-18; None when undeclared, ASCII, or a label
    that neither HL7 table 0211 nor Python knows (then the message is read as undeclared)."""
    declared = msh18.split("~", 1)[0].split("^", 1)[0].strip().upper()
    if declared in ("", "ASCII"):
        return None
    codec = CODECS.get(declared)
    if codec is None:   # real senders also write ISO-8859-1, UTF8, windows-1252 ...
        try:
            info = codecs.lookup(declared.replace(" ", "-"))
        except (LookupError, ValueError):
            return None
        if not getattr(info, "_is_text_encoding", True):   # base64, zlib, rot13 are codecs too
            return None
        codec = info.name
    return codec


def decode(message: bytes, msh18: str) -> Decoded:
    codec = codec_for(msh18)
    if codec is None and msh18.strip() and msh18.strip().upper() != "ASCII":
        undeclared = decode(message, "")
        note = f"MSH-18 character set {msh18.strip()!r} is unknown; decoded as {undeclared.codec}"
        return Decoded(undeclared.text, undeclared.codec,
                       f"{note}; {undeclared.warning}" if undeclared.warning else note)
    if codec is not None:
        try:
            return Decoded(message.decode(codec), codec)
        except UnicodeDecodeError as exc:
            raise CharsetError(f"byte 0x{message[exc.start]:02X} at offset {exc.start} is not valid "
                               f"{msh18.strip()} as declared in MSH-18") from None
    try:
        return Decoded(message.decode("ascii"), "ascii")
    except UnicodeDecodeError:
        pass
    try:
        return Decoded(message.decode("utf-8"), "utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
    try:
        text, codec = message.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        text, codec = message.decode("latin-1"), "latin-1"
    return Decoded(text, codec, f"not UTF-8 at offset {offset} and MSH-18 declares no character set; "
                                f"decoded as {codec}")
