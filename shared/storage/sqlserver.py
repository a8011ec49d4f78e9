"""SQL Server connection strings as the Azure portal gives them (ODBC or ADO.NET form),
normalised for "ODBC Driver 18 for SQL Server" (pyodbc via SQLAlchemy's mssql dialect)."""
from __future__ import annotations

import re
import struct

ODBC_DRIVER = "ODBC Driver 18 for SQL Server"

_ADO_TO_ODBC = {
    "server": "Server", "data source": "Server", "address": "Server", "addr": "Server",
    "initial catalog": "Database", "database": "Database",
    "user id": "Uid", "uid": "Uid", "user": "Uid",
    "password": "Pwd", "pwd": "Pwd",
    "encrypt": "Encrypt", "trustservercertificate": "TrustServerCertificate",
    "connection timeout": "Connection Timeout", "connect timeout": "Connection Timeout",
    "authentication": "Authentication", "driver": "Driver",
    "hostnameincertificate": "HostNameInCertificate",
}
# ADO.NET-only keys the ODBC driver does not understand.
_ADO_ONLY = {"persist security info", "multipleactiveresultsets", "pooling", "application name"}
# "Active Directory Default" (any Entra identity DefaultAzureCredential finds: the managed
# identity in Azure, `az login` on an operator's machine) is not an ODBC mode: the engine
# passes an access token instead (see TOKEN_AUTHENTICATION).
TOKEN_AUTHENTICATION = "ActiveDirectoryDefault"
_AUTH_ADO_TO_ODBC = {
    "active directory default": TOKEN_AUTHENTICATION,
    "activedirectorydefault": TOKEN_AUTHENTICATION,
    "active directory managed identity": "ActiveDirectoryMsi",
    "active directory msi": "ActiveDirectoryMsi",
    "active directory password": "ActiveDirectoryPassword",
    "active directory service principal": "ActiveDirectoryServicePrincipal",
    "active directory interactive": "ActiveDirectoryInteractive",
}


def without_token_authentication(odbc: str) -> tuple[str, bool]:
    """(the ODBC string without ``Authentication=ActiveDirectoryDefault``, whether it had it):
    the driver refuses an access token beside an Authentication keyword."""
    pairs = _split_connection_string(odbc)
    token = any(k.strip().lower() == "authentication" and v.strip().lower() == TOKEN_AUTHENTICATION.lower()
                for k, v in pairs)
    if not token:
        return odbc, False
    kept = [(k, v) for k, v in pairs if k.strip().lower() != "authentication"]
    return ";".join(f"{k}={v}" for k, v in kept) + ";", True


def access_token_attribute(token: str) -> dict[int, bytes]:
    """pyodbc's ``attrs_before`` carrying an Entra access token (SQL_COPT_SS_ACCESS_TOKEN):
    the token as UTF-16-LE bytes, prefixed with their length."""
    raw = token.encode("utf-16-le")
    return {1256: struct.pack(f"<I{len(raw)}s", len(raw), raw)}


def _split_connection_string(text: str) -> list[tuple[str, str]]:
    """Split ``k=v;k={v;with;semicolons}`` pairs, keeping braces around values."""
    pairs = []
    for match in re.finditer(r"\s*([^=;]+?)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)\s*(?:;|$)", text):
        pairs.append((match.group(1), match.group(2)))
    return pairs


def odbc_connection_string(text: str) -> str:
    """Normalise a SQL Server connection string (ODBC or ADO.NET form, as the Azure portal
    gives it) into an ODBC string for "ODBC Driver 18 for SQL Server"."""
    out: dict[str, str] = {}
    for key, value in _split_connection_string(text):
        lowered = key.strip().lower()
        if lowered in _ADO_ONLY:
            continue
        name = _ADO_TO_ODBC.get(lowered, key.strip())
        if name == "Authentication":
            value = _AUTH_ADO_TO_ODBC.get(value.strip().lower(), value)
        if name == "Encrypt" and value.strip().lower() in {"true", "mandatory"}:
            value = "yes"
        if name == "Encrypt" and value.strip().lower() in {"false", "optional"}:
            value = "no"
        if name == "TrustServerCertificate":
            value = {"true": "yes", "false": "no"}.get(value.strip().lower(), value)
        out[name] = value
    if "Server" not in out:
        raise ValueError("SQL Server connection string has no Server")
    out.setdefault("Driver", "{" + ODBC_DRIVER + "}")
    if not out["Driver"].startswith("{"):
        out["Driver"] = "{" + out["Driver"] + "}"
    out.setdefault("Encrypt", "yes")
    ordered = ["Driver"] + [k for k in out if k != "Driver"]
    return ";".join(f"{k}={out[k]}" for k in ordered) + ";"
