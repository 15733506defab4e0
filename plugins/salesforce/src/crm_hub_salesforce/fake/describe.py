"""The fake org's Contact object as ``GET /sobjects/Contact/describe`` returns it (hand-written).

The fields are a realistic slice of a real org's Contact: standard fields (system ones read-only,
``LastName`` the one required on create, ``HasOptedOutOfEmail`` defaulted), compound fields
(``Name``, ``MailingAddress``), references, picklists (one restricted, with an inactive value), and custom
fields (``__c``) of the remaining types, including a formula. Each field dict carries the attributes
Salesforce sends, so a provider reading more than it should still sees real shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["CONTACT_DESCRIBE", "CONTACT_FIELDS", "describe_field", "picklist"]

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "time": "xsd:time",
    "base64": "xsd:base64Binary",
    "address": "urn:address",
    "location": "urn:location",
    "anyType": "xsd:anyType",
}
_TEXT_TYPES = frozenset(
    {"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox", "encryptedstring", "id"}
)


def picklist(*values: str, inactive: Sequence[str] = (), default: str | None = None) -> list[dict[str, Any]]:
    """``picklistValues``: active values in order, then the inactive ones."""
    entries = [(value, True) for value in values] + [(value, False) for value in inactive]
    return [
        {"active": active, "defaultValue": value == default, "label": value, "validFor": None, "value": value}
        for value, active in entries
    ]


def describe_field(
    name: str,
    label: str,
    type: str,
    *,
    length: int = 0,
    nillable: bool = True,
    createable: bool = True,
    updateable: bool = True,
    defaulted_on_create: bool = False,
    default_value: Any = None,
    custom: bool = False,
    calculated: bool = False,
    formula: str | None = None,
    picklist_values: Iterable[dict[str, Any]] = (),
    restricted_picklist: bool = False,
    reference_to: Sequence[str] = (),
    relationship_name: str | None = None,
    precision: int = 0,
    scale: int = 0,
    digits: int = 0,
    unique: bool = False,
    external_id: bool = False,
    id_lookup: bool = False,
    name_field: bool = False,
    compound_field_name: str | None = None,
    help_text: str | None = None,
    extra_type_info: str | None = None,
) -> dict[str, Any]:
    """One element of ``describe().fields`` with Salesforce's attributes."""
    text = type in _TEXT_TYPES or type == "reference"
    return {
        "aggregatable": type not in ("textarea", "address", "location", "base64"),
        "aiPredictionField": False,
        "autoNumber": False,
        "byteLength": length * 3 if text else 0,
        "calculated": calculated,
        "calculatedFormula": formula,
        "cascadeDelete": False,
        "caseSensitive": False,
        "compoundFieldName": compound_field_name,
        "controllerName": None,
        "createable": createable,
        "custom": custom,
        "defaultValue": default_value,
        "defaultValueFormula": None,
        "defaultedOnCreate": defaulted_on_create,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": digits,
        "displayLocationInDecimal": False,
        "encrypted": type == "encryptedstring",
        "externalId": external_id,
        "extraTypeInfo": extra_type_info,
        "filterable": type not in ("textarea", "base64"),
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": type not in ("textarea", "double", "currency", "percent", "datetime", "address", "location"),
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": id_lookup,
        "inlineHelpText": help_text,
        "label": label,
        "length": length,
        "mask": None,
        "maskType": None,
        "name": name,
        "nameField": name_field,
        "namePointing": False,
        "nillable": nillable,
        "permissionable": nillable and not calculated and type != "id",
        "picklistValues": list(picklist_values),
        "polymorphicForeignKey": False,
        "precision": precision,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": list(reference_to),
        "relationshipName": relationship_name,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": restricted_picklist,
        "scale": scale,
        "searchPrefilterable": False,
        "soapType": _SOAP_TYPES.get(type, "xsd:string"),
        "sortable": type not in ("textarea", "multipicklist", "address", "location", "base64"),
        "type": type,
        "unique": unique,
        "updateable": updateable,
        "writeRequiresMasterRead": False,
    }


#: System fields: set by Salesforce, never written.
_SYSTEM: dict[str, Any] = {"createable": False, "updateable": False, "nillable": False, "defaulted_on_create": True}

