"""Secrets never shown: database URLs and connection strings in every form they are written in."""
from urllib.parse import quote_plus

import pytest

from shared.redaction import configured_secrets, redact, redact_url, safe_text, scrub
from shared.storage import engines as db


def runs(secret: str, length: int = 3) -> set[str]:
    return {secret[i:i + length] for i in range(len(secret) - length + 1)}


def assert_hidden(output: str, secret: str) -> None:
    leaked = sorted(run for run in runs(secret) if run in output)
    assert not leaked, f"{leaked} of the secret shown in {output!r}"


ODBC_BRACED = ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:h,1433;Uid=app;Pwd={Qu;ix}}S3kr1t};"
               "Encrypt=yes;")
CASES = [
    # (text as configured, the secret as written in it, what must still be shown)
    ("postgresql+psycopg://u:p@ss@host/db", "p@ss", "@host/db"),
    ("postgresql+psycopg://fraud:Xy7@Qz9@Wv4@db.example.com:5432/fraud", "Xy7@Qz9@Wv4", "db.example.com:5432/fraud"),
    ("postgresql://u:pa/ss:wo?rd#x@host/db", "pa/ss:wo?rd#x", "@host/db"),
    ("postgresql+psycopg://u:p%40ss%3Aw0rdz@host/db", "p%40ss%3Aw0rdz", "@host/db"),
    ("postgresql+psycopg://u:hunter2@h/db", "hunter2", "u:***@h/db"),
    ("postgresql://host/db?user=u&password=Hunt3rS3cr&sslmode=require", "Hunt3rS3cr", "sslmode=require"),
    ("mssql+pyodbc:///?odbc_connect=" + quote_plus(ODBC_BRACED), "Qu;ix}}S3kr1t", "Server=tcp:h,1433"),
    ("mssql+pyodbc:///?odbc_connect=" + quote_plus("Server=h;Uid=a;Pwd=Pl41nP4ss!;"), "Pl41nP4ss!", "Uid=a"),
    ("Server=tcp:h,1433;Database=fraud;Uid=app;Pwd=Sup3rSecret!;Encrypt=yes;", "Sup3rSecret!", "Encrypt=yes"),
    ("Server=tcp:h,1433;Initial Catalog=fraud;User ID=app;Password=My$ecr3tPa55;Encrypt=True;", "My$ecr3tPa55",
     "Encrypt=True"),
    ("Server=h;User ID=app;Password={My;$ecr}}3tPa55};Encrypt=True;", "My;$ecr}}3tPa55", "Encrypt=True"),
    ('Server=h;User ID=app;Password="My;Qu""0ted";Encrypt=True;', 'My;Qu""0ted', "Encrypt=True"),
    ("Server=h; PASSWORD = Sp4c3dV4lue ; Uid=a", "Sp4c3dV4lue", "Uid=a"),
    ("Server=h;Uid=a;pwd=EndOfStr1ng", "EndOfStr1ng", "Uid=a"),
    ("Server=h;Uid=a;Pwd={Unterminated;br4ce", "Unterminated;br4ce", "Server=h"),
    ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=QmFzZTY0S2V5VmFsdWU9PQ==;"
     "EndpointSuffix=core.windows.net", "QmFzZTY0S2V5VmFsdWU9PQ==", "AccountName=acct"),
]


@pytest.mark.parametrize("text, secret, shown", CASES, ids=[c[1] for c in CASES])
def test_redaction_hides_every_run_of_the_password(text, secret, shown):
    for output in (redact_url(text), db.redact_url(text), redact(text), redact(f"connecting to {text} failed")):
        assert_hidden(output, secret)
    assert shown in redact_url(text)


def test_urls_in_free_text_end_at_whitespace_and_quotes():
    text = 'connection to "postgresql://u:S3cr3tP4ss@host:5432/db" failed; retry postgresql://v:Other0ne@h2/x'
    output = redact(text)
    assert_hidden(output, "S3cr3tP4ss") and assert_hidden(output, "Other0ne")
    assert '"postgresql://u:***@host:5432/db" failed' in output and "v:***@h2/x" in output


def test_scrub_masks_fragments_a_driver_scattered():
    # make_url reads "u:abc@defghi@host" as password "abc", host "defghi@host": the error names that host.
    message = 'could not translate host name "defghi@host" to address'
    secrets = configured_secrets({"DATABASE_URL": "postgresql+psycopg://u:abc@defghi@host/db"})
    output = scrub(message, secrets)
    assert_hidden(output, "abc@defghi")
    assert output == 'could not translate host name "***@host" to address'
    assert safe_text(message, {"DATABASE_URL": "postgresql+psycopg://u:abc@defghi@host/db"}) == output


def test_nothing_to_hide_is_left_alone():
    for text in ("sqlite:///.local/fraud.db", "postgresql+psycopg://fraud@127.0.0.1:5432/fraud",
                 "UseDevelopmentStorage=true", "Server=h;Authentication=ActiveDirectoryMsi;"):
        assert redact_url(text) == text and redact(text) == text
