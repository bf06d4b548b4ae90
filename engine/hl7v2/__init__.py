"""HL7 v2 as pure functions over bytes: header check, character sets, batches, ACKs, parsing.

Nothing here does I/O. The hot path (listener -> journal -> ACK) uses only
`prepare`, `read_header`, `split_frame` and `build_ack`, which slice bytes and never
build a full parse tree; `parse` (a lazy split-based tree, engine.hl7v2.parse) runs after the ACK.
"""
from engine.hl7v2.header import (
    SUPPORTED_VERSIONS, Header, HeaderError, prepare, read_header, first_patient_id,
)
from engine.hl7v2.charset import CharsetError, decode
from engine.hl7v2.batch import BatchEnvelope, split_frame
from engine.hl7v2.ack import AckCode, ErrorDetail, build_ack, wants_enhanced_ack, enhanced_ack_wanted
from engine.hl7v2.parse import ParseError, PathError, parse, get, get_all

__all__ = [
    "SUPPORTED_VERSIONS", "Header", "HeaderError", "prepare", "read_header", "first_patient_id",
    "CharsetError", "decode", "BatchEnvelope", "split_frame",
    "AckCode", "ErrorDetail", "build_ack", "wants_enhanced_ack", "enhanced_ack_wanted",
    "ParseError", "PathError", "parse", "get", "get_all",
]
