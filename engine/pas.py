"""A prior-authorization request as a FHIR Bundle shaped like Da Vinci PAS (FHIR R4), for payers' FHIR APIs.

`auth_bundle(conn, referral_id, config)` returns the Bundle as a dict (JSON-ready):
type `collection`, first entry a Claim with `use = preauthorization`, then what it
references: Patient, Coverage (member id, plan), the payer and us as Organizations,
the referring Practitioner and the referral as a ServiceRequest. The whole Bundle is
validated by fhir.resources' R4B models (R4B is the R4-compatible release it ships;
PAS itself is on R4 4.0.1); a Bundle the models refuse raises `ValueError` naming the
element. Identifiers use the US-core systems (NPI, payer id, member id). The PAS
profile's own extensions (certification type, level of service) are not added.

Raises LookupError when the referral does not exist.
"""
from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timezone

from engine.config import EngineConfig

NPI = "http://hl7.org/fhir/sid/us-npi"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
SEX = {"M": "male", "F": "female", "U": "unknown"}


def _ref(resource_id: str) -> dict:
    return {"reference": f"urn:uuid:{resource_id}"}


def auth_bundle(conn: sqlite3.Connection, referral_id: int, config: EngineConfig) -> dict:
    from fhir.resources.R4B.bundle import Bundle
    from engine.payers import payer_of
    from engine.referral_store import ReferralStore
    store = ReferralStore(conn)
    referral = store.get(referral_id)
    if referral is None:
        raise LookupError(f"no referral with id {referral_id}")
    payer_rule = payer_of(config.payers, referral)
    ids = {k: str(uuid.uuid5(uuid.NAMESPACE_URL, f"referral:{referral_id}:{k}"))
           for k in ("claim", "patient", "coverage", "payer", "requester", "practitioner", "request")}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")

    patient = {"resourceType": "Patient", "id": ids["patient"],
               "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                    "code": i["type"] or "MR"}]},
                               "value": i["identifier"], **({"system": f"urn:oid:{i['authority']}"}
                                                            if (i["authority"] or "").replace(".", "").isdigit()
                                                            else {})}
                              for i in store.identifiers(referral_id)] or None,
               "name": [{"family": referral.get("patient_family_name"),
                         "given": [referral["patient_given_name"]] if referral.get("patient_given_name") else None}],
               "gender": SEX.get(referral.get("patient_sex") or "", None),
               "birthDate": referral.get("patient_birth_date")}
    payer = {"resourceType": "Organization", "id": ids["payer"], "name": referral.get("payer") or "Unknown payer",
             "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                   "code": "pay"}]}]}
    if payer_rule is not None:
        payer["identifier"] = [{"system": "urn:x12:payer-id", "value": payer_rule.payer_id}]
    requester = {"resourceType": "Organization", "id": ids["requester"], "name": config.payers.provider_name,
                 "identifier": [{"system": NPI, "value": config.payers.provider_npi}],
                 "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                       "code": "prov"}]}]}
    coverage = {"resourceType": "Coverage", "id": ids["coverage"],
                "status": "active" if referral.get("coverage_status") != "inactive" else "cancelled",
                "subscriberId": referral.get("member_id"), "beneficiary": _ref(ids["patient"]),
                "relationship": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
                                             "code": "self"}]},
                "payor": [_ref(ids["payer"])]}
    if referral.get("coverage_plan"):
        coverage["class"] = [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                                                   "code": "plan"}]}, "value": referral["coverage_plan"]}]
    referring = referral.get("referring_provider") or {}
    practitioner = {"resourceType": "Practitioner", "id": ids["practitioner"],
                    "identifier": [{"system": NPI, "value": referral["referring_npi"]}]
                    if referral.get("referring_npi") else None,
                    "name": [{"family": referring.get("family_name") or (referral.get("referring_name") or "").rpartition(" ")[2]
                              or "Unknown",
                              "given": [referring["given_name"]] if referring.get("given_name") else None}]}
    diagnoses = store.diagnoses(referral_id)
    service = {"coding": [{"system": CPT, "code": referral["service_code"]}]} if referral.get("service_code") else \
        {"text": referral.get("service_text") or referral.get("specialty") or "specialist consultation"}
    request = {"resourceType": "ServiceRequest", "id": ids["request"], "status": "active", "intent": "order",
               "code": service, "subject": _ref(ids["patient"]), "requester": _ref(ids["practitioner"]),
               "reasonCode": [{"coding": [{"system": ICD10, "code": d["code"]}]} for d in diagnoses] or None,
               "identifier": [{"value": referral["placer_order_number"]}] if referral.get("placer_order_number")
               else None}
    claim = {"resourceType": "Claim", "id": ids["claim"], "status": "active", "use": "preauthorization",
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                                  "code": "professional"}]},
             "patient": _ref(ids["patient"]), "created": now, "insurer": _ref(ids["payer"]),
             "provider": _ref(ids["requester"]),
             "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                                      "code": "stat" if referral.get("urgency") in ("stat", "urgent") else "normal"}]},
             "referral": _ref(ids["request"]),
             "careTeam": [{"sequence": 1, "provider": _ref(ids["practitioner"])}],
             "diagnosis": [{"sequence": i + 1, "diagnosisCodeableConcept": {"coding": [{"system": ICD10,
                                                                                        "code": d["code"]}]}}
                           for i, d in enumerate(diagnoses)] or None,
             "insurance": [{"sequence": 1, "focal": True, "coverage": _ref(ids["coverage"])}],
             "item": [{"sequence": 1, "productOrService": service, "careTeamSequence": [1],
                       "diagnosisSequence": list(range(1, min(len(diagnoses), 4) + 1)) or None}],
             "identifier": [{"system": "urn:riverbend:referral", "value": str(referral_id)}]}
    resources = [claim, patient, coverage, payer, requester, practitioner, request]
    bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": now,
              "identifier": {"system": "urn:riverbend:pas-request", "value": f"referral-{referral_id}"},
              "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": _drop_empty(r)} for r in resources]}
    try:
        model = Bundle.model_validate(bundle)
    except Exception as exc:     # pydantic.ValidationError: names the element path
        raise ValueError(f"the PAS Bundle does not validate: {exc}") from None
    return model.model_dump(mode="json", exclude_none=True)


def _drop_empty(value):
    """FHIR forbids empty elements: drop None, empty lists and dicts, recursively."""
    if isinstance(value, dict):
        out = {k: _drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {}, "")}
    if isinstance(value, list):
        out = [_drop_empty(v) for v in value]
        return [v for v in out if v not in (None, [], {}, "")]
    return value
