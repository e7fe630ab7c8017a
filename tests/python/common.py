"""Shared plumbing of the scripts that drive the official RocketMQ Python
client (PyPI rocketmq-python-client, unmodified) against Meridian.

Every script prints exactly one JSON object on stdout: {"ok": true, ...} on
success, or {"ok": false, "error": "..."} before exiting non-zero. Progress and
tracebacks go to stderr. The Rust integration tests (python_client.rs) run the
scripts and assert on that JSON.

The client logs to ~/logs/rocketmq_python/rocketmq_client.log through the
logger "rocketmq-python-client". [ClientLog] also records what it logs at
WARNING and above during a run, so scripts can report the ERROR lines (a clean
run, shutdown included, has none).

Every parser argument_parser() builds takes --access-key/--secret-key: when
both are given, client_configuration() gives the client Credentials(ak, sk),
with which it signs every request (the `authorization` header,
MQv2-HMAC-SHA1). Without them the client is configured as before, with empty
Credentials().

A failure's "error" names the exception with the status code and message as
the client reports them ("UnauthorizedException: 40100, <message> (code
UNAUTHORIZED)"), followed by the WARNING and ERROR lines the client logged
during the run: the client does not raise some refusals (a route query
refused at startup is only logged, at ERROR; a telemetry stream the server
ends with a gRPC error, at WARNING), so those lines are where the server's
status is.
"""

import argparse
import hashlib
import json
import logging
import os
import sys
import threading
import time
import traceback

# Importing the client configures its logging (file handler, level INFO).
import rocketmq  # noqa: F401  pylint: disable=unused-import
from rocketmq.grpc_protocol import Code, MessageType

CLIENT_LOGGER = "rocketmq-python-client"
# Bodies up to this size are echoed in full (hex) in the JSON output.
ECHO_BODY_LIMIT = 64 * 1024
# How many of the client's WARNING and ERROR lines (distinct, each cut to
# CLIENT_LOG_LINE_LIMIT characters) a failure's "error" text quotes; all of
# them are in "client_log".
CLIENT_LOG_LINES_IN_ERROR = 10
CLIENT_LOG_LINE_LIMIT = 500

# (access key, secret key) from the last command line an argument_parser()
# parser parsed, or None: what client_configuration() signs with when the
# script does not pass its arguments.
_parsed_credentials = None


class ClientLog(logging.Handler):
    """Collects the client's WARNING+ records of this process."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records = []
        self._lock = threading.Lock()
        logging.getLogger(CLIENT_LOGGER).addHandler(self)

    def emit(self, record):
        line = f"{record.levelname} {record.getMessage()}"
        with self._lock:
            self.records.append((record.levelno, line))

    def lines(self, minimum):
        with self._lock:
            return [line for level, line in self.records if level >= minimum]

    def summary(self):
        return {
            "errors": self.lines(logging.ERROR),
            "warnings": [
                line
                for line in self.lines(logging.WARNING)
                if not line.startswith(("ERROR", "CRITICAL"))
            ],
        }


class _ArgumentParser(argparse.ArgumentParser):
    """Checks that --access-key and --secret-key come together and records
    them for client_configuration()."""

    def parse_known_args(self, args=None, namespace=None):
        global _parsed_credentials  # pylint: disable=global-statement
        namespace, extras = super().parse_known_args(args, namespace)
        try:
            _parsed_credentials = credentials_of(namespace)
        except ValueError as error:
            self.error(str(error))
        return namespace, extras


def argument_parser(description, credentials=True):
    """The scripts' parser: --deadline, and (unless `credentials` is False,
    for scripts with credentials of their own) --access-key/--secret-key and
    --tls."""
    parser = _ArgumentParser(description=description)
    parser.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="seconds after which the script gives up and exits non-zero",
    )
    if not credentials:
        return parser
    parser.add_argument(
        "--access-key",
        metavar="AK",
        help="access key the gRPC client signs its requests with "
        "(with --secret-key); without both, it sends empty credentials as before",
    )
    parser.add_argument(
        "--secret-key",
        metavar="SK",
        help="secret key of --access-key",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS (tls_enable=True), trusting gRPC's default roots "
        "or the file GRPC_DEFAULT_SSL_ROOTS_FILE_PATH names",
    )
    return parser


def credentials_of(arguments):
    """(access key, secret key) from parsed --access-key/--secret-key, or None
    when neither was given; ValueError when only one was."""
    access_key = getattr(arguments, "access_key", None)
    secret_key = getattr(arguments, "secret_key", None)
    if access_key is None and secret_key is None:
        return None
    if access_key is None or secret_key is None:
        raise ValueError("--access-key and --secret-key must be given together")
    return access_key, secret_key


def colliding_message_id(index):
    """The message id a producer on a host whose MAC, pid (1, as in a
    container) and clock second coincide with another's generates for its
    index-th message (RocketMQ's id layout: version 01, 6 bytes MAC, 2 bytes
    pid, 4 bytes seconds since 2021, 4 bytes sequence). Two producers given
    these ids send colliding ids, as in issue 6's containers."""
    return "01" + "0A0000000001" + "0001" + "05000000" + f"{index:08X}"