CONTACT_FIELDS: list[dict[str, Any]] = [
    describe_field("Id", "Contact ID", "id", length=18, id_lookup=True, **_SYSTEM),
    describe_field("IsDeleted", "Deleted", "boolean", default_value=False, **_SYSTEM),
    describe_field(
        "MasterRecordId",
        "Master Record ID",
        "reference",
        length=18,
        createable=False,
        updateable=False,
        reference_to=["Contact"],
        relationship_name="MasterRecord",
    ),
    describe_field(
        "AccountId", "Account ID", "reference", length=18, reference_to=["Account"], relationship_name="Account"
    ),
    describe_field("LastName", "Last Name", "string", length=80, nillable=False, compound_field_name="Name"),
    describe_field("FirstName", "First Name", "string", length=40, compound_field_name="Name"),
    describe_field(
        "Salutation",
        "Salutation",
        "picklist",
        length=40,
        compound_field_name="Name",
        picklist_values=picklist("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.", "Mx."),
    ),
    describe_field(
        "Name", "Full Name", "string", length=121, createable=False, updateable=False, nillable=False, name_field=True
    ),
    describe_field("MailingStreet", "Mailing Street", "textarea", length=255, compound_field_name="MailingAddress"),
    describe_field("MailingCity", "Mailing City", "string", length=40, compound_field_name="MailingAddress"),
    describe_field("MailingState", "Mailing State/Province", "string", length=80, compound_field_name="MailingAddress"),
    describe_field(
        "MailingPostalCode", "Mailing Zip/Postal Code", "string", length=20, compound_field_name="MailingAddress"
    ),
    describe_field("MailingCountry", "Mailing Country", "string", length=80, compound_field_name="MailingAddress"),
    describe_field("MailingAddress", "Mailing Address", "address", createable=False, updateable=False),
    describe_field("Phone", "Business Phone", "phone", length=40),
    describe_field("MobilePhone", "Mobile Phone", "phone", length=40),
    describe_field("Email", "Email", "email", length=80, id_lookup=True),
    describe_field("Title", "Title", "string", length=128),
    describe_field("Department", "Department", "string", length=80),
    describe_field(
        "LeadSource",
        "Lead Source",
        "picklist",
        length=255,
        picklist_values=picklist(
            "Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other", inactive=["Trade Show"]
        ),
    ),
    describe_field("Birthdate", "Birthdate", "date"),
    describe_field("Description", "Contact Description", "textarea", length=32000, extra_type_info="plaintextarea"),
    describe_field(
        "OwnerId",
        "Owner ID",
        "reference",
        length=18,
        nillable=False,
        defaulted_on_create=True,
        reference_to=["User"],
        relationship_name="Owner",
    ),
    describe_field("HasOptedOutOfEmail", "Email Opt Out", "boolean", nillable=False, defaulted_on_create=True),
    describe_field("DoNotCall", "Do Not Call", "boolean", nillable=False, defaulted_on_create=True),
    describe_field("CreatedDate", "Created Date", "datetime", **_SYSTEM),
    describe_field(
        "CreatedById",
        "Created By ID",
        "reference",
        length=18,
        reference_to=["User"],
        relationship_name="CreatedBy",
        **_SYSTEM,
    ),
    describe_field("LastModifiedDate", "Last Modified Date", "datetime", **_SYSTEM),
    describe_field("LastActivityDate", "Last Activity", "date", createable=False, updateable=False),
    describe_field(
        "NumberOfEmployees__c",
        "Number of Employees",
        "double",
        custom=True,
        precision=18,
        scale=0,
        help_text="Head count of the contact's company.",
    ),
    describe_field("Website__c", "Website", "url", length=255, custom=True),
    describe_field("Lifetime_Value__c", "Lifetime Value", "currency", custom=True, precision=16, scale=2),
    describe_field("Discount__c", "Discount", "percent", custom=True, precision=5, scale=2),
    describe_field(
        "Preferred_Channel__c",
        "Preferred Channel",
        "picklist",
        length=255,
        custom=True,
        restricted_picklist=True,
        picklist_values=picklist("Email", "Phone", "SMS", inactive=["Fax"]),
    ),
    describe_field(
        "Interests__c",
        "Interests",
        "multipicklist",
        length=4099,
        custom=True,
        picklist_values=picklist("Product", "Pricing", "Partnership", "Support"),
    ),
    describe_field(
        "Engagement_Score__c",
        "Engagement Score",
        "double",
        custom=True,
        calculated=True,
        createable=False,
        updateable=False,
        precision=18,
        scale=0,
        formula="IF(HasOptedOutOfEmail, 0, 10)",
    ),
    describe_field(
        "Office_Location__c", "Office Location", "location", custom=True, createable=False, updateable=False
    ),
    describe_field("Badge_Code__c", "Badge Code", "encryptedstring", length=175, custom=True),
]

CONTACT_DESCRIBE: dict[str, Any] = {
    "actionOverrides": [],
    "activateable": False,
    "childRelationships": [],
    "compactLayoutable": True,
    "createable": True,
    "custom": False,
    "customSetting": False,
    "deletable": True,
    "deprecatedAndHidden": False,
    "feedEnabled": True,
    "hasSubtypes": False,
    "isSubtype": False,
    "keyPrefix": "003",
    "label": "Contact",
    "labelPlural": "Contacts",
    "layoutable": True,
    "mergeable": True,
    "mruEnabled": True,
    "name": "Contact",
    "namedLayoutInfos": [],
    "networkScopeFieldName": None,
    "queryable": True,
    "recordTypeInfos": [],
    "replicateable": True,
    "retrieveable": True,
    "searchLayoutable": True,
    "searchable": True,
    "supportedScopes": [{"label": "All contacts", "name": "everything"}, {"label": "My contacts", "name": "mine"}],
    "triggerable": True,
    "undeletable": True,
    "updateable": True,
}
