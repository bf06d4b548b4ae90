"""The synthetic fax corpus: deterministic per seed, truthful, openable; the scorer scores fairly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import simple_icd_10_cm as icd
from pdf2image import convert_from_path
from PIL import Image

from bench.fax_corpus import generate, layouts, layouts_holdout
from bench.fax_corpus.record import CONTRACT_KEYS, CLINICAL, npi_check_digit, npi_is_valid
from bench.fax_corpus.score import field_correct, find_documents, run_one, score_document, summarize

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faxes")
    generate.generate(seed=11, count=14, out=out)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_same_bytes_other_seed_other_documents(corpus, tmp_path):
    generate.generate(seed=11, count=14, out=tmp_path / "again")
    assert _files(tmp_path / "again") == _files(corpus)
    generate.generate(seed=12, count=3, out=tmp_path / "other")
    t11 = json.loads((corpus / "fax_11_0000.json").read_text())
    t12 = json.loads((tmp_path / "other" / "fax_12_0000.json").read_text())
    assert t11 != t12


def test_manifest_covers_every_layout_and_marks_the_holdout_quarter(corpus):
    docs = json.loads((corpus / "manifest.json").read_text())["documents"]
    assert len(docs) == 14
    train, holdout = set(layouts.LAYOUTS), set(layouts_holdout.LAYOUTS)
    assert len(holdout) / (len(train) + len(holdout)) == pytest.approx(0.25, abs=0.05)
    assert not train & holdout
    assert {d["layout"] for d in docs} >= train | holdout     # 12 layouts, 14 documents: each at least once
    for d in docs:
        assert d["split"] == ("holdout" if d["layout"] in holdout else "train")
        assert (corpus / d["file"]).exists()


def test_truth_keys_and_values_are_valid(corpus):
    for path in corpus.glob("fax_*.json"):
        t = json.loads(path.read_text())
        assert tuple(t) == CONTRACT_KEYS
        assert t["patient_family_name"] and t["patient_given_name"] and t["patient_dob"]
        if t["referring_provider_npi"] is not None:
            assert npi_is_valid(t["referring_provider_npi"])
        for code in t["diagnosis_codes"] or []:
            assert icd.is_valid_item(code), code
        for key in ("patient_phone", "referring_practice_phone", "referring_practice_fax"):
            assert t[key] is None or (len(t[key]) == 10 and t[key].isdigit())
        assert t["patient_sex"] in (None, "M", "F", "U")
        assert t["urgency"] in (None, "routine", "urgent", "stat")
        assert t["referred_to_specialty"] is None or t["referred_to_specialty"] == t["referred_to_specialty"].lower()
        name = t["referring_provider_name"]
        assert name is None or ("." not in name and "," not in name and len(name.split()) >= 2)


def test_npi_check_digit_matches_the_published_example():
    assert npi_check_digit("123456789") == "3"      # CMS example NPI 1234567893
    assert npi_is_valid("1234567893") and not npi_is_valid("1234567894")


def test_every_clinical_code_in_the_vocabulary_is_valid_icd10cm():
    for codes, _ in CLINICAL.values():
        for c in codes:
            assert icd.is_valid_item(c), c


def test_every_file_opens_with_its_pages_and_fax_resolution(corpus):
    docs = json.loads((corpus / "manifest.json").read_text())["documents"]
    for d in docs:
        path = corpus / d["file"]
        if path.suffix == ".pdf":
            assert len(convert_from_path(path, dpi=20)) == d["pages"]
        else:
            with Image.open(path) as im:
                assert getattr(im, "n_frames", 1) == d["pages"]
                if d["format"] == "tiff_standard":
                    assert tuple(round(v) for v in im.info["dpi"]) == (204, 98)
                    assert im.info["compression"] == "group4"
                    assert im.height < im.width * 11 / 8.5     # squashed: the reader must fix the aspect
                if d["format"] == "tiff_fine":
                    assert tuple(round(v) for v in im.info["dpi"]) == (204, 196)


def test_text_layer_pdf_carries_the_patient_name(tmp_path):
    generate.generate(seed=5, count=3, out=tmp_path, split="train", formats=["pdf_text"])
    t = json.loads((tmp_path / "fax_5_0000.json").read_text())
    text = subprocess.run(["pdftotext", str(tmp_path / "fax_5_0000.pdf"), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert t["patient_family_name"].upper() in text.upper()


def test_scorer_perfect_prediction_is_100_and_wrong_ones_score_lower(corpus):
    docs = find_documents(corpus)
    truths = {d["name"]: json.loads(d["path"].with_suffix(".json").read_text()) for d in docs}
    perfect = summarize([run_one(lambda p: dict(truths[p.stem]), d) for d in docs])
    assert perfect["overall_field_accuracy"] == 1.0 and not perfect["crashes"]

    def sloppy(path):
        t = dict(truths[path.stem])
        t["patient_dob"] = "1900-01-01"
        t["patient_family_name"] = (t["patient_family_name"] or "").lower() + "  "   # case/space: still right
        return t
    worse = summarize([run_one(sloppy, d) for d in docs])
    assert worse["per_field"]["patient_dob"] == 0.0
    assert worse["per_field"]["patient_family_name"] == 1.0
    assert worse["overall_field_accuracy"] == pytest.approx(1 - 1 / len(CONTRACT_KEYS))

    def crash(path):
        raise RuntimeError("reader failed")
    crashed = summarize([run_one(crash, d) for d in docs[:2]])
    assert crashed["overall_field_accuracy"] == 0.0 and len(crashed["crashes"]) == 2


def test_field_normalization():
    assert field_correct("patient_phone", "5551234567", "(555) 123-4567")
    assert field_correct("diagnosis_codes", ["I10", "E11.9"], ["e11.9", "I10"])
    assert not field_correct("diagnosis_codes", ["I10", "E11.9"], ["I10"])
    assert field_correct("referring_provider_name", "Sarah Chen", "SARAH  CHEN")
    assert field_correct("reason", "Evaluate new onset atrial fibrillation", "Evaluate new onset atrial fibrilation")
    assert not field_correct("reason", "Evaluate new onset atrial fibrillation", "Screening colonoscopy")
    assert field_correct("insurance_payer", None, None)
    assert not field_correct("insurance_payer", None, "Aetna")
    assert not field_correct("urgency", "urgent", None)
    assert score_document({k: None for k in CONTRACT_KEYS}, None) == {k: False for k in CONTRACT_KEYS}


def test_generate_cli_writes_files_and_rejects_unknown_formats(tmp_path):
    run = [sys.executable, str(REPO / "bench/fax_corpus/generate.py"), "--seed", "3", "--count", "2",
           "--out", str(tmp_path)]
    assert subprocess.run(run, capture_output=True).returncode == 0
    assert len(list(tmp_path.glob("fax_3_*.json"))) == 2
    bad = subprocess.run(run + ["--formats", "gif"], capture_output=True, text=True)
    assert bad.returncode == 2 and "valid:" in bad.stderr


def test_extra_split_is_its_own_and_all_keeps_its_old_layouts(tmp_path, corpus):
    from bench.fax_corpus import layouts_extra
    docs = generate.generate(seed=8, count=len(layouts_extra.LAYOUTS), out=tmp_path, split="extra",
                             formats=["pdf_text"])
    assert {d["layout"] for d in docs} == set(layouts_extra.LAYOUTS)
    assert {d["split"] for d in docs} == {"extra"}
    for d in docs:
        t = json.loads((tmp_path / f"{d['name']}.json").read_text())
        assert tuple(t) == CONTRACT_KEYS and t["patient_family_name"] and t["referring_provider_name"]
        for code in t["diagnosis_codes"] or []:
            assert icd.is_valid_item(code), code
    listed = {d["layout"] for d in json.loads((corpus / "manifest.json").read_text())["documents"]}
    assert not listed & set(layouts_extra.LAYOUTS)          # "all" is train + holdout, as before
    assert not listed & set(layouts_extra.LAYOUTS_2)


def test_extra2_split_has_the_second_round_layouts(tmp_path):
    from bench.fax_corpus import layouts_extra
    docs = generate.generate(seed=8, count=len(layouts_extra.LAYOUTS_2), out=tmp_path, split="extra2",
                             formats=["pdf_text"])
    assert {d["layout"] for d in docs} == set(layouts_extra.LAYOUTS_2)
    assert {d["split"] for d in docs} == {"extra2"}
    for d in docs:
        t = json.loads((tmp_path / f"{d['name']}.json").read_text())
        assert tuple(t) == CONTRACT_KEYS and t["patient_family_name"] and t["referring_provider_name"]


def test_cached_scoring_refuses_held_out_documents(tmp_path):
    generate.generate(seed=9, count=1, out=tmp_path, split="holdout", formats=["pdf_text"])
    run = subprocess.run([sys.executable, "-m", "bench.fax_corpus.score", str(tmp_path), "--via", "cached"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "refuses held-out" in run.stderr
    assert not (tmp_path / ".ocr_cache").exists()
