"""Field extraction on word fixtures (no tesseract): each field family, then whole layouts.

A fixture page is written as text rows placed on a grid, the way OCR or a text layer
hands words over (each word with a box); the extractor must pair labels and values
by geometry alone.
"""
from __future__ import annotations

import datetime as dt

import pytest

from ocr import extract_fields
from ocr.fields import choices, dates, icd10, identifiers, names, payers, phones, specialty
from ocr.model import CHECKED, UNCHECKED, Page, Word

CHAR_W, LINE_H = 6.0, 10.0


def page(*rows: tuple[float, float, str], number: int = 1, conf: float = 95.0) -> Page:
    """Rows of (x, line number, text): words get boxes 6 points a character, 10-point lines."""
    words = []
    for x, line, text in rows:
        y = line * 2.2 * LINE_H
        cursor = x
        for tok in text.split(" "):
            if tok:
                words.append(Word(tok, cursor, y, cursor + CHAR_W * len(tok), y + LINE_H, conf))
            cursor += CHAR_W * (len(tok) + 1)
    return Page(number, 612, 792, words, "text_layer")


# ---- field families ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,given,family", [
    ("DOE, JANE Q", "Jane", "Doe"), ("Jane Q. Doe", "Jane", "Doe"), ("Dr. John A. Smith, MD", "John", "Smith"),
    ("O'BRIEN, SEAN", "Sean", "O'Brien"), ("Mary Van Dyke", "Mary", "Van Dyke"), ("Smith-Jones, Anna", "Anna", "Smith-Jones"),
    ("MCALLISTER, RUTH", "Ruth", "McAllister"), ("Patricia St. Pierre", "Patricia", "St. Pierre")])
def test_names_in_every_order(text, given, family):
    assert names.split_name(text) == (given, family)


@pytest.mark.parametrize("text", ["Springfield Family Medicine", "Date of Birth", "12345", "X"])
def test_things_that_are_not_names(text):
    assert names.split_name(text) is None or names.looks_like_org(text)


@pytest.mark.parametrize("text,iso", [
    ("03/04/1951", "1951-03-04"), ("3-4-51", "1951-03-04"), ("1951-03-04", "1951-03-04"),
    ("March 4, 1951", "1951-03-04"), ("04 Mar 1951", "1951-03-04"), ("4-Mar-51", "1951-03-04"),
    ("19510304", "1951-03-04"), ("25/12/1960", "1960-12-25"), ("O3/O4/l951", "1951-03-04"), ("Sept. 9, 1988", "1988-09-09")])
def test_dates_many_formats(text, iso):
    assert dates.parse_date(text, past=True, today=dt.date(2026, 11, 23)) == iso


def test_two_digit_birth_year_is_in_the_past():
    assert dates.parse_date("01/02/30", past=True, today=dt.date(2026, 11, 23)) == "1930-01-02"
    assert dates.parse_date("01/02/19", past=True, today=dt.date(2026, 11, 23)) == "2019-01-02"
    assert dates.parse_date("02/30/1950", past=True) is None


@pytest.mark.parametrize("text", ["(555) 234-5678", "555.234.5678 x12", "+1 555 234 5678", "5552345678",
                                  "1-555-234-5678", "555-234-S678"])
def test_phones_to_ten_digits(text):
    assert phones.parse_phone(text) == "5552345678"


def test_invalid_phone_numbers_are_refused():
    assert phones.parse_phone("123-456-7890") is None      # area code cannot start with 1
    assert phones.parse_phone("555-12-3456") is None


def test_npi_check_digit():
    assert identifiers.npi_valid("1234567893")
    assert not identifiers.npi_valid("1234567890")
    assert identifiers.parse_npi("NPI: 1234567893") == "1234567893"
    assert identifiers.parse_npi("NPI: l234567893") == "1234567893"   # OCR l for 1, repaired because it validates
    assert identifiers.parse_npi("NPI: 1234567890") is None


def test_identifiers_as_printed():
    assert identifiers.parse_identifier("# MR-00123 (old)") == "MR-00123"
    assert identifiers.parse_identifier("W 1234 5678") == "W12345678"
    assert identifiers.parse_identifier("none") is None
    assert identifiers.fix_id_ocr("12O45l7") == "1204517"


