"""SOQL literals: the provider's escaper, the fake's tokenizer, and lookups with hostile emails end to end."""

from __future__ import annotations

import httpx
import pytest
from crm_hub.errors import Rejected
from crm_hub.providers import TokenSet
from salesforce_support import API

from crm_hub_salesforce import SalesforceProvider, soql
from crm_hub_salesforce.fake import FakeSalesforce, SoqlError
from crm_hub_salesforce.fake.soql import Comparison, InList, Junction, parse, tokenize

# -- the escaper ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("ada@example.com", "'ada@example.com'"),
        ("o'brien@example.com", "'o\\'brien@example.com'"),
        ("back\\slash@example.com", "'back\\\\slash@example.com'"),
        ('say "hi"', "'say \\\"hi\\\"'"),
        ("a\nb\rc\td\be\ff", "'a\\nb\\rc\\td\\be\\ff'"),
        ("nul\x00bell\x07del\x7f", "'nul\\u0000bell\\u0007del\\u007f'"),
        ("x' OR Email != '", "'x\\' OR Email != \\''"),
        ("\\'", "'\\\\\\''"),
        ("ünïcødé@exämple.com", "'ünïcødé@exämple.com'"),
        ("", "''"),
    ],
)
def test_quote_makes_one_literal(value: str, literal: str) -> None:
    assert soql.quote(value) == literal


@pytest.mark.parametrize(
    "value",
    ["o'brien@example.com", "a\\b", "x' OR Email != '", "\\'", "'\\", "x') OR (Email != '", '\n\r\t\b\f"\x01', "%_"],
)
def test_every_quoted_value_reads_back_as_exactly_itself(value: str) -> None:
    tokens = tokenize(soql.quote(value))

    assert [(token.kind, token.value) for token in tokens] == [("string", value), ("eof", None)]


def test_string_list_quotes_each_value() -> None:
    assert soql.string_list(["a@x.com", "o'b@x.com"]) == "('a@x.com', 'o\\'b@x.com')"


def test_an_empty_in_list_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        soql.string_list([])


def test_only_strings_become_literals() -> None:
    with pytest.raises(TypeError):
        soql.quote(42)  # type: ignore[arg-type]


def test_the_lookup_query_orders_oldest_first() -> None:
    assert soql.contacts_by_email(["a@x.com", "b@x.com"]) == (
        "SELECT Id, Email FROM Contact WHERE Email IN ('a@x.com', 'b@x.com') ORDER BY CreatedDate ASC, Id ASC"
    )


def test_an_injection_attempt_stays_inside_its_literal() -> None:
    query = parse(soql.contacts_by_email(["x') OR (Email != '"]))

    assert query.where == InList("Email", ("x') OR (Email != '",))


# -- the fake's parser ------------------------------------------------------------------------------------


def test_the_fake_parses_what_a_naive_client_would_send() -> None:
    """Without escaping, the same email widens the query: the fake would run it as written."""
    naive = "SELECT Id FROM Contact WHERE Email IN ('x') OR (Email != '') ORDER BY Id"

    query = parse(naive)

    assert query.where == Junction("OR", (InList("Email", ("x",)), Comparison("Email", "!=", "")))


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELECT Id FROM Contact WHERE Email = 'a\\qb'", "Illegal character sequence '\\q'"),
        ("SELECT Id FROM Contact WHERE Email = 'o'brien'", "mismatched character '<EOF>'"),  # the last ' opens
        ("SELECT Id FROM Contact WHERE Email = 'unterminated", "mismatched character '<EOF>'"),
        ("SELECT Id FROM Contact WHERE Email = 'trailing\\", "mismatched character '<EOF>'"),
        ("SELECT Id FROM Contact WHERE Email = 'bad \\u12'", "Illegal unicode escape"),
        ('SELECT Id FROM Contact WHERE Email = "double"', "unexpected token"),
        ("SELECT Id FROM Contact WHERE Email LIKE 'a%'", "unexpected token"),
        ("SELECT Id FROM Contact WHERE Email = 'a' AND Id = 'b' OR Id = 'c'", "unexpected token: 'OR'"),
        ("SELECT Id FROM Contact WHERE Email IN ()", "unexpected token"),
        ("SELECT Id FROM Contact; DELETE", "unexpected token: ';'"),
        ("SELECT FROM Contact", "unexpected token"),
    ],
)
def test_the_fake_refuses_what_salesforce_refuses_as_malformed(query: str, reason: str) -> None:
    with pytest.raises(SoqlError) as caught:
        parse(query)

    assert caught.value.code == "MALFORMED_QUERY"
    assert reason in caught.value.message
    assert "ERROR at Row:1:Column:" in caught.value.message


