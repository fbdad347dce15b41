"""Fixtures that several twin tests share: Alibaba twins started on demand and stopped after the test."""

import pytest

from twin.alicloud import server


@pytest.fixture
def start_twin():
    """A factory: ``start_twin(doc, **kwargs)`` starts an Alibaba twin for the fleet ``doc``; all are stopped after the test."""
    handles = []

    def factory(doc, **kwargs):
        handle = server.start(doc, **kwargs)
        handles.append(handle)
        return handle

    yield factory
    for handle in handles:
        handle.stop()
