"""Label synonyms, name order hints and prose-bounded values, on layouts the fax corpus
generator does not make (hand-built word boxes, no OCR)."""
from __future__ import annotations

import pytest

from ocr import extract_fields
from ocr.extract import _name_family_first, _payer
from ocr.labels import find_labels
from tests.test_ocr_extract import page


@pytest.mark.parametrize("text,field,label", [
    ("Referring Prov.: John Smith", "referring_provider_name", "Referring Prov.:"),
    ("Referring MD/DO: John Smith", "referring_provider_name", "Referring MD/DO:"),
    ("Record No: 12345678", "patient_mrn", "Record No:"),
    ("Patient #: 12345678", "patient_mrn", "Patient #:"),
    ("Patient No.: 12345678", "patient_mrn", "Patient No.:"),
    ("Hosp #: 12345678", "patient_mrn", "Hosp #:"),
    ("EHR ID: 12345678", "patient_mrn", "EHR ID:"),
    ("Unit No.: 12345678", "patient_mrn", "Unit No.:"),
    ("Problem List: J44.9", "diagnosis_codes", "Problem List:"),
    ("Conditions: J44.9", "diagnosis_codes", "Conditions:"),
    ("Sex/Gender: F", "patient_sex", "Sex/Gender:"),
    ("Birth Sex: F", "patient_sex", "Birth Sex:"),
    ("Forename: John", "patient_given_name", "Forename:"),
    ("Req by: Roy Bailey", "referring_provider_name", "Req by:"),
    ("Req. By=ROY BAILEY, PA-C", "referring_provider_name", "Req. By="),
])
def test_label_synonyms(text, field, label):
    labs = find_labels(text)
    assert labs, text
    assert labs[0].field == field
    assert text[labs[0].start:labs[0].end].strip() == label


def test_patient_name_label_is_not_an_id_label():
    labs = find_labels("Patient: DOE, JANE")
    assert labs[0].field == "patient_name"


@pytest.mark.parametrize("text,given,family", [
    ("SMITH JOHN", "John", "Smith"), ("Smith John Q", "John", "Smith"), ("VAN DYKE ANNA", "Anna", "Van Dyke"),
    ("Doe, Jane", "Jane", "Doe"),
])
def test_family_first_names(text, given, family):
    (g, f), _ = _name_family_first(text)
    assert (g, f) == (given, family)


def test_payer_stops_at_the_end_of_the_sentence():
    assert _payer("Oscar Health. Our office will call")[0] == "Oscar Health"


def test_registration_slip_with_unusual_labels():
    # a hospital registration slip: name printed family first (the label says so), record
    # numbers under other names, a problem list, a sex/gender cell, an abbreviated provider label
    p = page((40, 0, "MERCY VALLEY HOSPITAL - OUTPATIENT REFERRAL SLIP"),
             (40, 2, "Patient (Last First): GARCIA MARIA"), (330, 2, "Hosp #: 00482913"),
             (40, 3, "Birth Date: 07/19/1982"), (330, 3, "Sex/Gender: Female"),
             (40, 5, "Referring Prov.: Alan K. Brooks, DO"), (330, 5, "NPI: 1234567893"),
             (40, 7, "Problem List: E11.9, I10"),
             (40, 8, "Reason for referral: Diabetes follow up with neuropathy"))
    got = extract_fields([p])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Maria", "Garcia")
    assert got["patient_mrn"] == "00482913"
    assert got["patient_dob"] == "1982-07-19" and got["patient_sex"] == "F"
    assert got["referring_provider_name"] == "Alan Brooks"
    assert got["diagnosis_codes"] == ["E11.9", "I10"]


def test_provider_printed_family_first_is_turned_by_a_courtesy_title_elsewhere():
    p = page((40, 0, "PATIENT"), (40, 1, "Name: DOE, JANE"), (300, 1, "DOB: 03/04/1951"),
             (40, 3, "Referring Provider: BROOKS ALAN MD"),
             (40, 5, "Dr. Brooks asks for an evaluation of chest pain."))
    assert extract_fields([p])["referring_provider_name"] == "Alan Brooks"


def test_provider_order_kept_when_the_title_names_the_full_name():
    p = page((40, 0, "PATIENT"), (40, 1, "Name: DOE, JANE"),
             (40, 3, "Referring Provider: Alan Brooks MD"),
             (40, 5, "Signed: Dr. Alan Brooks"))
    assert extract_fields([p])["referring_provider_name"] == "Alan Brooks"