@pytest.mark.parametrize("text,payer", [("BCBS PPO", "Blue Cross Blue Shield"), ("United Health Care", "UnitedHealthcare"),
                                        ("Blue Cross Blue Shie1d", "Blue Cross Blue Shield"), ("Medicare Part B", "Medicare"),
                                        ("aetna", "Aetna")])
def test_payers_canonical(text, payer):
    assert payers.match_payer(text)[0] == payer


def test_unknown_payer_kept_as_printed():
    assert payers.match_payer("Acme Health Co-op") == ("Acme Health Co-op", 0.5)


@pytest.mark.parametrize("text,canon", [("Cardiac", "cardiology"), ("GI", "gastroenterology"), ("Ortho", "orthopedics"),
                                        ("ENT", "otolaryngology"), ("Neurosurgery", "neurosurgery"),
                                        ("Orthopaedic Surgery", "orthopedics"), ("PT", "physical therapy")])
def test_specialty_synonyms(text, canon):
    assert specialty.parse_specialty(text) == canon


def test_gi_needs_capitals_in_prose():
    assert specialty.find_specialties("we gave it a try") == []


@pytest.mark.parametrize("text,value", [(f"{CHECKED} Urgent {UNCHECKED} Routine", "urgent"), ("[X] STAT [ ] Routine", "stat"),
                                        ("Routine [ ] Urgent [X]", "urgent"), ("Routine", "routine"), ("ASAP", "urgent"),
                                        ("non-urgent", "routine"), (f"{UNCHECKED} Routine {UNCHECKED} Urgent", None)])
def test_urgency_words_and_boxes(text, value):
    assert choices.parse_urgency(text) == value


@pytest.mark.parametrize("text,value", [("F", "F"), ("Female", "F"), (f"{UNCHECKED} M {CHECKED} F", "F"), ("MALE", "M"),
                                        ("[X] Male [ ] Female", "M"), ("Unknown", "U")])
def test_sex(text, value):
    assert choices.parse_sex(text) == value


def test_icd10_validated_and_repaired():
    assert icd10.find_codes("Dx: I48.91 Atrial fibrillation; E11.9", labelled=True) == ["I48.91", "E11.9"]
    assert icd10.find_codes("148.91 and RO6.02", labelled=True) == ["I48.91", "R06.02"]   # 1->I, O->0 validate
    assert icd10.find_codes("A1C 7.2, vitamin B12") == []                                 # not codes
    assert icd10.find_codes("Z99.99") == []                                               # not a valid code
    assert icd10.find_codes("I4891", labelled=True) == ["I4891"]                           # as printed


# ---- layouts ---------------------------------------------------------------------------------

def test_colon_form_with_sections_and_generic_labels():
    p = page((40, 0, "Springfield Family Medicine"), (40, 1, "Tel: (217) 555-0100   Fax: (217) 555-0199"),
             (40, 3, "PATIENT INFORMATION"),
             (40, 4, "Name: DOE, JANE Q"), (300, 4, "DOB: 03/04/1951"),
             (40, 5, "Sex: F"), (300, 5, "Phone: 217-555-0142"),
             (40, 6, "MRN: A123456"),
             (40, 8, "INSURANCE"), (40, 9, "Carrier: BCBS PPO"), (300, 9, "Member #: XYZ123456789"),
             (40, 11, "REFERRING PROVIDER"), (40, 12, "Name: Dr. John A. Smith, MD"), (300, 12, "NPI: 1234567893"),
             (40, 13, "Phone: 217-555-0100"), (300, 13, "Fax: 217-555-0199"),
             (40, 15, "Referred to: Cardiology"), (300, 15, f"Urgency: {CHECKED} Urgent {UNCHECKED} Routine"),
             (40, 16, "Dx: I48.91, R00.2"),
             (40, 17, "Reason for referral: Palpitations and new atrial fibrillation"))
    got = extract_fields([p])
    assert got["patient_family_name"] == "Doe" and got["patient_given_name"] == "Jane"
    assert got["patient_dob"] == "1951-03-04" and got["patient_sex"] == "F"
    assert got["patient_phone"] == "2175550142" and got["patient_mrn"] == "A123456"
    assert got["insurance_payer"] == "Blue Cross Blue Shield" and got["insurance_member_id"] == "XYZ123456789"
    assert got["referring_provider_name"] == "John Smith" and got["referring_provider_npi"] == "1234567893"
    assert got["referring_practice_phone"] == "2175550100" and got["referring_practice_fax"] == "2175550199"
    assert got["referred_to_specialty"] == "cardiology" and got["urgency"] == "urgent"
    assert got["diagnosis_codes"] == ["I48.91", "R00.2"]
    assert got["reason"] == "Palpitations and new atrial fibrillation"
    assert all(0 <= c <= 1 for c in got["confidence"].values())
    assert got["confidence"]["patient_dob"] > 0.5


