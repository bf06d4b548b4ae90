"""Second round on unseen layouts (issue 5): what the first OCR pass drops, claim-style numbered
boxes, more label wordings and value formats. The re-read tests run real tesseract on rendered
images; the rule tests use hand-built word boxes so each rule is pinned."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ocr import cleanup, extract_fields, lone_letters, second_look, tesseract
from ocr.fields import choices, icd10, identifiers, phones
from ocr.labels import find_labels
from ocr.model import Page
from tests.test_ocr_extract import page

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def heads(text: str) -> list[tuple[str, str | None]]:
    return [(text[l.start:l.end].strip(), l.field) for l in find_labels(text)]


def _form(draw_rows) -> np.ndarray:
    """A 300 dpi strip of form text: draw_rows(draw, font) draws on a white page."""
    im = Image.new("L", (2550, 900), 255)
    d = ImageDraw.Draw(im)
    d.text((150, 100), "PATIENT INFORMATION", font=ImageFont.truetype(FONT, 50), fill=0)
    draw_rows(d, ImageFont.truetype(FONT, 40))
    return cleanup.remove_rules(np.asarray(im), 300)


# ---- a lone M/F in a box, read again with psm 10 -----------------------------------------------

@pytest.mark.parametrize("letter", ["M", "F"])
def test_a_boxed_sex_letter_that_psm3_drops_is_read_again(letter):
    def rows(d, f):
        d.text((150, 250), "Name: Jane Smith", font=f, fill=0)
        d.text((1300, 250), "DOB: 04/12/1961", font=f, fill=0)
        d.text((150, 400), "Sex:", font=f, fill=0)
        d.rectangle((300, 385, 370, 460), outline=0, width=4)
        d.text((318, 398), letter, font=f, fill=0)
        d.text((1300, 400), "MRN: 4452331", font=f, fill=0)
    image = _form(rows)
    words = tesseract.ocr_words(image, psm=3)
    assert "Sex:" in [w.text for w in words]
    assert letter not in [w.text for w in words]          # the first pass drops it (why this exists)
    added = lone_letters.reread_sex_values(image, words)
    assert [w.text for w in added] == [letter]
    sex = added[0]
    label = next(w for w in words if w.text == "Sex:")
    assert sex.x0 > label.x1 and abs(sex.cy - label.cy) < label.height
    got = extract_fields([Page(1, 2550, 900, words + added, "ocr")])
    assert got["patient_sex"] == letter


def test_no_reread_where_the_value_was_read_or_the_zone_is_empty():
    def rows(d, f):
        d.text((150, 250), "Name: Jane Smith", font=f, fill=0)
        d.text((150, 400), "Sex: Female", font=f, fill=0)
        d.text((1300, 400), "Gender:", font=f, fill=0)
        d.text((1300, 250), "DOB: 04/12/1961", font=f, fill=0)
    image = _form(rows)
    words = tesseract.ocr_words(image, psm=3)
    assert lone_letters.reread_sex_values(image, words) == []


# ---- a block psm 3 dropped, read by a sparse second pass ---------------------------------------

def test_second_look_reads_what_the_first_pass_left_out():
    def rows(d, f):
        for i, (k, v) in enumerate([("Patient", "SMITH, JANE"), ("Plan", "Aetna PPO"), ("Chart #", "MR221311")]):
            d.text((150, 250 + 90 * i), k, font=f, fill=0)
            d.text((500, 250 + 90 * i), v, font=f, fill=0)
        d.text((1300, 250), "DOB", font=f, fill=0)
        d.text((1600, 250), "10/17/1962", font=f, fill=0)
        d.text((1300, 340), "Member ID", font=f, fill=0)
        d.text((1600, 340), "W99670936", font=f, fill=0)
    image = _form(rows)
    words = tesseract.ocr_words(image, psm=3)
    assert {"DOB", "10/17/1962"} <= {w.text for w in words}
    # the first pass as it goes wrong on a fax: the right-hand column of heads is not there
    dropped = [w for w in words if w.text not in ("DOB", "Member", "ID")]
    added = second_look.missed_words(image, dropped)
    assert {"DOB", "Member", "ID"} <= {w.text for w in added}
    assert all(w.line_key[0] == "second_look" for w in added)      # never merged with a first-pass line
    assert not any(w.text in ("SMITH,", "Plan", "10/17/1962") for w in added)
    got = extract_fields([Page(1, 2550, 900, dropped + added, "ocr")])
    assert got["patient_dob"] == "1962-10-17"
    assert got["insurance_member_id"] == "W99670936"


def test_second_look_does_nothing_when_every_ink_is_read():
    def rows(d, f):
        d.text((150, 250), "Name: Jane Smith", font=f, fill=0)
        d.text((150, 340), "DOB: 04/12/1961", font=f, fill=0)
    image = _form(rows)
    words = tesseract.ocr_words(image, psm=3)
    assert second_look.missed_words(image, words) == []


# ---- claim-style numbered boxes ----------------------------------------------------------------

@pytest.mark.parametrize("text,field,label", [
    ("1a. INSURED'S I.D. NUMBER", "insurance_member_id", "INSURED'S I.D. NUMBER"),
    ("11c. INSURANCE PLAN NAME OR PROGRAM NAME", "insurance_payer", "INSURANCE PLAN NAME OR PROGRAM NAME"),
    ("17. NAME OF REFERRING PROVIDER OR OTHER SOURCE", "referring_provider_name",
     "NAME OF REFERRING PROVIDER OR OTHER SOURCE"),
    ("17b. NPI", "npi", "NPI"), ("33 PROVIDER PH", "referring_practice_phone", "PROVIDER PH"),
    ("33. BILLING PROVIDER PH", "referring_practice_phone", "BILLING PROVIDER PH"),
    ("6. PATIENT ACCOUNT NO.", "patient_mrn", "PATIENT ACCOUNT NO."), ("25 PRIORITY", "urgency", "PRIORITY")])
def test_item_numbers_before_labels(text, field, label):
    assert heads(text) == [(label, field)]


@pytest.mark.parametrize("text", ["2 Main Street", "12 Oak Ave", "5 Routine", "11 INSURED'S GROUP NUMBER"])
def test_an_item_number_makes_nothing_else_a_label(text):
    assert [f for _, f in heads(text) if f] == []


def test_numbered_claim_boxes_end_to_end():
    got = extract_fields([page(
        (40, 0, "2. PATIENT'S NAME (Last Name, First Name, Middle Initial)"), (420, 0, "3. PATIENT'S BIRTH DATE"),
        (40, 1, "ROSS, WILLIE"), (420, 1, "11-15-2014"),
        (40, 2, "1a. INSURED'S I.D. NUMBER"), (250, 2, "11c. INSURANCE PLAN NAME"),
        (40, 3, "CA099716001"), (250, 3, "Tufts Health Plan"),
        (40, 4, "17. NAME OF REFERRING PROVIDER OR OTHER SOURCE"), (400, 4, "17b. NPI"),
        (40, 5, "Dr. Angela Campbell, FNP-C"), (400, 5, "2276364322"),
        (40, 6, "33. PROVIDER PH #"), (250, 6, "33b. OFFICE FAX NO."),
        (40, 7, "425.715.3674"), (250, 7, "568.877.4211"),
        (40, 8, "21. DIAGNOSIS OR NATURE OF ILLNESS OR INJURY (ICD-10)"),
        (50, 9, "A. D64.9"), (200, 9, "B. C34.90"))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Willie", "Ross")
    assert got["insurance_member_id"] == "CA099716001"
    assert got["insurance_payer"] == "Tufts Health Plan"
    assert got["referring_provider_name"] == "Angela Campbell"
    assert got["referring_provider_npi"] == "2276364322"
    assert got["referring_practice_phone"] == "4257153674"
    assert got["referring_practice_fax"] == "5688774211"
    assert got["diagnosis_codes"] == ["D64.9", "C34.90"]     # lettered codes in cells across the row


# ---- label wordings ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,field", [
    ("Work:", "phone"), ("H:", "phone"), ("C:", "phone"), ("Main #", "phone"), ("Main Line", "phone"),
    ("Main", "phone"), ("Direct:", "phone"), ("Alt Phone", "phone"),
    ("Mem ID", "insurance_member_id"), ("Recipient ID", "insurance_member_id"), ("Enrollee ID", "insurance_member_id"),
    ("ID Card #", "insurance_member_id"), ("Card #", "insurance_member_id"), ("Policy/ID", "insurance_member_id"),
    ("Ins #", "insurance_member_id"), ("Cert", "insurance_member_id"), ("MEMBER I.D. NUMBER", "insurance_member_id"),
    ("Health Insurance", "insurance_payer"), ("Plan Name", "insurance_payer"),
    ("Sex at Birth", "patient_sex"), ("Patient AcctNo.", "patient_mrn"), ("ICD-10 Dx", "diagnosis_codes")])
def test_more_wordings(text, field):
    assert heads(text) == [(text, field)]


@pytest.mark.parametrize("text", ["Main Street", "Work Address", "Direct Admit", "Certificate of necessity"])
def test_wordings_that_stay_values(text):
    assert [f for _, f in heads(text) if f] == []


def test_footer_letters_before_numbers_need_no_colon():
    text = "1448 Oak Ave, Tucson   T 555.234.5678   F 555.234.5679"
    assert heads(text) == [("T", "phone"), ("F", "fax")]
    assert heads("F 12") == [] and heads("Sex F") == [("Sex", "patient_sex")]
    got = extract_fields([page((40, 0, "SUMMIT CLINIC"), (40, 1, "Patient: DOE, JANE"),
                               (40, 6, "1448 Oak Ave, Tucson AZ   T (555) 234-5678   F (555) 234-5679"))])
    assert got["referring_practice_fax"] == "5552345679"


def test_a_value_before_a_label_is_no_garbled_label():
    assert heads("1-610-593-3952 REFERRAL DETAILS") == []
    got = extract_fields([page((40, 0, "PATIENT NAME"), (40, 1, "Anderson, Denise"), (40, 2, "RETURN FAX"),
                               (40, 3, "764.658.2248"), (40, 4, "CELL"), (40, 5, "1-610-593-3952"),
                               (300, 5, "REFERRAL DETAILS"))])
    assert got["patient_phone"] == "6105933952"


# ---- values ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["555 2345678", "(555) 2345678", "555-2345678", "[555] 234-5678", "{555} 234-5678",
                                  "555\u2013234\u20135678", "555\u2014234\u20145678", "555~234~5678", "(555} 234-5678"])
def test_phone_formats(text):
    assert phones.parse_phone(text) == "5552345678"


def test_phone_formats_that_are_no_phone():
    assert phones.parse_phone("123-4567890") is None
    assert phones.parse_phone("DOB 04/12/1961") is None


@pytest.mark.parametrize("text,ident", [("4183 5333 1", "418353331"), ("E059 1867 9", "E05918679"),
                                        ("W 1234 5678", "W12345678"), ("12345678 9", "12345678")])
def test_ids_printed_in_card_groups(text, ident):
    assert identifiers.parse_identifier(text) == ident


@pytest.mark.parametrize("text,sex", [("FRMAI F", "F"), ("FEMAIE", "F"), ("MAIE", "M"), ("MALT", "M"),
                                      ("MB \u2612 \u2610", "M"), ("MO \u2610 F \u2612", "F"),
                                      ("Mark", None), ("Fred", None), ("Frank", None)])
def test_garbled_sex_words_and_boxes_glued_to_letters(text, sex):
    assert choices.parse_sex(text) == sex


def test_undotted_code_whose_first_letter_reads_as_a_digit():
    assert icd10.find_codes("345909", labelled=True) == ["J45909"]     # J45.909, the J's hook lost
    assert icd10.find_codes("345909") == []                            # only under a diagnosis label


def test_a_medicare_id_never_holds_o_or_i():
    assert identifiers.fix_mbi("1TLOT9JP61D") == "1TL0T9JP61D"
    assert identifiers.fix_mbi("ABCOI1234") == "ABCOI1234"                  # not an MBI's shape: left alone
    got = extract_fields([page((40, 0, "INSURANCE"), (40, 1, "Plan: Medicare"), (40, 2, "Member ID: 1TLOT9JP61D"))])
    assert got["insurance_member_id"] == "1TL0T9JP61D"
    got = extract_fields([page((40, 0, "INSURANCE"), (40, 1, "Plan: Aetna"), (40, 2, "Member ID: 1TLOT9JP61D"))])
    assert got["insurance_member_id"] == "1TLOT9JP61D"                   # another payer's id may hold an O


@pytest.mark.parametrize("text,ident", [("7UB6 P3MM 20K", "7UB6P3MM20K"), ("YNW6 73483230", "YNW673483230"),
                                        ("ABC 123456789", "ABC123456789"), ("ID 12345678", "12345678"),
                                        ("W123 4567 GRP", "W1234567")])
def test_card_groups_with_letters(text, ident):
    assert identifiers.parse_identifier(text) == ident


@pytest.mark.parametrize("text,urgency", [("foutine", "routine"), ("Urgemt", "urgent"), ("Roulette", None),
                                          ("urgency", None)])
def test_garbled_urgency_words(text, urgency):
    assert choices.parse_urgency(text) == urgency


def test_payer_names_beside_numbers_and_box_heads():
    from ocr.fields.payers import match_payer
    assert match_payer("Harvard Pilgrim 945951") == ("Harvard Pilgrim", 1.0)
    assert match_payer("REFERRAL FORM") is None and match_payer("INSURED'SGROUPNUMBER") is None
    assert match_payer("Acme Health Cooperative") == ("Acme Health Cooperative", 0.5)   # an unknown plan is kept
    # an unknown reading beside the head does not hide the known plan under it
    got = extract_fields([page((40, 0, "11c. INSURANCE PLAN NAME OR PROGRAM NAME"), (330, 0, "INSURED'S GROUP NUMBER"),
                               (40, 1, "Harvard Pilgrim"), (330, 1, "945951"))])
    assert got["insurance_payer"] == "Harvard Pilgrim"


def test_family_first_head_without_a_comma_and_an_id_head_before_its_number():
    got = extract_fields([page((40, 0, "Patient Last First"), (200, 0, "BENNETT JANE"),
                               (40, 1, "Plan"), (200, 1, "BCBS PPO"), (300, 1, "ID"), (360, 1, "W99670936"))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Jane", "Bennett")
    assert got["insurance_payer"] == "Blue Cross Blue Shield"
    assert got["insurance_member_id"] == "W99670936"
    got = extract_fields([page((40, 0, "Referral To"), (200, 0, "ID"), (40, 1, "Patient: DOE, JANE"))])
    assert got["insurance_member_id"] is None and got["referred_to_specialty"] == "infectious disease"


def test_a_letter_read_over_punctuation_debris_replaces_it():
    from ocr.model import Word
    dot = Word(".", 100, 50, 110, 70, 30.0)
    label = Word("SEX", 95, 20, 140, 40, 96.0)
    f = Word("F", 101, 49, 112, 71, 92.0)
    assert lone_letters.without_debris([label, dot], [f]) == [label]