def test_the_fake_reads_every_soql_escape() -> None:
    [token, _] = tokenize("'\\n\\N\\r\\R\\t\\T\\b\\B\\f\\F\\\"\\'\\\\\\u00e9'")

    assert token.value == "\n\n\r\r\t\t\b\b\f\f\"'\\é"


# -- lookups end to end -------------------------------------------------------------------------------------


@pytest.fixture
def seeded(fake: FakeSalesforce) -> dict[str, str]:
    """Contacts whose emails need escaping, and bystanders an injection would reveal."""
    return {
        "obrien": fake.add_contact({"LastName": "O'Brien", "Email": "o'brien@example.com"}),
        "backslash": fake.add_contact(
            {"LastName": "Slash", "Email": "back\\slash@example.com"}, validate_values=False
        ),  # imported data can hold what Salesforce's own validation refuses
        "bystander": fake.add_contact({"LastName": "Lovelace", "Email": "ada@example.com"}),
        "other": fake.add_contact({"LastName": "Hopper", "Email": "grace@example.com"}),
    }


async def test_an_apostrophe_email_is_found_exactly(
    provider: SalesforceProvider, tokens: TokenSet, seeded: dict[str, str]
) -> None:
    found = await provider.find_contacts_by_email(tokens, ["O'Brien@Example.com"])

    assert found == {"o'brien@example.com": [seeded["obrien"]]}


async def test_a_backslash_email_is_found_exactly(
    provider: SalesforceProvider, tokens: TokenSet, seeded: dict[str, str]
) -> None:
    found = await provider.find_contacts_by_email(tokens, ["back\\slash@example.com", "backslash@example.com"])

    assert found == {"back\\slash@example.com": [seeded["backslash"]], "backslash@example.com": []}


@pytest.mark.parametrize("attack", ["x' OR Email != '", "x') OR (Email != '", "\\' OR Email != \\'", "%"])
async def test_an_injection_attempt_finds_nothing_and_never_widens_the_query(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet, seeded: dict[str, str], attack: str
) -> None:
    found = await provider.find_contacts_by_email(tokens, [attack])

    assert found == {attack.lower(): []}
    [call] = fake.query_calls()
    assert call.status == 200
    assert parse(call.query["q"]).where == InList("Email", (attack.lower(),))


async def test_the_fake_shows_what_an_unescaped_query_would_have_leaked(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet, seeded: dict[str, str]
) -> None:
    """The control experiment: the same attack interpolated raw returns every contact."""
    naive = "SELECT Id, Email FROM Contact WHERE Email IN ('x') OR (Email != '') ORDER BY CreatedDate ASC, Id ASC"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake.app)) as client:
        response = await client.get(
            f"{tokens.instance_url}{API}/query",
            params={"q": naive},
            headers={"Authorization": f"Bearer {tokens.access_token}"},
        )

    assert response.status_code == 200
    assert response.json()["totalSize"] == len(seeded)


async def test_a_malformed_query_is_rejected_not_retried(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.fail_next(
        status=400,
        error_code="MALFORMED_QUERY",
        message="\nSELECT Id FROM Contact WHERE Email IN ('a\\q')\n                ^\nERROR at Row:1:Column:40\n"
        "Invalid string literal 'a\\q'. Illegal character sequence '\\q' in string literal.",
    )

    with pytest.raises(Rejected) as caught:
        await provider.find_contacts_by_email(tokens, ["a@example.com"])

    assert caught.value.reason == "MALFORMED_QUERY"
    assert "SELECT" not in caught.value.message  # the reason line only, not the whole query
    assert "Illegal character sequence" in caught.value.message
