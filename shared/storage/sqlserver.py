"""SQL Server connection strings as the Azure portal gives them (ODBC or ADO.NET form),
normalised for "ODBC Driver 18 for SQL Server" (pyodbc via SQLAlchemy's mssql dialect)."""
from __future__ import annotations

import re

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
_AUTH_ADO_TO_ODBC = {
    "active directory default": "ActiveDirectoryMsi",
    "active directory managed identity": "ActiveDirectoryMsi",
    "active directory msi": "ActiveDirectoryMsi",
    "active directory password": "ActiveDirectoryPassword",
    "active directory service principal": "ActiveDirectoryServicePrincipal",
    "active directory interactive": "ActiveDirectoryInteractive",
}


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
