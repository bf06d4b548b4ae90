"""The truth of one synthetic referral, and the printed forms of its values.

A `Referral` holds canonical values in the DESIGN.md extract contract (dates
YYYY-MM-DD, phones as 10 digits, provider "Given Family"). The `fmt_*` helpers
turn a canonical value into one of the many ways a fax prints it; they take the
random generator so that every choice is reproducible from the seed.
Everything here is pure: no files, no rendering.
"""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import asdict, dataclass, field

import simple_icd_10_cm as icd

CONTRACT_KEYS = (
    "patient_family_name", "patient_given_name", "patient_dob", "patient_sex", "patient_phone",
    "patient_mrn", "insurance_payer", "insurance_member_id", "referring_provider_name",
    "referring_provider_npi", "referring_practice_phone", "referring_practice_fax",
    "referred_to_specialty", "urgency", "diagnosis_codes", "reason",
)

GIVEN_F = ["Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
           "Karen", "Nancy", "Lisa", "Margaret", "Dorothy", "Sandra", "Ashley", "Kimberly", "Donna", "Emily",
           "Michelle", "Carol", "Amanda", "Melissa", "Deborah", "Stephanie", "Rebecca", "Laura", "Helen",
           "Sharon", "Cynthia", "Kathleen", "Amy", "Shirley", "Angela", "Anna", "Ruth", "Brenda", "Pamela",
           "Nicole", "Katherine", "Virginia", "Catherine", "Christine", "Samantha", "Debra", "Janet", "Rachel",
           "Carolyn", "Emma", "Maria", "Heather", "Diane", "Julie", "Joyce", "Evelyn", "Frances", "Joan",
           "Christina", "Kelly", "Victoria", "Lauren", "Martha", "Judith", "Cheryl", "Megan", "Andrea", "Ann",
           "Alice", "Jean", "Doris", "Jacqueline", "Kathryn", "Hannah", "Olivia", "Gloria", "Marie", "Teresa",
           "Sara", "Janice", "Julia", "Grace", "Judy", "Theresa", "Rose", "Beverly", "Denise", "Marilyn",
           "Amber", "Madison", "Danielle", "Brittany", "Diana", "Abigail", "Jane", "Lori", "Tiffany", "Kayla",
           "Guadalupe", "Mei", "Priya", "Aaliyah", "Ximena", "Siobhan", "Nguyet", "Fatima", "Yolanda", "Ingrid"]
GIVEN_M = ["James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
           "Christopher", "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Andrew",
           "Paul", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald", "Jason", "Edward",
           "Jeffrey", "Ryan", "Jacob", "Gary", "Nicholas", "Eric", "Jonathan", "Stephen", "Larry", "Justin",
           "Scott", "Brandon", "Benjamin", "Samuel", "Gregory", "Alexander", "Patrick", "Frank", "Raymond",
           "Jack", "Dennis", "Jerry", "Tyler", "Aaron", "Jose", "Adam", "Nathan", "Henry", "Zachary", "Douglas",
           "Peter", "Kyle", "Noah", "Ethan", "Jeremy", "Walter", "Christian", "Keith", "Roger", "Terry",
           "Austin", "Sean", "Gerald", "Carl", "Harold", "Dylan", "Arthur", "Lawrence", "Jordan", "Jesse",
           "Bryan", "Billy", "Bruce", "Gabriel", "Joe", "Logan", "Alan", "Juan", "Albert", "Willie", "Elijah",
           "Wayne", "Randy", "Vincent", "Mason", "Roy", "Ralph", "Bobby", "Russell", "Bradley", "Philip",
           "Eugene", "Rajesh", "Wei", "Tomasz", "Olusegun", "Dmitri", "Hiroshi", "Mateo", "Kwame", "Luis"]
FAMILY = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
          "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
          "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez",
          "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen",
          "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
          "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards",
          "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz",
          "Morgan", "Cooper", "Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward",
          "Richardson", "Watson", "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz",
          "Hughes", "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster",
          "Jimenez", "O'Brien", "McAllister", "Smith-Jones", "Van Dyke", "Kowalczyk", "Okonkwo", "Nakamura",
          "Schwarzenegger", "Delacroix", "Abernathy", "MacDonald", "Fitzgerald", "Oyelaran", "Zhang", "Chen",
          "Haddad", "Lindqvist", "Papadopoulos", "Gallagher", "D'Angelo", "St. Pierre", "Yamamoto", "Singh"]

