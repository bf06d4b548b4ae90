"""OCR confusion repair for fields that can only hold digits."""
from __future__ import annotations

import re

# letters tesseract prints for digits on faxed text
TO_DIGIT = str.maketrans({"O": "0", "o": "0", "Q": "0", "D": "0", "I": "1", "l": "1", "i": "1", "|": "1",
                          "!": "1", "L": "1", "S": "5", "s": "5", "B": "8", "Z": "2", "z": "2", "G": "6",
                          "b": "6", "g": "9", "q": "9", "T": "7", "A": "4"})


def digits_only(text: str) -> str:
    """The digits of a numeric token, with look-alike letters read as digits."""
    return re.sub(r"\D", "", text.translate(TO_DIGIT))


def fix_digit_token(token: str) -> str:
    """A token that is mostly digits, with look-alike letters replaced; other tokens unchanged."""
    core = re.sub(r"[^0-9A-Za-z|!]", "", token)
    if not core:
        return token
    n_digits = sum(c.isdigit() for c in core)
    if n_digits >= max(2, len(core) * 0.6):
        return token.translate(TO_DIGIT)
    return token
