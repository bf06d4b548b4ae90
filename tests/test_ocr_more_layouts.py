"""Rules for the forms in bench/fax_corpus/layouts_extra.py and what real faxes do like them:
abbreviated labels, '=' and dot leaders, a payer form's servicing provider, boxed grids whose
values sit as near the next label as their own, prose that carries a value over a line break,
codes printed without their dot. Hand-built word boxes (no tesseract), so each rule is pinned."""
from __future__ import annotations

import pytest

from ocr import extract_fields
from ocr.fields import choices, icd10, identifiers, names
from ocr.labels import find_labels
from tests.test_ocr_extract import page

PATIENT = [(40, 0, "PATIENT"), (40, 1, "Name: DOE, JANE"), (300, 1, "DOB: 03/04/1951")]


def heads(text: str) -> list[tuple[str, str | None]]:
    return [(text[l.start:l.end].strip(), l.field) for l in find_labels(text)]


# ---- the lexicon: abbreviations and wordings of EHR printouts and intake sheets -------------------

@pytest.mark.parametrize("text,field", [
    ("Sub ID", "insurance_member_id"), ("Mbr #", "insurance_member_id"), ("MBI", "insurance_member_id"),
    ("Contract #", "insurance_member_id"), ("Member/Subscriber ID", "insurance_member_id"),
    ("Pri Ins", "insurance_payer"), ("Ofc Ph", "referring_practice_phone"), ("Dept Ph", "referring_practice_phone"),
    ("Prov Fax", "referring_practice_fax"), ("OFC FAX", "referring_practice_fax"), ("Direct fax", "referring_practice_fax"),
    ("Auth Prov", "referring_provider_name"), ("Authorizing Provider", "referring_provider_name"),
    ("Ordered by", "referring_provider_name"), ("Requesting (Referring) Provider", "referring_provider_name"),
    ("Ordering/Referring Physician", "referring_provider_name"), ("RSN", "reason"), ("Hx/Reason", "reason"),
    ("Associated Dx", "diagnosis_codes"), ("Dx", "diagnosis_codes"), ("DIAGNOSIS (ICD-10)", "diagnosis_codes")])
def test_abbreviated_and_ehr_wordings(text, field):
    assert heads(text) == [(text, field)]


def test_two_letter_heads_stand_alone_or_before_their_value():
    assert heads("Dx M10.9") == [("Dx", "diagnosis_codes")]
    assert heads("Dx | E11.9") == [("Dx", "diagnosis_codes")]
    assert heads("MI") == [("MI", "middle")] and heads("Ph") == [("Ph", "phone")]
    assert heads("Detroit, MI 48201") == []                    # a state in an address is no head
    assert heads("DX needs a colon or a code") == []