def test_header_row_table_values_below():
    p = page((40, 2, "Patient Name"), (200, 2, "DOB"), (300, 2, "Sex"), (360, 2, "MRN"),
             (40, 3, "Garcia, Luis"), (200, 3, "7/14/1962"), (300, 3, "M"), (360, 3, "889123"),
             (40, 5, "Referring Physician"), (200, 5, "NPI"), (330, 5, "Phone"),
             (40, 6, "Maria Lopez MD"), (200, 6, "1234567893"), (330, 6, "312-555-0188"))
    got = extract_fields([p])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Luis", "Garcia")
    assert got["patient_dob"] == "1962-07-14" and got["patient_sex"] == "M" and got["patient_mrn"] == "889123"
    assert got["referring_provider_name"] == "Maria Lopez" and got["referring_provider_npi"] == "1234567893"
    assert got["referring_practice_phone"] == "3125550188"


def test_value_above_its_label_on_an_underlined_form():
    p = page((40, 2, "Castillo, Hannah"), (320, 2, "08/22/94"),
             (40, 3, "PATIENT NAME (LAST, FIRST)"), (320, 3, "DATE OF BIRTH"),
             (40, 6, "Oscar Health"), (320, 6, "ZX99812"),
             (40, 7, "Insurance"), (320, 7, "Member ID"))
    got = extract_fields([p])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Hannah", "Castillo")
    assert got["patient_dob"] == "1994-08-22"
    assert got["insurance_payer"] == "Oscar Health" and got["insurance_member_id"] == "ZX99812"


def test_cover_sheet_sender_is_the_referring_practice():
    cover = page((40, 0, "FAX COVER SHEET"),
                 (40, 2, "TO: Heart Cardiology Associates"), (40, 3, "Fax: (555) 700-1000"), (40, 4, "Phone: (555) 700-2000"),
                 (40, 6, "FROM: Lakeside Primary Care"), (40, 7, "Fax: (555) 300-1000"), (40, 8, "Phone: (555) 300-2000"),
                 (40, 10, "Pages: 2"))
    form = page((40, 1, "Patient: Amy Chen"), (40, 2, "DOB: 1/2/1980"), (40, 3, "Refer to: GI"), number=2)
    got = extract_fields([cover, form])
    assert got["referring_practice_fax"] == "5553001000"
    assert got["referring_practice_phone"] == "5553002000"
    assert got["referred_to_specialty"] == "gastroenterology"
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Amy", "Chen")


def test_narrative_letter():
    p = page((40, 0, "Dear Colleague,"),
             (40, 2, "I am referring Mrs. Jane Doe, DOB 3/4/1951, to cardiology for evaluation"),
             (40, 3, "of palpitations. She reports episodes for three months; her ECG shows AF"),
             (40, 4, "(I48.91). Please see her soon."),
             (40, 6, "Sincerely,"), (40, 8, "Robert Kim, MD"), (40, 9, "NPI 1234567893"))
    got = extract_fields([p])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Jane", "Doe")
    assert got["patient_dob"] == "1951-03-04" and got["patient_sex"] == "F"
    assert got["referred_to_specialty"] == "cardiology"
    assert got["diagnosis_codes"] == ["I48.91"]
    assert got["referring_provider_name"] == "Robert Kim" and got["referring_provider_npi"] == "1234567893"
    assert got["reason"].startswith("evaluation of palpitations")