def make_message_ids_collide():
    """Makes this process's official client generate colliding_message_id(0),
    (1), … instead of ids from its own MAC, pid and clock: replaces
    MessageIdCodec.next_message_id, the one place the client makes ids
    (rocketmq/v5/util/message_id_codec.py; Producer calls it per send)."""
    from rocketmq.v5.util.message_id_codec import MessageIdCodec

    counter = iter(range(2**32))
    MessageIdCodec.next_message_id = lambda self: colliding_message_id(next(counter))


def endpoints_argument(value):
    """`host:port[;host:port…]`, the client's own endpoint-list syntax."""
    parts = [part for part in value.split(";") if part]
    if not parts or any(":" not in part for part in parts):
        raise argparse.ArgumentTypeError(f"not host:port[;host:port…]: {value!r}")
    return ";".join(parts)


def property_argument(value):
    key, separator, property_value = value.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"not KEY=VALUE: {value!r}")
    return key, property_value


def client_configuration(endpoints, arguments=None):
    """The client's configuration for `endpoints`, with Credentials(ak, sk)
    from --access-key/--secret-key of `arguments` (by default, of the command
    line an argument_parser() parser parsed) when given, else with empty
    Credentials() (the client then still sends an `authorization` header, with
    an empty Credential and a signature keyed with the empty secret)."""
    from rocketmq import ClientConfiguration, Credentials

    keys = _parsed_credentials if arguments is None else credentials_of(arguments)
    if keys is None:
        return ClientConfiguration(endpoints, Credentials())
    access_key, secret_key = keys
    return ClientConfiguration(endpoints, Credentials(access_key, secret_key))


def describe_error(error):
    """An exception as "Type: text", with the status code's name when the
    client's exception carries one (its str is already "<code>, <message>")."""
    text = f"{type(error).__name__}: {error}"
    code = getattr(error, "code", None)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        try:
            text += f" (code {Code.Name(code)})"
        except ValueError:
            text += f" (code {code})"
    return text


def with_client_errors(text, log):
    """`text` followed by the WARNING and ERROR lines the client logged, in
    order, if any: the client only logs some refusals (a route query refused
    at startup at ERROR, a telemetry stream the server ends with a gRPC error
    at WARNING)."""
    lines = []
    for line in log.lines(logging.WARNING):
        line = " ".join(line.split())
        if len(line) > CLIENT_LOG_LINE_LIMIT:
            line = line[: CLIENT_LOG_LINE_LIMIT - 1] + "…"
        if line not in lines:
            lines.append(line)
    if not lines:
        return text
    quoted = lines[:CLIENT_LOG_LINES_IN_ERROR]
    if len(lines) > len(quoted):
        quoted.append(f"… {len(lines) - len(quoted)} more in client_log")
    return f"{text}; the client logged: " + " | ".join(quoted)


def describe_body(body):
    described = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    if len(body) <= ECHO_BODY_LIMIT:
        described["body_hex"] = body.hex()
    return described


def describe_message(message):
    """A received message as JSON: everything the cross-language tests compare."""
    described = {
        "message_id": message.message_id,
        "topic": message.topic,
        "tag": message.tag,
        "keys": sorted(message.keys),
        "properties": dict(message.properties),
        "message_type": MessageType.Name(message.message_type),
        "message_group": message.message_group,
        "delivery_attempt": message.delivery_attempt,
        "corrupted": message.corrupted,
        "born_host": message.born_host,
        "born_timestamp": message.born_timestamp,
        "has_receipt_handle": bool(message.receipt_handle),
    }
    described.update(describe_body(message.body))
    return described


def elapsed_ms(start):
    return round((time.monotonic() - start) * 1000)


class Failure(Exception):
    """A check failed: the message is the reason, `details` goes into the JSON."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.details = details


def emit(result):
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def run(main, args):
    """Runs main(args, log) -> dict and prints the JSON verdict.

    Exits 0 on success, 1 on a failed check or exception, 2 when --deadline
    passed (a hung client call).
    """
    log = ClientLog()

    def give_up():
        emit(
            {
                "ok": False,
                "error": with_client_errors(
                    f"no result within the {args.deadline} s deadline", log
                ),
                "client_log": log.summary(),
            }
        )
        sys.stderr.write(f"{sys.argv[0]}: deadline of {args.deadline} s passed\n")
        sys.stderr.flush()
        os._exit(2)

    watchdog = threading.Timer(args.deadline, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        result = main(args, log)
    except Failure as failure:
        watchdog.cancel()
        emit(
            {
                "ok": False,
                "error": with_client_errors(str(failure), log),
                "client_log": log.summary(),
                **failure.details,
            }
        )
        sys.stderr.write(f"{sys.argv[0]}: {failure}\n")
        sys.exit(1)
    except Exception as error:  # pylint: disable=broad-except
        watchdog.cancel()
        traceback.print_exc()
        emit(
            {
                "ok": False,
                "error": with_client_errors(describe_error(error), log),
                "client_log": log.summary(),
            }
        )
        sys.exit(1)
    watchdog.cancel()
    result["ok"] = True
    result["client_log"] = log.summary()
    emit(result)
    sys.exit(0)
