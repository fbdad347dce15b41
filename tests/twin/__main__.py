"""``python -m twin`` (``make twin``): both twin clouds in the foreground on loopback.

Environment: ``TWIN_FLEET`` (fleet file, default the demo fleet), ``TWIN_AWS_PORT`` (18080),
``TWIN_ALICLOUD_PORT`` (18081), ``TWIN_HOST`` (127.0.0.1), ``TWIN_BLOCKSTORE`` (directory for real
block data, default ``build/twin/blocks``), ``TWIN_ENDPOINTS`` (default ``build/twin/endpoints.json``).
Relative paths are taken from the repository root.  Stop with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from twin.launcher import start_twins

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))


def _path(value: str) -> str:
    return value if os.path.isabs(value) else os.path.join(REPO_ROOT, value)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("twin")
    fleet_path = os.environ.get("TWIN_FLEET") or os.path.join(HERE, "fleets", "demo.yml")
    fleet_path = fleet_path if os.path.isabs(fleet_path) else os.path.abspath(fleet_path)
    host = os.environ.get("TWIN_HOST", "127.0.0.1")
    endpoints_path = _path(os.environ.get("TWIN_ENDPOINTS", "build/twin/endpoints.json"))
    blocks = _path(os.environ.get("TWIN_BLOCKSTORE", "build/twin/blocks"))
    twins = start_twins(fleet_path, host=host, aws_port=int(os.environ.get("TWIN_AWS_PORT", "18080")),
                        alicloud_port=int(os.environ.get("TWIN_ALICLOUD_PORT", "18081")), blockstore=blocks)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        twins.write_endpoints(endpoints_path)
        log.info("fleet %s: %d instances", fleet_path, len(twins.fleet.instances))
        if twins.aws:
            log.info("AWS twin      %s (region %s)", twins.aws.url, twins.aws.region)
        if twins.alicloud:
            log.info("Alibaba twin  %s", twins.endpoints["alicloud"].get("endpoint"))
        else:
            log.warning("Alibaba twin not available; only the AWS twin is running")
        log.info("block store   %s (%s)", twins.blockstore.root, twins.blockstore.method)
        log.info("endpoints     %s", endpoints_path)
        while not stop.wait(1):
            pass
    finally:
        twins.stop()
        if os.path.exists(endpoints_path):
            os.unlink(endpoints_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
