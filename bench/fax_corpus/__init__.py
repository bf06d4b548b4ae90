"""Synthetic referral-fax corpus: a seeded generator with ground truth, and a scorer.

`generate.py` writes NAME.pdf|.tif|.png|.jpg beside NAME.json (the DESIGN.md extract
contract) and a manifest; `score.py` runs the extractor over a folder and prints
field accuracy. Layouts in `layouts_holdout.py` are the held-out split: extractor
authors must not read that module.
`layouts_extra.py` holds more training-side layouts (`generate --split extra`), written
to look unlike `layouts.py`; the `all` split stays train + holdout.
"""
