"""Keep secrets out of anything shown or logged: database URLs, connection strings, error text.

Two layers:

* :func:`redact` hides secret *values* wherever they sit in a text, without parsing it the way
  a driver would (a parser is what leaked: ``make_url`` splits ``u:p@ss@host`` at the first
  ``@``, so ``ss`` became part of the "host"): the userinfo of a URL up to its **last** ``@``;
  ``Pwd=``/``Password=``/``AccountKey=``… values in ODBC, ADO.NET and storage connection strings,
  braced (``{a;b}}c}``), quoted (``"a;b"``) or plain; ``password=`` in a query string; and a
  percent-encoded ``odbc_connect=`` (decoded first, then redacted).
* :func:`scrub` masks every run of 3 or more characters of a *known* secret (the configured
  passwords and keys, see :func:`configured_secrets`), which catches what a misparse scattered
  into a driver's error message.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, unquote_plus

MASK = "***"
MIN_SECRET_RUN = 3

_SECRET_KEYS = r"pwd|password|passwd|accountkey|sharedaccesssignature|sig|client_secret"
_KEY_VALUE = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?P<key>" + _SECRET_KEYS + r")(?P<eq>\s*=\s*)"
    r"(?P<value>\{(?:[^}]|\}\})*(?:\}|$)|\"(?:[^\"]|\"\")*(?:\"|$)|'(?:[^']|'')*(?:'|$)|[^;\r\n]*)"
)
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://")
_ENCODED_KEY = re.compile(r"(?i)(?:" + _SECRET_KEYS + r")%3d")
_ODBC_CONNECT = re.compile(r"(?i)(odbc_connect=)([^&\s'\"]*)")


def _redact_userinfo(url: str, found: list[str]) -> str:
    """``scheme://user:password@rest`` → ``scheme://user:***@rest``; the password ends at the LAST ``@``."""
    match = _URL.match(url)
    if not match:
        return url
    start = match.end()
    at = url.rfind("@", start)
    if at < 0:
        return url
    userinfo = url[start:at]
    if ":" not in userinfo:
        return url
    user, password = userinfo.split(":", 1)
    found.extend([password, unquote(password)])
    return url[:start] + user + ":" + MASK + url[at:]


def _redact_key_values(text: str, found: list[str]) -> str:
    def replace(match: re.Match) -> str:
        value = match.group("value")
        before = text[match.start() - 1] if match.start() else ""
        tail = ""
        if before in "?&" and not value.startswith(("{", '"', "'")):
            # A query string: the value ends at the next parameter.
            cut = re.search(r"[&#\s]", value)
            if cut:
                value, tail = value[:cut.start()], value[cut.start():]
        stripped = value.strip()
        if not stripped:
            return match.group(0)
        found.append(stripped)
        if stripped[0] in "{\"'":
            found.append(stripped[1:-1] if len(stripped) > 1 else stripped)
        found.append(unquote_plus(stripped))
        trailing = value[len(value.rstrip()):]
        return match.group("key") + match.group("eq") + MASK + trailing + tail

    return _KEY_VALUE.sub(replace, text)


def _redact(text: str, whole_url: bool) -> tuple[str, list[str]]:
    found: list[str] = []
    if not text:
        return text, found
    # Percent-encoded connection strings (odbc_connect=, or any encoded Pwd%3D...) are decoded
    # first: their braces and separators are only visible then.
    text = _ODBC_CONNECT.sub(lambda m: m.group(1) + unquote_plus(m.group(2)), text)
    if _ENCODED_KEY.search(text):
        text = unquote_plus(text)
    if whole_url:
        text = _redact_userinfo(text, found)
    else:
        # In free text a URL ends at whitespace or a quote.
        text = re.sub(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>]*",
                      lambda m: _redact_userinfo(m.group(0), found), text)
    text = _redact_key_values(text, found)
    return text, [value for value in found if value]


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str, limit: int) -> str:
    """``text`` on one printable line of at most ``limit`` characters (control characters and
    unpaired surrogates escaped: text from a message or an error must not forge log lines)."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


def redact(text: str) -> str:
    """``text`` (an error message, a log line) with every recognisable secret value masked."""
    return _redact(text, whole_url=False)[0]


def redact_url(url: str) -> str:
    """A database URL or connection string with its password masked, for display."""
    return _redact(url, whole_url=True)[0]


def secret_values(text: str) -> list[str]:
    """The secret values (passwords, keys) a URL or connection string holds, in the forms they
    may appear in (as written, unbraced, percent-decoded)."""
    return _redact(text, whole_url=True)[1] + _redact(text, whole_url=False)[1]


def configured_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """Every secret in the app settings: database passwords, storage keys, signing and function keys."""
    env = os.environ if env is None else env
    found: list[str] = []
    for name in ("DATABASE_URL", "SQL_CONNECTION_STRING", "AzureWebJobsStorage", "TEST_POSTGRES_URL"):
        if env.get(name):
            found.extend(secret_values(env[name]))
    for name in ("MODEL_SIGNING_KEY", "FUNCTION_KEY"):
        if env.get(name):
            found.append(env[name])
    return sorted({value for value in found if len(value) >= MIN_SECRET_RUN}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str], min_run: int = MIN_SECRET_RUN) -> str:
    """Mask every run of ``min_run`` or more characters of ``text`` that occurs in one of ``secrets``."""
    secrets = [s for s in secrets if len(s) >= min_run]
    if not secrets or not text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        longest = 0
        for secret in secrets:
            j = i + min_run
            while j <= len(text) and text[i:j] in secret:
                j += 1
            longest = max(longest, j - 1 - i)
        if longest >= min_run:
            if not out or out[-1] != MASK:
                out.append(MASK)
            i += longest
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def safe_text(text: str, env: Mapping[str, str] | None = None) -> str:
    """What may be shown of ``text``: structurally redacted, then scrubbed of configured secrets."""
    return scrub(redact(text), configured_secrets(env))
