"""Helpers that several twin tests share: SDK error capture and polling, block reads and writes in disk images, and
snapshots taken under a running writer."""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException

from twin.aws.testing import wait_for as wait_until


def api_error(call, *args, **kwargs):
    """The Alibaba SDK error that ``call(*args, **kwargs)`` raises; the test fails when it raises none."""
    with pytest.raises((ClientException, ServerException)) as info:
        call(*args, **kwargs)
    return info.value


def wait_for(predicate, limit=20.0):
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def write_block(path, text):
    """Write ``text`` at 4 KiB into the image, where a test can read it back from a snapshot or a restored disk."""
    with open(path, "r+b") as handle:
        handle.seek(4096)
        handle.write(text.encode().ljust(32, b"\0"))


def read_block(path):
    with open(path, "rb") as handle:
        handle.seek(4096)
        return handle.read(32).rstrip(b"\0").decode()


def disk_images(directory, text):
    """A sparse 4 MiB system and data image in ``directory``, each holding "<name>: <text>" (see write_block)."""
    paths = []
    for name in ("sys", "data"):
        path = directory / f"{name}.img"
        with open(path, "wb") as handle:
            handle.truncate(4 * 1024 * 1024)
        write_block(path, f"{name}: {text}")
        paths.append(str(path))
    return paths


def pattern(generation, region):
    """The bytes a running writer puts in the first ``region`` bytes of an image for one generation."""
    return struct.pack("<Q", generation) * (region // 8)


def snapshots_under_writer(image, take, count, region):
    """Take ``count`` snapshots with ``take()`` while a thread rewrites the first ``region`` bytes of ``image``, one
    generation per write; each result is (snapshot, generation done before the call, generation started after it)."""
    state = {"done": 0, "started": 0, "stop": False}
    lock = threading.Lock()

    def writer():
        fd = os.open(image, os.O_RDWR)
        try:
            generation = 0
            while not state["stop"]:
                generation += 1
                with lock:
                    state["started"] = generation
                os.pwrite(fd, pattern(generation, region), 0)
                with lock:
                    state["done"] = generation
        finally:
            os.close(fd)

    thread = threading.Thread(target=writer)
    thread.start()
    results = []
    try:
        while len(results) < count:
            # let the writer make progress between snapshots, so they see different states
            previous = results[-1][1] if results else 0
            wait_until(lambda: state["done"] > previous, what="the writer")
            with lock:
                done_before = state["done"]
            snap = take()
            with lock:
                started_after = state["started"]
            results.append((snap, done_before, started_after))
    finally:
        state["stop"] = True
        thread.join()
    return results