def test_dense_ehr_line_with_several_pairs():
    p = page((40, 1, "PATIENT: SMITH, ROBERT   DOB: 05/06/1948   SEX: M   MRN: 00471123"),
             (40, 2, "HM PH: 614.555.0123   EMERG CONTACT: Lisa Smith   PH: 614-555-0999"),
             (40, 3, "PRIMARY INS: MEDICARE   SUBSCRIBER ID: 1EG4TE5MK72"))
    got = extract_fields([p])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Robert", "Smith")
    assert got["patient_sex"] == "M" and got["patient_mrn"] == "00471123"
    assert got["patient_phone"] == "6145550123"           # not the emergency contact's
    assert got["insurance_payer"] == "Medicare" and got["insurance_member_id"] == "1EG4TE5MK72"


def test_checkbox_grid_specialty():
    p = page((40, 1, "Refer to:"),
             (60, 2, f"{UNCHECKED} Cardiology"), (200, 2, f"{UNCHECKED} Dermatology"),
             (60, 3, f"{CHECKED} Neurology"), (200, 3, f"{UNCHECKED} Urology"),
             (40, 5, f"Priority: {UNCHECKED} Routine {CHECKED} STAT"))
    got = extract_fields([p])
    assert got["referred_to_specialty"] == "neurology" and got["urgency"] == "stat"


def test_nothing_said_means_null():
    got = extract_fields([page((40, 1, "Thank you for your business."))])
    assert all(got[k] in (None, []) for k in ("patient_family_name", "patient_dob", "urgency", "diagnosis_codes",
                                              "referring_practice_fax", "insurance_payer"))
    assert extract_fields([])["patient_dob"] is None


def test_compact_intake_labels_without_colons():
    p = page((40, 1, "Pt: Nguyen, Thomas  DOB 4/5/77  M  Ph (503) 555-0111  MRN 7788123"),
             (40, 2, "Ins: Kaiser  Mbr# KP00991122  Ref Dr: Susan Wu DO  NPI 1234567893"),
             (40, 3, "Tel 503-555-0100  Fx 503-555-0101  Spec: Neuro  Pri: Routine"),
             (40, 4, "Dx: G43.909, R51.9"))
    got = extract_fields([p])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Thomas", "Nguyen")
    assert got["patient_dob"] == "1977-04-05" and got["patient_sex"] == "M"      # the lone M after the DOB
    assert got["patient_phone"] == "5035550111" and got["patient_mrn"] == "7788123"
    assert got["insurance_payer"] == "Kaiser Permanente" and got["insurance_member_id"] == "KP00991122"
    assert got["referring_provider_name"] == "Susan Wu"
    assert got["referring_practice_phone"] == "5035550100" and got["referring_practice_fax"] == "5035550101"
    assert got["referred_to_specialty"] == "neurology" and got["urgency"] == "routine"
    assert got["diagnosis_codes"] == ["G43.909", "R51.9"]


def test_idaho_zip_is_not_an_id_and_area_code_is_not_a_diagnosis():
    p = page((40, 1, "Patient: Lee, Ann"), (40, 2, "9870 Church St, Boise, ID 83702"), (40, 3, "Phone (809) 555-0123"))
    got = extract_fields([p])
    assert got["patient_mrn"] is None and got["insurance_member_id"] is None
    assert got["diagnosis_codes"] == []


@pytest.mark.parametrize("row,name", [
    ("Referring Provider: Brooks, Alan, MD", "Alan Brooks"), ("Referring Physician: Alan J. Brooks, M.D.", "Alan Brooks"),
    ("Author: Alan Brooks ARNP", "Alan Brooks"), ("Electronically signed by: Alan Brooks, MD on 11/23/2026", "Alan Brooks"),
    ("FROM: Dr. Alan Brooks", "Alan Brooks"), ("PCP: ALAN BROOKS, DO", "Alan Brooks")])
def test_referring_provider_label_wordings(row, name):
    got = extract_fields([page((40, 1, "Patient: Lee, Ann"), (40, 3, row))])
    assert got["referring_provider_name"] == name


def test_cover_sender_practice_name_is_not_a_provider():
    got = extract_fields([page((40, 1, "FROM: Lakeside Primary Care"), (40, 2, "Fax: (555) 300-1000"))])
    assert got["referring_provider_name"] is None and got["referring_practice_fax"] == "5553001000"