def test_equals_and_leader_separators():
    got = extract_fields([page((40, 0, "Patient Name=DOE, JANE"), (300, 0, "DOB=03/04/1951"),
                               (40, 1, "Sub ID=W123456789"), (40, 2, "Ordering Prov=SMITH, ALAN MD"),
                               (40, 3, "Prov Fax=(217) 555-0101"), (40, 4, "Dx=E11.9, I10"))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Jane", "Doe")
    assert got["insurance_member_id"] == "W123456789"
    assert got["referring_provider_name"] == "Alan Smith"
    assert got["referring_practice_fax"] == "2175550101"
    assert got["diagnosis_codes"] == ["E11.9", "I10"]
    assert heads("Patient Name........ Jane Doe") == [("Patient Name........", "patient_name")]


def test_dense_intake_with_abbreviations():
    got = extract_fields([page((40, 0, "REFERRAL INTAKE"), (40, 1, "PT NAME"), (120, 1, "PEREZ, Catherine"),
                               (40, 2, "PRI INS"), (120, 2, "Tufts Health Plan"), (260, 2, "SUB ID"),
                               (320, 2, "TY976150601"), (40, 3, "REF MD"), (120, 3, "Dr. Eric Myers, FNP-C"),
                               (40, 4, "OFC FAX"), (120, 4, "367-406-7722"), (40, 5, "RSN"),
                               (120, 5, "Numbness and tingling in both feet"))])
    assert got["insurance_payer"] == "Tufts Health Plan"
    assert got["insurance_member_id"] == "TY976150601"
    assert got["referring_provider_name"] == "Eric Myers"
    assert got["referring_practice_fax"] == "3674067722"
    assert got["reason"] == "Numbness and tingling in both feet"


# ---- sections: whose block a value sits in ---------------------------------------------------------

def test_servicing_provider_block_is_the_specialist():
    got = extract_fields([page((40, 0, "MEMBER INFORMATION"), (40, 1, "Member Name: Hill, Yolanda"),
                               (300, 1, "Member ID: 942236569"),
                               (40, 3, "SERVICING PROVIDER"), (40, 4, "Servicing Provider: Bobby James"),
                               (300, 4, "Specialty: Endocrinology"), (40, 5, "NPI: 1234567893"),
                               (300, 5, "Fax: (488) 595-7806"),
                               (40, 7, "REQUESTING (REFERRING) PROVIDER"),
                               (40, 8, "Requesting Provider: Ximena K. Stewart, DO"), (300, 8, "NPI: 1245319599"),
                               (40, 9, "Fax: 1-236-494-0854"))])
    assert got["referring_provider_name"] == "Ximena Stewart"
    assert got["referring_provider_npi"] == "1245319599"
    assert got["referring_practice_fax"] == "2364940854"
    assert got["referred_to_specialty"] == "endocrinology"
    assert (got["patient_given_name"], got["insurance_member_id"]) == ("Yolanda", "942236569")


def test_generic_label_under_the_consultant_heading_is_the_consultants():
    got = extract_fields([page(*PATIENT, (40, 3, "REFERRING PROVIDER"), (40, 4, "Provider: Foster, Denise J., MD"),
                               (40, 6, "Consultant"), (40, 7, "Specialty: Pulmonary"),
                               (40, 8, "Physician: Dr. Kwame Yamamoto"), (40, 9, "Phone: 1-382-948-3254"))])
    assert got["referring_provider_name"] == "Denise Foster"
    assert got["referring_practice_phone"] is None


def test_subscriber_followed_by_an_id_is_the_member_id():
    got = extract_fields([page(*PATIENT, (40, 3, "Payor:"), (100, 3, "Humana"), (260, 3, "Subscriber"),
                               (340, 3, "M92727315"))])
    assert got["insurance_member_id"] == "M92727315"
    got = extract_fields([page(*PATIENT, (40, 3, "Insurance: Humana"), (40, 4, "Subscriber: John Doe"))])
    assert got["insurance_member_id"] is None


def test_a_form_title_is_not_a_row_of_column_heads():
    assert heads("SPECIALIST REFERRAL") == []
    assert [f for _, f in heads("Patient Name DOB Sex MRN")][:2] == ["patient_name", "patient_dob"]


# ---- boxed grids: small heads over values ---------------------------------------------------------

def test_grid_values_under_heads_even_when_nearer_the_next_row():
    """Each value line sits closer to the next row of heads than to its own (a box's head at its top
    edge): what parses under each head (a phone under PHONE, a specialty under SPECIALTY) decides."""
    got = extract_fields([page((40, 0, "PATIENT LAST NAME"), (200, 0, "FIRST NAME"), (330, 0, "MI"),
                               (400, 0, "DATE OF BIRTH"),
                               (40, 1, "MOORE"), (200, 1, "JENNIFER"), (330, 1, "R"), (400, 1, "11/07/1935"),
                               (40, 1.45, "PATIENT PHONE"), (200, 1.45, "MEMBER ID"),
                               (40, 2.45, "210-869-7603"), (200, 2.45, "530006828"),
                               (40, 2.9, "REFERRING PHYSICIAN"), (250, 2.9, "FAX"),
                               (40, 3.9, "Murphy, Jack J., DO"), (250, 3.9, "(830)925-5987"),
                               (40, 4.35, "SPECIALTY"), (200, 4.35, "URGENCY"), (330, 4.35, "DIAGNOSIS (ICD-10)"),
                               (40, 5.35, "Derm"), (200, 5.35, "routine"), (330, 5.35, "L70.0"))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Jennifer", "Moore")
    assert got["insurance_member_id"] == "530006828"
    assert got["referring_practice_fax"] == "8309255987"
    assert got["diagnosis_codes"] == ["L70.0"]
    assert got["referred_to_specialty"] == "dermatology"


def test_short_cell_among_column_heads_is_a_head():
    got = extract_fields([page((40, 0, "PATIENT LAST NAME"), (200, 0, "FIRST NAME"), (330, 0, "Mo"),
                               (400, 0, "DATE OF BIRTH"),
                               (40, 1, "BROOKS"), (200, 1, "RAJESH"), (330, 1, "E"), (400, 1, "01/10/1960"))])
    assert got["patient_given_name"] == "Rajesh"


def test_debris_before_a_head_does_not_make_it_prose():
    """'_Member ID' (a rule remnant glued on) opens its cell: the next line's first cell is not its value."""
    got = extract_fields([page((40, 0, "Phone"), (200, 0, "Insurance"), (330, 0, "_Member ID"),
                               (40, 1, "471 926 2040"), (200, 1, "Ambetter"), (330, 1, "ST424790101"))])
    assert got["insurance_member_id"] == "ST424790101"


def test_words_ending_in_the_colon_belong_to_the_label():
    got = extract_fields([page(*PATIENT, (40, 3, "Number of Visits: 6"),
                               (40, 4, "Clinical information supporting the request:"),
                               (40, 5, "Thyroid nodule found on ultrasound"))])
    assert got["reason"] == "Thyroid nodule found on ultrasound"
    got = extract_fields([page(*PATIENT, (40, 3, "REASON FOR REFERRAL / CLINICAL QUESTION"),
                               (40, 4, "Fibromyalgia pain management"))])
    assert got["reason"] == "Fibromyalgia pain management"


# ---- prose: values over a line break, names before a birth date, plan shorthand ----------------------

def test_prose_values_carry_over_the_line_break():
    got = extract_fields([page(*PATIENT, (40, 4, "I am referring her to your practice. Reason for referral: Pelvic pain"),
                               (40, 5, "evaluation. Thank you for seeing her."))])
    assert got["reason"] == "Pelvic pain evaluation"
    got = extract_fields([page(*PATIENT, (40, 4, "New referral, please call the patient this week. Ordering: Kayla"),
                               (40, 5, "Gray MD."))])
    assert got["referring_provider_name"] == "Kayla Gray"


def test_cover_sheet_comment_in_shorthand():
    got = extract_fields([page((40, 0, "Comments:"),
                               (40, 1, "New referral to Gynecology for ABIGAIL PHILLIPS, DOB 10-8-99. Reason: Ovarian "
                                       "cyst on ultrasound. Dx"),
                               (40, 2, "N83209 N920 N946. Ins Ambetter #33580167480. URGENT please schedule."))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Abigail", "Phillips")
    assert got["diagnosis_codes"] == ["N83209", "N920", "N946"]
    assert got["insurance_payer"] == "Ambetter"
    assert got["insurance_member_id"] == "33580167480"


def test_letter_names_the_plan_and_the_patient_after_evaluation_of():
    got = extract_fields([page((40, 0, "Dear Colleague,"),
                               (40, 1, "I would appreciate your allergy evaluation of Denise Rivera, born 01/25/2021."),
                               (40, 2, "She is insured by Blue Cross Blue Shield (member ID 359106987)."))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Denise", "Rivera")
    assert got["insurance_payer"] == "Blue Cross Blue Shield"


def test_lowercase_ocr_does_not_turn_the_referrer_round():
    got = extract_fields([page(*PATIENT, (40, 3, "Referring Prov: Watson, Nathan K."),
                               (40, 5, "Electronically signed: Dr. Nathan watson, FNP-C"))])
    assert got["referring_provider_name"] == "Nathan Watson"


# ---- value parsers ------------------------------------------------------------------------------------

def test_codes_without_dots_and_first_letter_confusions():
    assert icd10.find_codes("64733 Obstructive sleep apnea", labelled=True) == ["G4733"]
    assert icd10.find_codes("[12.9", labelled=True) == ["I12.9"]
    assert icd10.find_codes("M54 5, M79 7, M542", labelled=True) == ["M54.5", "M79.7", "M542"]
    assert icd10.find_codes("printed 11/15/2026 weight 183 lb", labelled=True) == []   # dates and numbers are no codes
    assert icd10.find_codes("64733") == []                                             # prose: never guessed


def test_id_parsers_and_sex_debris():
    assert identifiers.parse_identifier("$92096248") == "592096248"
    assert identifiers.parse_identifier("_$T424790101") == "ST424790101"
    assert choices.parse_sex("IF") == "F" and choices.parse_sex("|M") == "M" and choices.parse_sex("IT") is None
    assert names.split_name('Robert "Bob" Smith') == ("Robert", "Smith")


def test_patient_family_first_without_comma_is_turned_by_a_courtesy_title():
    got = extract_fields([page((40, 0, "PT: SMITH JOHN"), (300, 0, "DOB: 03/04/1951"),
                               (40, 2, "Mr. Smith reports chest pain on exertion."))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("John", "Smith")
    got = extract_fields([page((40, 0, "PT: JOHN SMITH"), (300, 0, "DOB: 03/04/1951"),
                               (40, 2, "Mr. Smith reports chest pain on exertion."))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("John", "Smith")