PAYERS = ["Aetna", "Blue Cross Blue Shield", "UnitedHealthcare", "Cigna", "Humana", "Medicare",
          "Medicaid", "Kaiser Permanente", "Anthem Blue Cross", "Molina Healthcare", "Tricare",
          "Oscar Health", "Ambetter", "WellCare", "Highmark", "Harvard Pilgrim", "Tufts Health Plan",
          "Centene", "Health Net", "Medicare Advantage", "Aetna Better Health", "Florida Blue",
          "Premera Blue Cross", "Priority Health", "EmblemHealth", "Independence Blue Cross"]

# canonical (lowercase, the contract value) -> ways a form prints it
SPECIALTIES = {
    "cardiology": ["Cardiology", "CARDIOLOGY", "Cardiology Clinic", "Cardiovascular Medicine"],
    "dermatology": ["Dermatology", "DERMATOLOGY", "Derm"],
    "endocrinology": ["Endocrinology", "ENDOCRINOLOGY", "Endocrine", "Endo"],
    "gastroenterology": ["Gastroenterology", "GASTROENTEROLOGY", "GI", "Gastro"],
    "neurology": ["Neurology", "NEUROLOGY", "Neuro"],
    "nephrology": ["Nephrology", "NEPHROLOGY", "Renal"],
    "orthopedics": ["Orthopedics", "ORTHOPEDICS", "Orthopaedics", "Orthopedic Surgery", "Ortho"],
    "oncology": ["Oncology", "ONCOLOGY", "Medical Oncology"],
    "pulmonology": ["Pulmonology", "PULMONOLOGY", "Pulmonary", "Pulmonary Medicine"],
    "rheumatology": ["Rheumatology", "RHEUMATOLOGY", "Rheum"],
    "urology": ["Urology", "UROLOGY"],
    "ophthalmology": ["Ophthalmology", "OPHTHALMOLOGY", "Eye Clinic"],
    "otolaryngology": ["Otolaryngology", "ENT", "Ear, Nose & Throat", "OTOLARYNGOLOGY"],
    "psychiatry": ["Psychiatry", "PSYCHIATRY", "Behavioral Health"],
    "physical therapy": ["Physical Therapy", "PT", "PHYSICAL THERAPY"],
    "podiatry": ["Podiatry", "PODIATRY"],
    "hematology": ["Hematology", "HEMATOLOGY"],
    "allergy": ["Allergy", "Allergy & Immunology", "ALLERGY"],
    "general surgery": ["General Surgery", "GENERAL SURGERY", "Surgery"],
    "obstetrics and gynecology": ["OB/GYN", "Obstetrics and Gynecology", "OBGYN", "Gynecology"],
    "infectious disease": ["Infectious Disease", "ID", "INFECTIOUS DISEASE"],
    "sleep medicine": ["Sleep Medicine", "Sleep Clinic"],
    "pain management": ["Pain Management", "Pain Clinic"],
}

