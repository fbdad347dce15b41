"""``python -m twin`` (``make twin``): both twin clouds in the foreground on loopback.

Options (``--help``) default to the environment: ``TWIN_FLEET`` (fleet file, default the demo fleet),
``TWIN_AWS_PORT`` (18080), ``TWIN_ALICLOUD_PORT`` (18081), ``TWIN_HOST`` (127.0.0.1), ``TWIN_BLOCKSTORE``
(directory for real block data, default ``build/twin/blocks``), ``TWIN_ENDPOINTS`` (default
``build/twin/endpoints.json``), ``TWIN_LATENCY`` (zero or realistic), ``TWIN_LIMITS`` (none, published or a
JSON mapping of per-API buckets).  Relative paths are taken from the
current directory when they exist there, else from the repository root.  Stop with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from twin.launcher import start_twins

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))


def _path(value: str) -> str:
    """Relative paths: from the current directory if the file is there, else from the repository root."""
    if os.path.isabs(value) or os.path.exists(value):
        return os.path.abspath(value)
    return os.path.join(REPO_ROOT, value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m twin", description="Run the twin clouds in the foreground.")
    parser.add_argument("--fleet", default=os.environ.get("TWIN_FLEET") or os.path.join(HERE, "fleets", "demo.yml"),
                        help="fleet file: the instances, their volumes (and where those are mounted), the credentials "
                             "the twins accept (env TWIN_FLEET; default: the demo fleet, fleets/demo.yml)")
    parser.add_argument("--host", default=os.environ.get("TWIN_HOST", "127.0.0.1"),
                        help="address both twins listen on (env TWIN_HOST; default: %(default)s)")
    parser.add_argument("--aws-port", type=int, default=int(os.environ.get("TWIN_AWS_PORT", "18080")),
                        help="port of the AWS twin (EC2, SSM, IAM, STS on one endpoint; env TWIN_AWS_PORT; "
                             "0 picks a free one; default: %(default)s)")
    parser.add_argument("--alicloud-port", type=int, default=int(os.environ.get("TWIN_ALICLOUD_PORT", "18081")),
                        help="port of the Alibaba Cloud twin (ECS and Cloud Assistant; env TWIN_ALICLOUD_PORT; "
                             "0 picks a free one; default: %(default)s)")
    parser.add_argument("--endpoints", default=os.environ.get("TWIN_ENDPOINTS", "build/twin/endpoints.json"),
                        help="where to write the endpoints, credentials and instance ids of the running twins as "
                             "JSON, removed on exit (env TWIN_ENDPOINTS; default: %(default)s)")
    parser.add_argument("--blockstore", default=os.environ.get("TWIN_BLOCKSTORE", "build/twin/blocks"),
                        help="directory for the real block data of volumes and snapshots (env TWIN_BLOCKSTORE; "
                             "default: %(default)s)")
    parser.add_argument("--latency", default=os.environ.get("TWIN_LATENCY"),
                        help="per-call latency model: zero or realistic (env TWIN_LATENCY; default: the fleet "
                             "file's setting)")
    parser.add_argument("--limits", default=os.environ.get("TWIN_LIMITS"), type=_limits,
                        help="request limits (env TWIN_LIMITS): none, published or a JSON mapping such as "
                             "'{\"CreateSnapshots\": {\"capacity\": 5, \"refill\": 1}}' "
                             "(default: the fleet file's setting, else published with realistic latency)")
    return parser


def _args(argv):
    return _parser().parse_args(argv)


def _limits(value: str):
    """none / published, or a JSON mapping of per-API buckets."""
    if value in ("none", "published"):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"limits must be none, published or a JSON mapping, got {value!r}") from None


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("twin")
    args = _args(argv)
    fleet_path = _path(args.fleet)
    endpoints_path = _path(args.endpoints)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s: stopping", signum)
        stop.set()

    # before starting, so that a stop request during start-up still releases the block store
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    twins = start_twins(fleet_path, host=args.host, aws_port=args.aws_port, alicloud_port=args.alicloud_port,
                        blockstore=_path(args.blockstore), latency=args.latency, limits=args.limits)
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
        log.info("limits        %s", twins.limits.profile if not twins.limits.overrides else twins.limits.spec)
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
