# The function app as a container image, for the Functions Premium plan or Azure Container
# Apps. (Flex Consumption, which infra/ deploys, runs code packages, not images.)
# Build: docker build -t <registry>.azurecr.io/fraud-fn:<tag> .   (docs/deployment.md)
#
# The Python version of the tag is the one the project targets (README, infra/app/function.bicep);
# tests/unit/test_infra.py keeps them equal.
FROM mcr.microsoft.com/azure-functions/python:4-python3.11

ENV AzureWebJobsScriptRoot=/home/site/wwwroot \
    AzureFunctionsJobHost__Logging__Console__IsEnabled=true \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Microsoft ODBC Driver 18 for SQL Server (SQL_CONNECTION_STRING), pinned, from
# packages.microsoft.com for the image's Debian release. The base image already lists that
# repository in mssql-release.list; this file replaces it with the same source, signed by the
# key fetched here, so there is exactly one entry for it. --allow-downgrades: the pin wins
# even when the base image was built with a newer driver.
ARG MSODBCSQL18_VERSION=18.5.1.1-1
RUN . /etc/os-release \
    && curl -fsSL --proto '=https' https://packages.microsoft.com/keys/microsoft.asc \
        -o /usr/share/keyrings/microsoft-prod.asc \
    && chmod 0644 /usr/share/keyrings/microsoft-prod.asc \
    && echo "deb [arch=amd64 signed-by=/usr/share/keyrings/microsoft-prod.asc] https://packages.microsoft.com/debian/${VERSION_ID}/prod ${VERSION_CODENAME} main" \
        > /etc/apt/sources.list.d/mssql-release.list \
    && apt-get update \
    && ACCEPT_EULA=Y apt-get install -y --no-install-recommends --allow-downgrades \
        "msodbcsql18=${MSODBCSQL18_VERSION}" \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first (this layer is reused while requirements.txt is unchanged), exactly the
# file the Functions host installs on a code deployment.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The app itself; .dockerignore keeps out what .funcignore keeps out of a code deployment.
COPY . /home/site/wwwroot
