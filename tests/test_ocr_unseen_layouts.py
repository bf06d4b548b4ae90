"""General pairing rules for layouts the corpus never showed: dense intake lines, header-row
tables, codes under several labels, garbled column heads, prose that names the referrer."""
from __future__ import annotations

import pytest

from ocr import extract_fields
from ocr.fields import icd10, names
from ocr.labels import find_labels, looks_like_label
from ocr.layout import page_lines
from ocr.model import Page, Word
from tests.test_ocr_extract import page

PATIENT = [(40, 0, "PATIENT"), (40, 1, "Name: DOE, JANE"), (300, 1, "DOB: 03/04/1951")]


def heads(text: str) -> list[tuple[str, str | None]]:
    return [(text[l.start:l.end].strip(), l.field) for l in find_labels(text)]


def test_header_row_keeps_npi_its_own_column():
    assert heads("Referring Provider NPI Phone Fax") == [
        ("Referring Provider", "referring_provider_name"), ("NPI", "npi"), ("Phone", "phone"), ("Fax", "fax")]
    # as a single label with its value it stays one label
    assert heads("Referring Provider NPI: 1234567893") == [("Referring Provider NPI:", "npi")]
    # a header that is one label is not split
    assert heads("Patient Name DOB Sex MRN")[0] == ("Patient Name", "patient_name")


def test_merged_header_row_table_gives_the_provider_under_its_column():
    got = extract_fields([page((40, 0, "Patient Name DOB Sex MRN"), (40, 1, "DOE, JANE 03/04/1951 F 123456"),
                               (40, 3, "Referring Provider NPI Phone Fax"),
                               (40, 4, "Alan Brooks, MD 1234567893 217-555-0100 217-555-0101"))])
    assert got["referring_provider_name"] == "Alan Brooks"
    assert got["referring_provider_npi"] == "1234567893"
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Jane", "Doe")


@pytest.mark.parametrize("label", ["Requesting Clinician", "Primary Care Physician", "PCP Name", "Ref",
                                   "Treating Physician", "Sending Provider", "Attending Physician"])
def test_more_referrer_wordings(label):
    got = extract_fields([page(*PATIENT, (40, 3, f"{label}: Alan Brooks, MD"))])
    assert got["referring_provider_name"] == "Alan Brooks"
    assert got["patient_given_name"] == "Jane"


def test_physician_information_section_owns_its_name():
    got = extract_fields([page(*PATIENT, (40, 3, "PHYSICIAN INFORMATION"), (40, 4, "Name: Alan Brooks, MD"))])
    assert got["referring_provider_name"] == "Alan Brooks"
    assert got["patient_family_name"] == "Doe"


