"""ModelStore on Azurite: rollback along the history, orphaned versions, the retrain lease."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from shared.storage import blob as blob_module
from shared.storage.blob import LockHeld, ModelStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(azurite):
    container = ContainerClient.from_connection_string(azurite.connection_string, f"models-{uuid.uuid4().hex[:10]}")
    store = ModelStore(container)
    store.ensure_container()
    return store


def publish(store: ModelStore, version: str) -> str:
    store.publish(version, b"model bytes", {"version": version})
    return version


# --- rollback -------------------------------------------------------------------------------------

def test_rollback_goes_back_along_the_history_and_a_later_promotion_still_works(store):
    a, b, c, d = (publish(store, v) for v in ("v1-a", "v2-b", "v3-c", "v4-d"))
    for version in (a, b, c):
        store.promote(version)
    assert store.rollback() == b and store.current_version() == b
    assert store.rollback() == a and store.current_version() == a  # not back to c
    with pytest.raises(ValueError, match="no earlier promoted version"):
        store.rollback()
    assert store.current_version() == a
    pointer = store.read_pointer()
    assert [r["version"] for r in pointer["rolled_back"]] == [b, c]  # newest first
    assert pointer["reason"] == f"rollback from {b}"
    # A normal promotion afterwards: the current one goes on the history, rolled-back ones do not return.
    store.promote(d)
    assert store.read_pointer()["history"] == [a]
    assert store.rollback() == a


def test_promoting_a_rolled_back_version_again_is_an_ordinary_promotion(store):
    a, b = publish(store, "v1-a"), publish(store, "v2-b")
    store.promote(a)
    store.promote(b)
    assert store.rollback() == a
    store.promote(b, reason="fixed")
    pointer = store.read_pointer()
    assert pointer["version"] == b and pointer["history"] == [a]
    assert b not in [r["version"] for r in pointer["rolled_back"]]


def test_rollback_refuses_a_history_entry_whose_version_is_gone(store):
    a, b = publish(store, "v1-a"), publish(store, "v2-b")
    store.promote(a)
    store.promote(b)
    store.container.delete_blob("versions/v1-a/metadata.json")
    with pytest.raises(Exception):  # noqa: B017 - whatever the store raises, nothing may change
        store.rollback()
    assert store.current_version() == b


# --- orphans: a retrain killed mid-publish --------------------------------------------------------

def killed_mid_publish(store: ModelStore, version: str) -> None:
    """What a retrain killed between uploading files and uploading metadata.json leaves."""
    prefix = f"versions/{version}/"
    store.container.upload_blob(prefix + "report/index.html", b"<html/>")
    store.container.upload_blob(prefix + "model.onnx", b"onnx")
    store.container.upload_blob(prefix + "model.joblib", b"joblib")


def test_incomplete_versions_are_found_and_deleted_but_never_a_served_one(store):
    complete = [publish(store, v) for v in ("v1-a", "v2-b", "v3-c")]
    store.promote(complete[0])
    store.promote(complete[1])  # history: [v1-a]
    killed_mid_publish(store, "v9-orphan")
    assert store.incomplete_versions(older_than=timedelta(0)) == ["v9-orphan"]
    # Younger than the age asked for: could be a publish in flight, left alone.
    assert store.incomplete_versions(older_than=timedelta(hours=1)) == []
    assert store.list_versions() == [{"version": v} for v in complete]

    assert store.delete_version("v9-orphan") == 3
    assert store.incomplete_versions(older_than=timedelta(0)) == []
    assert store.list_files("v9-orphan") == []

    for protected in complete[:2]:  # the promoted one and one in the pointer's history
        with pytest.raises(ValueError, match="promoted|history"):
            store.delete_version(protected)
        assert store.metadata(protected)["version"] == protected
    assert store.delete_version(complete[2]) == 2  # never promoted: may go
    assert [m["version"] for m in store.list_versions()] == complete[:2]
    with pytest.raises(ValueError):
        store.delete_version("../x")


# --- the retrain lease --------------------------------------------------------------------------

SHORTEST_LEASE_SECONDS = 15  # what Blob Storage allows for a finite lease (15-60 s)


def test_lease_is_the_shortest_and_renewed_well_within_it():
    assert blob_module.LEASE_SECONDS == SHORTEST_LEASE_SECONDS
    assert blob_module.LEASE_RENEW_SECONDS <= 5


@pytest.mark.slow
def test_a_held_lease_outlives_its_duration_and_a_killed_holder_frees_it_within_it(store, azurite):
    other = ModelStore(ContainerClient.from_connection_string(azurite.connection_string,
                                                              store.container.container_name))
    with store.exclusive():
        time.sleep(SHORTEST_LEASE_SECONDS + 2)  # renewed meanwhile
        with pytest.raises(LockHeld):
            with other.exclusive():
                pass

    # A holder killed without releasing (SIGKILL: no finally runs).
    code = ("import sys, time\n"
            "from azure.storage.blob import ContainerClient\n"
            "from shared.storage.blob import ModelStore\n"
            f"store = ModelStore(ContainerClient.from_connection_string({azurite.connection_string!r}, "
            f"{store.container.container_name!r}))\n"
            "held = store.exclusive()\n"
            "held.__enter__()  # kept referenced: a collected generator would release it\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        while True:
            try:
                with other.exclusive():
                    break
            except LockHeld:
                assert time.monotonic() - killed < SHORTEST_LEASE_SECONDS + 3, "the lease outlived its holder"
                time.sleep(0.5)
        print(f"lease free {time.monotonic() - killed:.1f} s after its holder was killed")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
