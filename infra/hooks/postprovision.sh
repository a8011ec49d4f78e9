#!/usr/bin/env bash
# azd postprovision hook: make the function app's managed identity a user of the database,
# with the three roles the app needs. Bicep cannot do this: contained database users are
# created with T-SQL, by a principal that can log in to the database.
#
# WHO MUST RUN IT: the SQL server's Microsoft Entra administrator (the sqlAdminObjectId
# parameter; by default the principal that ran `azd up`). sqlcmd signs in with
# ActiveDirectoryDefault, which finds the Azure CLI's (`az login`) or azd's
# (`azd auth login`) credential; both must be that principal. If the administrator is a
# group, any member can run it.
#
# Idempotent: an existing user or role membership is left as it is, so re-running it
# (`azd hooks run postprovision`) is safe.
#
# Needs: go-sqlcmd (`sqlcmd` that knows --authentication-method), and the Azure CLI when this
# machine's IP must be let through the SQL firewall: the hook then adds a rule for that one
# address and removes it again when it ends.
set -euo pipefail

: "${AZURE_SQL_SERVER_FQDN:?run through azd (azd provision / azd hooks run postprovision), or export the azd outputs}"
: "${AZURE_SQL_SERVER_NAME:?missing azd output}"
: "${AZURE_SQL_DATABASE_NAME:?missing azd output}"
: "${AZURE_FUNCTION_IDENTITY_NAME:?missing azd output}"
: "${AZURE_RESOURCE_GROUP:?missing azd output}"

identity=$AZURE_FUNCTION_IDENTITY_NAME
# The name goes into T-SQL (as a bracketed identifier and a string): accept only what Azure
# allows in the identity names this template creates.
if ! [[ $identity =~ ^[A-Za-z0-9_-]{3,128}$ ]]; then
  echo "postprovision: unexpected identity name '$identity'" >&2
  exit 1
fi

if ! command -v sqlcmd >/dev/null 2>&1 || ! sqlcmd --help 2>&1 | grep -q -- '--authentication-method'; then
  cat >&2 <<EOF
postprovision: go-sqlcmd is required (https://learn.microsoft.com/sql/tools/sqlcmd/go-sqlcmd-utility).
Install it, sign in with 'az login' as the SQL Entra administrator, then run:
  azd hooks run postprovision
EOF
  exit 1
fi

sql=$(mktemp)
rule=""
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  rm -f "$sql"
  if [ -n "$rule" ]; then
    echo "postprovision: removing firewall rule $rule"
    az sql server firewall-rule delete --resource-group "$AZURE_RESOURCE_GROUP" \
      --server "$AZURE_SQL_SERVER_NAME" --name "$rule" --only-show-errors >/dev/null || \
      echo "postprovision: could not remove firewall rule $rule; delete it by hand" >&2
  fi
}
trap cleanup EXIT

cat >"$sql" <<'SQL'
SET NOCOUNT ON;
IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = N'$(AppIdentity)')
BEGIN
    CREATE USER [$(AppIdentity)] FROM EXTERNAL PROVIDER;
    PRINT 'created user $(AppIdentity)';
END
ELSE
    PRINT 'user $(AppIdentity) exists';
-- Read history and labels, write transactions, labels and training runs, create the tables
-- and indexes on first use (shared/storage/db.py create_schema). Nothing more: no db_owner.
IF ISNULL(IS_ROLEMEMBER('db_datareader', N'$(AppIdentity)'), 0) = 0
    ALTER ROLE db_datareader ADD MEMBER [$(AppIdentity)];
IF ISNULL(IS_ROLEMEMBER('db_datawriter', N'$(AppIdentity)'), 0) = 0
    ALTER ROLE db_datawriter ADD MEMBER [$(AppIdentity)];
IF ISNULL(IS_ROLEMEMBER('db_ddladmin', N'$(AppIdentity)'), 0) = 0
    ALTER ROLE db_ddladmin ADD MEMBER [$(AppIdentity)];
SELECT r.name AS role_of_app_identity
FROM sys.database_role_members AS m
JOIN sys.database_principals AS r ON r.principal_id = m.role_principal_id
JOIN sys.database_principals AS u ON u.principal_id = m.member_principal_id
WHERE u.name = N'$(AppIdentity)';
SQL

# ActiveDirectoryDefault: environment, managed identity, Azure CLI, then azd credentials, in
# that order. -b: stop at the first error with a non-zero exit code. -l: login timeout (s).
run_sql() {
  sqlcmd -S "tcp:${AZURE_SQL_SERVER_FQDN},1433" -d "$AZURE_SQL_DATABASE_NAME" \
    --authentication-method "${SQLCMD_AUTHENTICATION_METHOD:-ActiveDirectoryDefault}" -b -l 30 \
    -v "AppIdentity=$identity" -i "$sql" 2>&1
}

echo "postprovision: granting $identity db_datareader, db_datawriter, db_ddladmin in $AZURE_SQL_DATABASE_NAME"
if output=$(run_sql); then
  echo "$output"
  exit 0
fi

# Azure SQL names the refused client address in its error; let exactly that address in.
ip=$(printf '%s\n' "$output" | grep -oE "Client with IP address '([0-9]{1,3}\.){3}[0-9]{1,3}'" | grep -oE "([0-9]{1,3}\.){3}[0-9]{1,3}" | head -n 1 || true)
if [ -z "$ip" ]; then
  echo "$output" >&2
  echo "postprovision: failed; are you signed in (az login) as the SQL server's Entra administrator?" >&2
  exit 1
fi
if ! command -v az >/dev/null 2>&1; then
  echo "$output" >&2
  echo "postprovision: the SQL firewall refuses $ip; allow it (portal, or the Azure CLI) and re-run" >&2
  exit 1
fi
rule="azd-postprovision-${ip//./-}"
echo "postprovision: the SQL firewall refused $ip; adding temporary rule $rule"
az sql server firewall-rule create --resource-group "$AZURE_RESOURCE_GROUP" --server "$AZURE_SQL_SERVER_NAME" \
  --name "$rule" --start-ip-address "$ip" --end-ip-address "$ip" --only-show-errors >/dev/null

# A new rule takes a little while to apply.
for attempt in 1 2 3 4 5 6; do
  sleep 10
  if output=$(run_sql); then
    echo "$output"
    exit 0
  fi
  echo "postprovision: attempt $attempt failed, retrying"
done
echo "$output" >&2
exit 1