# specialty -> (ICD-10-CM codes that fit, reasons a referring provider writes)
CLINICAL = {
    "cardiology": (["I48.91", "I10", "R00.2", "I25.10", "R07.9", "I50.9", "R55", "I49.9", "E78.5"],
                   ["Evaluate new onset atrial fibrillation", "Palpitations and intermittent chest pain",
                    "Abnormal EKG, please evaluate", "Heart failure management", "Syncope workup"]),
    "dermatology": (["L40.0", "L70.0", "D48.5", "L30.9", "L57.0", "C44.91"],
                    ["Changing pigmented lesion on back", "Psoriasis not responding to topicals",
                     "Severe acne, consider isotretinoin", "Chronic dermatitis of hands"]),
    "endocrinology": (["E11.9", "E11.65", "E05.90", "E03.9", "E04.1", "E55.9", "E66.9"],
                      ["Uncontrolled type 2 diabetes, A1c 10.2", "Thyroid nodule found on ultrasound",
                       "Hyperthyroidism evaluation", "Insulin pump evaluation"]),
    "gastroenterology": (["K21.9", "K58.9", "R10.9", "K92.1", "K50.90", "Z12.11", "R19.5"],
                         ["Screening colonoscopy", "Chronic GERD with dysphagia", "Rectal bleeding",
                          "Abdominal pain and weight loss, rule out IBD"]),
    "neurology": (["G43.909", "G40.909", "R51.9", "G35", "G20", "R20.2", "G62.9"],
                  ["Recurrent migraines despite prophylaxis", "New onset seizure",
                   "Numbness and tingling in both feet", "Tremor, rule out Parkinson disease"]),
    "nephrology": (["N18.3", "N18.4", "R80.9", "N17.9", "I12.9"],
                   ["CKD stage 3, rising creatinine", "Proteinuria on urinalysis",
                    "Resistant hypertension with CKD"]),
    "orthopedics": (["M17.11", "M25.561", "M54.5", "S83.511A", "M75.101", "M16.12"],
                    ["Right knee pain, failed conservative therapy", "Rotator cuff tear on MRI",
                     "Chronic low back pain with radiculopathy", "Left hip osteoarthritis"]),
    "oncology": (["C50.911", "C34.90", "D64.9", "R59.9", "C61"],
                 ["New diagnosis of breast cancer", "Lung mass on CT chest",
                  "Lymphadenopathy, please evaluate"]),
    "pulmonology": (["J44.9", "J45.909", "R06.02", "G47.33", "R91.1", "J84.9"],
                    ["COPD with frequent exacerbations", "Pulmonary nodule on CT",
                     "Chronic cough and shortness of breath", "Suspected obstructive sleep apnea"]),
    "rheumatology": (["M06.9", "M32.9", "M10.9", "M35.3", "R76.8"],
                     ["Positive ANA with joint pain", "Rheumatoid arthritis management",
                      "Recurrent gout flares"]),
    "urology": (["N40.0", "R31.9", "N20.0", "R97.20", "N39.0"],
                ["Elevated PSA", "Microscopic hematuria", "Kidney stone, recurrent"]),
    "ophthalmology": (["H25.9", "H40.9", "E11.319", "H35.30"],
                      ["Diabetic eye exam", "Cataract evaluation", "Glaucoma suspect"]),
    "otolaryngology": (["J32.9", "H91.90", "J35.01", "R49.0", "H93.19"],
                       ["Chronic sinusitis", "Hearing loss, bilateral", "Hoarseness for 2 months"]),
    "psychiatry": (["F32.9", "F41.1", "F31.9", "F90.9"],
                   ["Depression not improving on SSRI", "Generalized anxiety, medication management"]),
    "physical therapy": (["M54.5", "M25.511", "S93.401A", "M62.81"],
                         ["Evaluate and treat low back pain", "Post-op rehab right shoulder",
                          "Gait and balance training"]),
    "podiatry": (["E11.42", "L84", "M72.2", "B35.1"],
                 ["Diabetic foot exam", "Plantar fasciitis", "Painful calluses"]),
    "hematology": (["D50.9", "D69.6", "D75.1", "D68.9"],
                   ["Iron deficiency anemia", "Thrombocytopenia", "Abnormal coagulation studies"]),
    "allergy": (["J30.9", "T78.40XA", "L50.9", "J45.909"],
                ["Allergy testing", "Chronic urticaria", "Suspected food allergy"]),
    "general surgery": (["K40.90", "K80.20", "K42.9", "L72.3"],
                        ["Symptomatic gallstones", "Inguinal hernia repair", "Sebaceous cyst excision"]),
    "obstetrics and gynecology": (["N92.0", "N83.209", "Z01.419", "N94.6"],
                                  ["Abnormal uterine bleeding", "Ovarian cyst on ultrasound",
                                   "Pelvic pain evaluation"]),
    "infectious disease": (["B20", "A41.9", "B18.2", "L03.90"],
                           ["Hepatitis C treatment", "Recurrent cellulitis"]),
    "sleep medicine": (["G47.33", "G47.00", "G47.10"],
                       ["Suspected obstructive sleep apnea", "Chronic insomnia"]),
    "pain management": (["M54.5", "M79.7", "G89.29", "M54.2"],
                        ["Chronic low back pain, consider injection", "Fibromyalgia pain management"]),
}

PRACTICE_WORDS = ["Family Medicine", "Internal Medicine", "Primary Care", "Medical Group", "Health Center",
                  "Pediatrics", "Family Practice", "Community Clinic", "Physicians", "Medical Associates"]
PLACES = ["Riverside", "Oakwood", "Maple Grove", "Lakeview", "Cedar Hill", "Summit", "Northgate", "Brookside",
          "Pinecrest", "Harbor", "Valley", "Westfield", "Fairview", "Greenway", "Hillcrest", "Meadowbrook"]
STREETS = ["Main St", "Oak Ave", "Elm Street", "Park Blvd", "Washington Ave", "Lake Rd", "2nd Street",
           "Medical Center Dr", "Highland Ave", "Church St", "Market Street", "Sunset Blvd"]
