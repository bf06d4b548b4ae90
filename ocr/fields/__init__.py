"""Field families: pure parsers that turn a printed value into the contract's form, or None.

Each parser takes the text found next to a label (or in prose) and returns the
normalized value only when it validates; the extractor tries the next candidate
otherwise. No I/O, no layout: see `ocr.extract` for where candidates come from.
"""
