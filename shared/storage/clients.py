"""Azure Storage clients from settings: a connection string, or identity-based
(``AzureWebJobsStorage__accountName`` / ``__blobServiceUri`` / ``__queueServiceUri``)
through ``DefaultAzureCredential`` — the same setting names the Functions host uses.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import BinaryBase64DecodePolicy, QueueClient, QueueServiceClient, TextBase64EncodePolicy

from ..config import Settings

# The Functions worker forwards INFO logs to Application Insights; the SDK's HTTP logging
# policy would log every queue and blob request (headers included) at INFO.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


# What the storage SDKs use when they build the transport themselves (and are given no timeouts).
_SDK_CONNECTION_TIMEOUT = 20
_SDK_READ_TIMEOUT = 60


def _transport_options(options: dict[str, Any]) -> dict[str, Any]:
    """Honour proxy variables only when one is set: otherwise ``requests`` re-scans the
    whole environment on every call, which costs predict ~0.7 ms per transaction.

    A transport handed to the SDK ready-made ignores the client's ``connection_timeout``/
    ``read_timeout`` (the SDK passes them only to a transport it builds itself), so it is
    built here with them: without, every call could wait 300 s for a silent endpoint.
    """
    if "transport" in options or any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return {}
    from azure.core.pipeline.transport import RequestsTransport

    return {"transport": RequestsTransport(
        use_env_settings=False,
        connection_timeout=options.get("connection_timeout", _SDK_CONNECTION_TIMEOUT),
        read_timeout=options.get("read_timeout", _SDK_READ_TIMEOUT),
    )}


def fail_fast_retry(kind: str, backoff_seconds: float, retries: int = 2) -> Any:
    """A linear retry policy with sub-second backoff (the SDK types ``backoff`` as int; it
    sleeps floats alike). ``kind``: "blob" or "queue"."""
    from azure.storage.blob import LinearRetry as BlobRetry
    from azure.storage.queue import LinearRetry as QueueRetry

    policy = BlobRetry if kind == "blob" else QueueRetry
    return policy(backoff=backoff_seconds, random_jitter_range=0, retry_total=retries)  # type: ignore[arg-type]


def _credential() -> Any:
    from azure.identity import DefaultAzureCredential  # only identity-based deployments need it

    return DefaultAzureCredential()


def _service_uri(settings: Settings, explicit: str, kind: str) -> str:
    if explicit:
        return explicit
    if settings.storage_account_name:
        return f"https://{settings.storage_account_name}.{kind}.core.windows.net"
    raise ValueError(f"no storage configured for {kind}: set AzureWebJobsStorage or AzureWebJobsStorage__accountName")


def blob_service(settings: Settings, **options: Any) -> BlobServiceClient:
    options = {**_transport_options(options), **options}
    if settings.storage_connection:
        return BlobServiceClient.from_connection_string(settings.storage_connection, **options)
    return BlobServiceClient(_service_uri(settings, settings.blob_service_uri, "blob"), credential=_credential(),
                             **options)


def model_container(settings: Settings) -> ContainerClient:
    """The model container. A model refresh happens inside a predict call, so the client
    fails fast (the cached model keeps serving) instead of the SDK's default retries,
    which held a request for about 85 s against an unreachable endpoint.

    3 attempts, each waiting at most 2 s to connect and 5 s between bytes of the answer:
    a silent endpoint fails within 3 × 5 + 2 × 0.2 = 15.4 s (one that also hangs on connect:
    3 × (2 + 5) + 0.4 = 21.4 s); a refused one at once. See docs/reliability.md.
    """
    return blob_service(settings, retry_policy=fail_fast_retry("blob", 0.2),
                        connection_timeout=2, read_timeout=5).get_container_client(settings.model_container)


def queue_service(settings: Settings, **options: Any) -> QueueServiceClient:
    options = {**_transport_options(options), **options}
    if settings.storage_connection:
        return QueueServiceClient.from_connection_string(settings.storage_connection, **options)
    return QueueServiceClient(_service_uri(settings, settings.queue_service_uri, "queue"), credential=_credential(),
                              **options)


def queue_client(settings: Settings, queue_name: str, **options: Any) -> QueueClient:
    """A queue client whose messages are base64 text: the Functions queue trigger's default
    ``messageEncoding`` (host.json ``extensions.queues``), so the real host reads them."""
    options.setdefault("message_encode_policy", TextBase64EncodePolicy())
    options.setdefault("message_decode_policy", BinaryBase64DecodePolicy())
    options = {**_transport_options(options), **options}
    if settings.storage_connection:
        return QueueClient.from_connection_string(settings.storage_connection, queue_name, **options)
    return QueueClient(_service_uri(settings, settings.queue_service_uri, "queue"), queue_name,
                       credential=_credential(), **options)