CITIES = [("Springfield", "IL", "62704"), ("Columbus", "OH", "43215"), ("Austin", "TX", "78701"),
          ("Portland", "OR", "97205"), ("Raleigh", "NC", "27601"), ("Madison", "WI", "53703"),
          ("Albany", "NY", "12207"), ("Tucson", "AZ", "85701"), ("Denver", "CO", "80202"),
          ("Richmond", "VA", "23219"), ("Boise", "ID", "83702"), ("Nashville", "TN", "37203")]
SPECIALIST_GROUPS = ["Associates", "Specialists", "Clinic", "Center", "Partners", "Institute"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]

# Upper-case letters OCR cannot tell from digits are left out of generated ids, like real payers do.
ID_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def _npi(rng: random.Random) -> str:
    """A 10-digit NPI whose last digit is the Luhn check over 80840 + the first 9 digits."""
    body = str(rng.choice("12")) + "".join(rng.choice("0123456789") for _ in range(8))
    return body + npi_check_digit(body)


def npi_check_digit(body9: str) -> str:
    digits = [int(c) for c in "80840" + body9]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:   # rightmost digit of the payload is doubled (check digit comes after it)
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def npi_is_valid(npi: str) -> bool:
    return len(npi) == 10 and npi.isdigit() and npi_check_digit(npi[:9]) == npi[9]


def _phone(rng: random.Random) -> str:
    area = str(rng.randint(2, 9)) + str(rng.randint(0, 8)) + str(rng.randint(0, 9))
    exch = str(rng.randint(2, 9)) + f"{rng.randint(0, 99):02d}"
    return area + exch + f"{rng.randint(0, 9999):04d}"


def _mrn(rng: random.Random) -> str:
    style = rng.randrange(5)
    if style == 0:
        return f"{rng.randint(0, 99999999):08d}"
    if style == 1:
        return rng.choice(ID_LETTERS) + f"{rng.randint(0, 9999999):07d}"
    if style == 2:
        return str(rng.randint(100000, 9999999))
    if style == 3:
        return "MR" + f"{rng.randint(0, 999999):06d}"
    return f"{rng.randint(10, 99)}-{rng.randint(100, 999)}-{rng.randint(100, 999)}"


def _member_id(rng: random.Random, payer: str) -> str:
    style = rng.randrange(5)
    if payer.startswith("Medicare") and style < 3:   # MBI: 11 characters, fixed letter/digit pattern
        p = "CAANANAANNA"   # C = 1-9, A = letter, N = digit
        out = []
        for ch in p:
            out.append(str(rng.randint(1, 9)) if ch == "C" else rng.choice(ID_LETTERS) if ch == "A"
                       else str(rng.randint(0, 9)))
        return "".join(out)
    if style == 0:
        return "".join(rng.choice(ID_LETTERS) for _ in range(3)) + f"{rng.randint(0, 999999999):09d}"
    if style == 1:
        return rng.choice(ID_LETTERS) + f"{rng.randint(0, 99999999):08d}"
    if style == 2:
        return f"{rng.randint(0, 99999999999):011d}"
    if style == 3:
        return "".join(rng.choice(ID_LETTERS) for _ in range(2)) + f"{rng.randint(0, 9999999):07d}" + "01"
    return f"{rng.randint(100000000, 999999999)}"


@dataclass
class Referral:
    patient_family_name: str
    patient_given_name: str
    patient_middle: str
    patient_dob: dt.date
    patient_sex: str
    patient_phone: str
    patient_mrn: str
    insurance_payer: str
    insurance_member_id: str
    group_number: str
    provider_given: str
    provider_family: str
    provider_middle: str
    provider_credential: str
    referring_provider_npi: str
    practice_name: str
    practice_address: tuple[str, str]
    referring_practice_phone: str
    referring_practice_fax: str
    referred_to_specialty: str
    specialist_name: str
    specialist_practice: str
    specialist_fax: str
    specialist_phone: str
    urgency: str
    diagnosis_codes: list[str]
    reason: str
    referral_date: dt.date
    # distractors a real fax carries: numbers and dates that are not the answer
    emergency_contact: tuple[str, str] = ("", "")
    other_npi: str = ""
    patient_address: tuple[str, str] = ("", "")
    present: dict = field(default_factory=dict)   # contract key -> printed? (set by the layout)

    @property
    def referring_provider_name(self) -> str:
        return f"{self.provider_given} {self.provider_family}"

    def truth(self) -> dict:
        """The contract JSON; a field the layout did not print is null."""
        values = {
            "patient_family_name": self.patient_family_name,
            "patient_given_name": self.patient_given_name,
            "patient_dob": self.patient_dob.isoformat(),
            "patient_sex": self.patient_sex,
            "patient_phone": self.patient_phone,
            "patient_mrn": self.patient_mrn,
            "insurance_payer": self.insurance_payer,
            "insurance_member_id": self.insurance_member_id,
            "referring_provider_name": self.referring_provider_name,
            "referring_provider_npi": self.referring_provider_npi,
            "referring_practice_phone": self.referring_practice_phone,
            "referring_practice_fax": self.referring_practice_fax,
            "referred_to_specialty": self.referred_to_specialty,
            "urgency": self.urgency,
            "diagnosis_codes": list(self.diagnosis_codes),
            "reason": self.reason,
        }
        return {k: (values[k] if self.present.get(k) else None) for k in CONTRACT_KEYS}