def test_dense_intake_lines_without_colons():
    got = extract_fields([page((40, 0, "INTAKE"), (40, 1, "Pt, CHAVEZ, JANET   DOB 03/04/1951   Sex F"),
                               (40, 2, "Ins: Cigna   ID# J39224250"),
                               (40, 3, "Ref: Dr. Tomasz Ramirez   NPI 1234567893   Ph 430-842-2104"))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Janet", "Chavez")
    assert got["patient_sex"] == "F"
    assert got["insurance_member_id"] == "J39224250"
    assert got["referring_provider_name"] == "Tomasz Ramirez"
    assert got["referring_practice_phone"] == "4308422104"


def test_sex_word_in_prose_is_no_label():
    assert not any(l.field == "patient_sex" for l in find_labels("Discussed safe sex practices"))
    assert heads("Sex Female") == [("Sex", "patient_sex")]


def test_codes_under_several_labels_are_one_list():
    got = extract_fields([page(*PATIENT, (40, 6, "Primary Dx: E11.9"), (40, 7, "Secondary Dx: I10"))])
    assert got["diagnosis_codes"] == ["E11.9", "I10"]
    got = extract_fields([page(*PATIENT, (40, 6, "Dx 1: E11.9"), (300, 6, "Dx 2: I10"))])
    assert got["diagnosis_codes"] == ["E11.9", "I10"]
    got = extract_fields([page(*PATIENT, (40, 6, "Codes: E11.9; I10"))])
    assert got["diagnosis_codes"] == ["E11.9", "I10"]


def test_code_table_with_description_column():
    got = extract_fields([page(*PATIENT, (40, 6, "Code"), (150, 6, "Diagnosis"), (40, 7, "E11.9"),
                               (150, 7, "Type 2 diabetes mellitus"), (40, 8, "I10"), (150, 8, "Essential hypertension"))])
    assert got["diagnosis_codes"] == ["E11.9", "I10"]


def test_codes_past_the_next_heading_edge():
    """"ASSESSMENT | PLAN" read as two cells: the numbered lines under it run past PLAN's left edge."""
    got = extract_fields([page(*PATIENT, (40, 5, "ASSESSMENT"), (160, 5, "PLAN"),
                               (40, 6, "1. Rheumatoid arthritis, unspecified (M06.9)"),
                               (40, 7, "2. Polymyalgia rheumatica (M35.3)"))])
    assert got["diagnosis_codes"] == ["M06.9", "M35.3"]


def test_ocr_split_codes_in_a_diagnosis_field():
    assert icd10.find_codes("G47 00 Insomnia, unspecified", labelled=True) == ["G47.00"]
    assert icd10.find_codes("Essential hypertension (110)", labelled=True) == ["I10"]
    assert icd10.find_codes("I10 25 mg daily", labelled=True) == ["I10"]        # a billable code is not extended
    assert icd10.find_codes("G47 00 Insomnia (110)") == []                      # prose: never guessed
    got = extract_fields([page(*PATIENT, (40, 6, "\u2018CD-10 Code(s)"), (200, 6, "D64 9"))])
    assert got["diagnosis_codes"] == ["D64.9"]


def test_letter_diagnoses_after_a_full_stop():
    got = extract_fields([page(*PATIENT, (40, 5, "Relevant diagnoses. H35.30 Unspecified macular degeneration, "
                                                 "E11 319 Type 2 diabetes. Thank you."))])
    assert got["diagnosis_codes"] == ["H35.30", "E11.319"]


def test_garbled_column_head_is_not_a_name():
    assert looks_like_label("Ordering Physiclan")
    assert not looks_like_label("Catherine D'Angelo, DO")
    got = extract_fields([page((40, 0, "REFERRING"), (40, 1, "Ordering Physiclan"), (200, 1, "NPI"),
                               (40, 2, "Catherine D'Angelo, DO"), (200, 2, "1234567893"))])
    assert got["referring_provider_name"] == "Catherine D'Angelo"


def test_referrer_named_in_a_sentence():
    got = extract_fields([page(*PATIENT, (40, 3, "This patient was referred by Dr. Alan Brooks for chest pain."))])
    assert got["referring_provider_name"] == "Alan Brooks"
    got = extract_fields([page(*PATIENT, (40, 5, "Please evaluate."), (40, 7, "Warm regards,"), (40, 9, "Alan Brooks, MD"))])
    assert got["referring_provider_name"] == "Alan Brooks"


def _boxes(*rows: tuple[float, float, str], conf: float = 95.0, height: float = 10.0) -> list[Word]:
    """Words at (x, y0, text), 6 points a character."""
    out = []
    for x, y, text in rows:
        for tok in text.split():
            out.append(Word(tok, x, y, x + 6 * len(tok), y + height, conf))
            x += 6 * (len(tok) + 1)
    return out


def test_flat_slivers_of_ruling_lines_are_not_words():
    words = _boxes((40, 0, "PATIENT LAST NAME"), (40, 20, "Watson")) + [Word("Oo", 40, 14, 52, 15, 0.0)]
    lines = page_lines(Page(1, 612, 792, words, "ocr"))
    assert [l.text for l in lines] == ["PATIENT LAST NAME", "Watson"]


def test_first_box_under_a_heading_votes_for_values_below():
    """Label-over-value boxes whose only close call reads "above": the first box of each block,
    with nothing over it but its heading, tips the page to "below"."""
    words = _boxes((40, 0, "PATIENT INFORMATION"), (40, 20, "LAST NAME"), (40, 36, "Watson"),
                   (40, 50, "FIRST NAME"), (40, 72, "Luis"), (40, 100, "INSURANCE INFORMATION"),
                   (40, 120, "MEMBER ID"), (40, 136, "W12345678"))
    got = extract_fields([Page(1, 612, 792, words, "ocr")])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Luis", "Watson")
    assert got["insurance_member_id"] == "W12345678"


def test_side_by_side_blocks_keep_their_own_phones():
    """A "DOB:" in the left block restates PATIENT there; it must not claim the right block."""
    got = extract_fields([page((40, 0, "PATIENT"), (320, 0, "REFERRING PHYSICIAN"), (40, 1, "Name: DOE, JANE"),
                               (320, 1, "Name: Alan Brooks, MD"), (40, 2, "DOB: 03/04/1951"), (320, 2, "NPI: 1234567893"),
                               (40, 3, "Phone: 217-555-0199"), (320, 3, "Phone: 217-555-0100"))])
    assert got["patient_phone"] == "2175550199"
    assert got["referring_practice_phone"] == "2175550100"
    assert got["referring_provider_name"] == "Alan Brooks"


@pytest.mark.parametrize("printed", ["BROOKS Alan", "BROOKS ALAN K", "Brooks Alan K.", "BROOKS. ALAN MD", "Dr, Alan Brooks",
                                     "Dr.Alan Brooks", "Alan Brooks, M.D."])
def test_referrer_name_as_faxes_print_it(printed):
    got = extract_fields([page(*PATIENT, (40, 3, f"Referring Provider: {printed}"))])
    assert got["referring_provider_name"] == "Alan Brooks"


def test_a_middle_initial_in_the_middle_keeps_given_first():
    assert names.split_name("Jane Q Doe") == ("Jane", "Doe")
    assert names.split_name("Mary St. Pierre") == ("Mary", "St. Pierre")


def test_an_explicit_referrer_label_beats_pcp_and_signatures():
    got = extract_fields([page(*PATIENT, (40, 3, "PCP: Carol White, MD"), (40, 4, "Referring Provider: Alan Brooks, MD"))])
    assert got["referring_provider_name"] == "Alan Brooks"
    got = extract_fields([page(*PATIENT, (40, 3, "PCP: Carol White, MD"))])
    assert got["referring_provider_name"] == "Carol White"


@pytest.mark.parametrize("head", ["Referring Provider / NPI", "Referring Provider Name & NPI", "Physician Name / NPI",
                                  "Referring Physician (Name/NPI)", "Referring Provider & Practice"])
def test_compound_heads_share_one_value(head):
    got = extract_fields([page(*PATIENT, (40, 3, f"{head}: BROOKS, ALAN MD  NPI 1234567893"))])
    assert got["referring_provider_name"] == "Alan Brooks"
    assert got["referring_provider_npi"] == "1234567893"


def test_centred_column_head_over_a_left_aligned_name():
    got = extract_fields([page((70, 0, "Patient"), (260, 0, "DOB"), (40, 1, "DOE, JANE"), (240, 1, "03/04/1951"),
                               (100, 3, "Provider"), (330, 3, "NPI"), (40, 4, "Catherine D'Angelo"), (300, 4, "1234567893"))])
    assert got["referring_provider_name"] == "Catherine D'Angelo"
    assert got["evidence"]["referring_provider_name"] == "label:below"
    assert got["referring_provider_npi"] == "1234567893"


def test_bare_first_and_last_cells_name_the_patient():
    got = extract_fields([page((40, 0, "PATIENT INFORMATION"), (40, 1, "Surname: Kelly"), (40, 2, "First: Robert"),
                               (40, 3, "DOB: 03/04/1951"))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Robert", "Kelly")
    got = extract_fields([page((40, 1, "Last Name"), (160, 1, "Jackson"), (300, 1, "First"), (400, 1, "Juan"),
                               (40, 2, "Birth Date"), (160, 2, "11/19/1996"))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Juan", "Jackson")
    # in prose the words are no labels
    assert heads("First visit was fine") == [] and heads("Last seen 2020") == []


def test_patient_last_first_head_without_name_word():
    got = extract_fields([page((40, 1, "Patient (Last, First) Singh, Nathan"), (300, 1, "DOB 01/14/1984"))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("Nathan", "Singh")


def test_bare_id_row_head_under_insurance_only_first_on_its_line():
    got = extract_fields([page(*PATIENT, (40, 4, "Ins. Carrier"), (160, 4, "Kaiser Permanente"),
                               (40, 5, "ID"), (160, 5, "Y34700446"))])
    assert got["insurance_member_id"] == "Y34700446"
    # "ID" as a value: infectious disease right of its label, Idaho in an address row
    got = extract_fields([page(*PATIENT, (40, 4, "Referral To"), (160, 4, "ID"), (300, 4, "Urgency"),
                               (400, 4, "Routine"))])
    assert got["insurance_member_id"] is None
    got = extract_fields([page((40, 0, "PATIENT"), (40, 1, "Name: DOE, JANE"), (40, 2, "City"), (160, 2, "Boise"),
                               (40, 3, "ID"), (160, 3, "83702"))])
    assert got["patient_mrn"] is None and got["insurance_member_id"] is None


def test_dense_line_payer_and_patient_without_colons():
    got = extract_fields([page((40, 0, "INTAKE"), (40, 1, "Pt MILLER, JOHN   DOB 03/04/1951"),
                               (40, 2, "Ins Highmark   Mbr ID 123456789"))])
    assert (got["patient_given_name"], got["patient_family_name"]) == ("John", "Miller")
    assert got["insurance_payer"] == "Highmark"
    assert got["insurance_member_id"] == "123456789"
    # without the value's shape the words stay prose
    assert heads("Pt tolerated, well") == []
    assert not any(l.field == "insurance_payer" for l in find_labels("Ins unknown words here"))
