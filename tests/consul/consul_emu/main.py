"""Command line entry point: parse flags, start the emulator, print the listening line."""

import argparse
import os
import signal
import socket
import sys
import threading
import uuid

from .durations import DurationError, parse_duration, to_seconds


def _duration_seconds(text):
    try:
        return to_seconds(parse_duration(text))
    except DurationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="emulator", description="Consul agent emulator for sluice's tests.")
    parser.add_argument("--port", type=int, default=8500, help="HTTP port, 0 picks a free one")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--advertise", default=None,
                        help="node address (default: --bind, or 127.0.0.1 for a wildcard)")
    parser.add_argument("--unix", default=None, help="also serve HTTP on this Unix socket")
    parser.add_argument("--node", default=socket.gethostname() or "consul-emu",
                        help="this agent's node name (default: host name)")
    parser.add_argument("--node-id", default=str(uuid.uuid4()), help="this agent's node ID")
    parser.add_argument("--datacenter", default="dc1", help="local datacenter")
    parser.add_argument("--extra-datacenter", action="append", default=[],
                        help="another reachable datacenter (repeatable)")
    parser.add_argument("--acl-default-policy", choices=("allow", "deny"), default=None,
                        help="enable ACLs with this default policy")
    parser.add_argument("--acl-master-token", "--acl-initial-management-token",
                        dest="acl_master_token", default=None,
                        help="token with global-management rights")
    parser.add_argument("--fast-checks", action="store_true",
                        default=os.environ.get("CONSUL_EMU_FAST_CHECKS") == "1",
                        help="run each check immediately on registration and allow "
                             "intervals below 1s (also CONSUL_EMU_FAST_CHECKS=1)")
    parser.add_argument("--min-check-interval", type=_duration_seconds, default=None,
                        help="floor for check intervals (default 1s, 10ms with --fast-checks)")
    parser.add_argument("--deregister-min", type=_duration_seconds, default=60.0,
                        help="floor for DeregisterCriticalServiceAfter (default 1m)")
    parser.add_argument("--reap-interval", type=_duration_seconds, default=30.0,
                        help="how often the critical-service reaper runs (default 30s)")
    parser.add_argument("--request-log-size", type=int, default=5000,
                        help="requests kept for GET /_emu/requests")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument("--tls-cert", default=None,
                        help="serve HTTPS on the TCP port with this certificate (PEM)")
    parser.add_argument("--tls-key", default=None, help="private key of --tls-cert (PEM)")
    parser.add_argument("--tls-client-ca", default=None,
                        help="require client certificates signed by this CA (PEM)")
    args = parser.parse_args(argv)
    if args.advertise is None:
        args.advertise = "127.0.0.1" if args.bind in ("0.0.0.0", "::", "") else args.bind
    if args.min_check_interval is None:
        args.min_check_interval = 0.01 if args.fast_checks else 1.0
    if args.reap_interval <= 0:
        parser.error("--reap-interval must be positive")
    if args.request_log_size < 1:
        parser.error("--request-log-size must be at least 1")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert")
    return args


def main(argv=None):
    from .app import App  # imported late so --help works even if a module is broken

    args = parse_args(sys.argv[1:] if argv is None else argv)
    app = App(args)
    try:
        port = app.start()
    except OSError as err:
        print("emulator: cannot listen on %s:%d: %s" % (args.bind, args.port, err),
              file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    host = "[%s]" % args.bind if ":" in args.bind else args.bind
    print("listening %s:%d" % (host, port), flush=True)
    while not stop.wait(0.5):
        pass
    app.shutdown()
    return 0