def make_referral(rng: random.Random, today: dt.date = dt.date(2026, 11, 23)) -> Referral:
    sex = rng.choice("MF")
    given = rng.choice(GIVEN_M if sex == "M" else GIVEN_F)
    age_days = rng.randint(2 * 365, 92 * 365)
    dob = today - dt.timedelta(days=age_days)
    specialty = rng.choice(sorted(SPECIALTIES))
    codes_pool, reasons = CLINICAL[specialty]
    codes = rng.sample(codes_pool, k=rng.choice([1, 1, 2, 2, 3]))
    assert all(icd.is_valid_item(c) for c in codes), codes
    payer = rng.choice(PAYERS)
    pgiven = rng.choice(GIVEN_M + GIVEN_F)
    pfamily = rng.choice([f for f in FAMILY if " " not in f])
    place = rng.choice(PLACES)
    city = rng.choice(CITIES)
    practice = f"{place} {rng.choice(PRACTICE_WORDS)}"
    sp_family = rng.choice(FAMILY)
    return Referral(
        patient_family_name=rng.choice(FAMILY), patient_given_name=given,
        patient_middle=rng.choice(["", "", "A", "J", "M", "L", "R", "Marie", "Lee", "E"]),
        patient_dob=dob, patient_sex=sex, patient_phone=_phone(rng), patient_mrn=_mrn(rng),
        insurance_payer=payer, insurance_member_id=_member_id(rng, payer),
        group_number=f"{rng.randint(10000, 999999)}",
        provider_given=pgiven, provider_family=pfamily, provider_middle=rng.choice(["", "", "A.", "K.", "J."]),
        provider_credential=rng.choice(["MD", "MD", "M.D.", "DO", "NP", "PA-C", "FNP-C"]),
        referring_provider_npi=_npi(rng), practice_name=practice,
        practice_address=(f"{rng.randint(10, 9899)} {rng.choice(STREETS)}"
                          + rng.choice(["", "", f", Suite {rng.randint(100, 450)}"]),
                          f"{city[0]}, {city[1]} {city[2]}"),
        referring_practice_phone=_phone(rng), referring_practice_fax=_phone(rng),
        referred_to_specialty=specialty,
        specialist_name=f"{rng.choice(GIVEN_M + GIVEN_F)} {sp_family}",
        specialist_practice=f"{rng.choice(PLACES)} {rng.choice(SPECIALTIES[specialty][:1])} "
                            f"{rng.choice(SPECIALIST_GROUPS)}",
        specialist_fax=_phone(rng), specialist_phone=_phone(rng),
        urgency=rng.choice(["routine", "routine", "routine", "urgent", "urgent", "stat"]),
        diagnosis_codes=codes, reason=rng.choice(reasons),
        referral_date=today - dt.timedelta(days=rng.randint(0, 20)),
        emergency_contact=(f"{rng.choice(GIVEN_M + GIVEN_F)} {rng.choice(FAMILY)}", _phone(rng)),
        other_npi=_npi(rng),
        patient_address=(f"{rng.randint(1, 9999)} {rng.choice(STREETS)}", f"{city[0]}, {city[1]} {city[2]}"),
    )


# ---- printed forms -------------------------------------------------------------------------------

def fmt_date(rng: random.Random, d: dt.date, style: str | None = None) -> str:
    styles = ["mm/dd/yyyy", "mm/dd/yyyy", "m/d/yyyy", "mm-dd-yyyy", "m-d-yy", "Month d, yyyy",
              "Mon d yyyy", "yyyy-mm-dd", "d Mon yyyy", "mm/dd/yy"]
    style = style or rng.choice(styles)
    mon = MONTHS[d.month - 1]
    return {
        "mm/dd/yyyy": f"{d.month:02d}/{d.day:02d}/{d.year}",
        "m/d/yyyy": f"{d.month}/{d.day}/{d.year}",
        "mm-dd-yyyy": f"{d.month:02d}-{d.day:02d}-{d.year}",
        "m-d-yy": f"{d.month}-{d.day}-{d.year % 100:02d}",
        "mm/dd/yy": f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d}",
        "Month d, yyyy": f"{mon} {d.day}, {d.year}",
        "Mon d yyyy": f"{mon[:3]} {d.day} {d.year}",
        "yyyy-mm-dd": d.isoformat(),
        "d Mon yyyy": f"{d.day} {mon[:3]} {d.year}",
    }[style]


def fmt_dob(rng: random.Random, d: dt.date, today: dt.date = dt.date(2026, 11, 23)) -> str:
    """Like fmt_date, but two-digit years only where they cannot be read as a wrong century."""
    style = rng.choice(["mm/dd/yyyy", "mm/dd/yyyy", "m/d/yyyy", "mm-dd-yyyy", "m-d-yy", "Month d, yyyy",
                        "Mon d yyyy", "yyyy-mm-dd", "d Mon yyyy", "mm/dd/yy"])
    if style in ("m-d-yy", "mm/dd/yy") and not (today.year - 99 < d.year <= today.year - 1):
        style = "mm/dd/yyyy"
    return fmt_date(rng, d, style)


def fmt_phone(rng: random.Random, p: str, allow_ext: bool = True) -> str:
    a, b, c = p[:3], p[3:6], p[6:]
    style = rng.randrange(7 if allow_ext else 6)
    return [f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"({a}){b}-{c}", f"{a} {b} {c}",
            f"1-{a}-{b}-{c}", f"{a}-{b}-{c} ext {rng.randint(1, 299)}"][style]


def fmt_sex(rng: random.Random, s: str) -> str:
    return rng.choice({"M": ["M", "Male", "MALE", "M"], "F": ["F", "Female", "FEMALE", "F"]}[s])


def fmt_patient_name(rng: random.Random, r: Referral, order: str | None = None) -> str:
    order = order or rng.choice(["first last", "last, first", "LAST, FIRST", "First M Last", "last, first m"])
    g, f, m = r.patient_given_name, r.patient_family_name, r.patient_middle
    mi = f" {m[0]}." if m else ""
    return {
        "first last": f"{g} {f}",
        "last, first": f"{f}, {g}",
        "LAST, FIRST": f"{f.upper()}, {g.upper()}",
        "First M Last": f"{g}{mi} {f}",
        "last, first m": f"{f}, {g}{mi}",
    }[order]


def fmt_provider(rng: random.Random, r: Referral, style: int | None = None) -> str:
    g, f, m, c = r.provider_given, r.provider_family, r.provider_middle, r.provider_credential
    style = rng.randrange(6) if style is None else style
    mid = f" {m}" if m else ""
    return [f"{g} {f}, {c}", f"Dr. {g} {f}", f"{f}, {g} {c}", f"{g}{mid} {f} {c}",
            f"{g.upper()} {f.upper()}, {c}", f"{g} {f}"][style]


def fmt_specialty(rng: random.Random, s: str) -> str:
    return rng.choice(SPECIALTIES[s])


def fmt_urgency(rng: random.Random, u: str) -> str:
    return rng.choice({"routine": ["Routine", "ROUTINE", "routine"], "urgent": ["Urgent", "URGENT"],
                       "stat": ["STAT", "Stat"]}[u])


def fmt_codes(rng: random.Random, codes: list[str], with_desc: bool | None = None) -> list[str]:
    """One printed line per code, sometimes with the ICD-10-CM description."""
    with_desc = rng.random() < 0.6 if with_desc is None else with_desc
    out = []
    for c in codes:
        if with_desc:
            desc = icd.get_description(c)
            if len(desc) > 60:
                desc = desc[:57].rsplit(" ", 1)[0] + "..."
            out.append(f"{c} {rng.choice(['-', '', '–'.replace('–', '-')])} {desc}".replace("  ", " "))
        else:
            out.append(c)
    return out


def asdict_referral(r: Referral) -> dict:
    d = asdict(r)
    d["patient_dob"] = r.patient_dob.isoformat()
    d["referral_date"] = r.referral_date.isoformat()
    return d
