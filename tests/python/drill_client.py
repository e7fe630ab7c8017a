"""Drill client: an official Python Producer or SimpleConsumer that runs until
told to stop, printing one JSON event per line, for `meridian drill run`.

    drill_client.py --role producer|consumer --endpoints HOST:PORT --topic T
        [--group drill] [--tag drill] [--interval-ms 100] [--invisible-ms 10000]
        [--batch 16] [--await-ms 2000]

Events on stdout, each flushed on its own line (nothing else goes to stdout;
the client logs to ~/logs/rocketmq_python/rocketmq_client.log):
  {"event": "ready", "client_id"}            started (producer) / subscribed
  {"event": "sent", "message_id"}            producer, per send answered OK
  {"event": "send_failed", "error"}          producer; the loop goes on
  {"event": "received", "message_id"}        consumer, per message, then its ack:
  {"event": "acked", "message_id"}  or  {"event": "ack_failed", "message_id", "error"}
  {"event": "receive_failed", "error"}       consumer; retried after 100 ms
  {"event": "stopped"}                       after a clean shutdown, exit 0
  {"event": "failed", "error"}               the client could not start, exit 1
                                             (bad arguments: exit 2)
Every event carries "at_ms", milliseconds since the script started.

It stops at end of file on stdin (the drill runner closes it), SIGTERM or
SIGINT. A call in flight then is abandoned (its outcome is not reported), so
stopping never waits for a long poll. The producer sends `drill <n>` once per
--interval-ms (without catching up after a slow send).

From the environment (what `meridian drill run` sets for a deployment with
[access] or [client_tls]): DRILL_ACCESS_KEY and DRILL_SECRET_KEY, the access
key every request is signed with; DRILL_TLS=1, connect with TLS (the client's
`tls_enable`), trusting the CA certificates grpc reads from
GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (the runner sets it to the deployment's CA).

The client takes whole seconds for the invisible and long-polling durations,
so --invisible-ms and --await-ms are rounded up to seconds. Its startup()
does not fail when the route query does (it only logs that): with a wrong
address or topic the script reports ready, then every send or receive fails
("failed to fetch topic:… route") until the router answers.
"""

import argparse
import json
import math
import os
import signal
import sys
import threading
import time

import common
from rocketmq import (
    ClientConfiguration,
    Credentials,
    FilterExpression,
    Message,
    Producer,
    SimpleConsumer,
)

STARTED = time.monotonic()
# Pause after a failed receive: short, because the drill measures recovery in ms.
RECEIVE_RETRY_PAUSE_S = 0.1
# Per-call timeout, in whole seconds (the client's default is 3). The client
# makes up to 3 attempts per send, one right after the other, so with the
# default a send to a node that hangs (stopped, or cut off by a partition)
# fails only after 9 s; with 1 s, after about 3 s. A receive's deadline is
# this plus the long-polling time.
REQUEST_TIMEOUT_S = 1


def emit(event, **fields):
    fields = {"event": event, **fields, "at_ms": common.elapsed_ms(STARTED)}
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def error_text(error):
    return f"{type(error).__name__}: {error}"


def positive_int(value):
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {value!r}")
    return number


class ArgumentParser(argparse.ArgumentParser):
    """Reports bad arguments as a `failed` event too (then exits 2)."""

    def error(self, message):
        emit("failed", error=f"bad arguments: {message}")
        super().error(message)


def parse_arguments():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", required=True, choices=("producer", "consumer"))
    parser.add_argument("--endpoints", required=True, type=common.endpoints_argument)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default="drill")
    parser.add_argument("--tag", default="drill")
    parser.add_argument("--interval-ms", type=positive_int, default=100)
    parser.add_argument("--invisible-ms", type=positive_int, default=10000)
    parser.add_argument("--batch", type=positive_int, default=16)
    parser.add_argument("--await-ms", type=positive_int, default=2000)
    return parser.parse_args()


class Stop:
    """Set once by stdin's end of file, SIGTERM or SIGINT. `wakeup` is also
    set by every completed call, so the main thread can wait for "the call is
    done or we are stopping" on one event."""

    def __init__(self):
        self.requested = threading.Event()
        self.wakeup = threading.Event()

    def request(self):
        self.requested.set()
        self.wakeup.set()

    def watch(self):
        """Starts the threads that wait for the signals and for stdin's end.
        Call before any other thread starts: the signals are blocked in every
        thread and taken by sigwait, so no handler ever runs inside a lock
        the main thread holds."""
        signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)

        def wait_for_signal():
            signal.sigwait(signals)
            self.request()

        threading.Thread(target=wait_for_signal, name="signals", daemon=True).start()

        def read_stdin_to_end():
            # os.read, not sys.stdin: a daemon thread blocked inside the
            # buffered reader's lock aborts the interpreter's exit.
            try:
                while os.read(sys.stdin.fileno(), 65536):
                    pass
            except OSError:
                pass
            self.request()

        threading.Thread(target=read_stdin_to_end, name="stdin-eof", daemon=True).start()

    def result(self, future):
        """The future's result, or None when stop came first (the call is
        abandoned). Raises what the future raised."""
        future.add_done_callback(lambda _: self.wakeup.set())
        while True:
            if future.done():
                return future.result()
            if self.requested.is_set():
                return None
            self.wakeup.wait()
            self.wakeup.clear()

    def sleep(self, seconds):
        """Sleeps, or returns early (True) when stop is requested."""
        return self.requested.wait(seconds)


def produce(arguments, producer, stop):
    next_send = time.monotonic()
    index = 0
    while not stop.requested.is_set():
        message = Message()
        message.topic = arguments.topic
        message.tag = arguments.tag
        message.body = f"drill {index}".encode()
        index += 1
        try:
            receipt = stop.result(producer.send_async(message))
        except Exception as error:  # pylint: disable=broad-except
            emit("send_failed", error=error_text(error))
        else:
            if receipt is None:
                break
            emit("sent", message_id=receipt.message_id)
        next_send = max(next_send + arguments.interval_ms / 1000, time.monotonic())
        stop.sleep(next_send - time.monotonic())


def consume(arguments, consumer, stop):
    invisible_s = math.ceil(arguments.invisible_ms / 1000)
    while not stop.requested.is_set():
        try:
            messages = stop.result(consumer.receive_async(arguments.batch, invisible_s))
        except Exception as error:  # pylint: disable=broad-except
            emit("receive_failed", error=error_text(error))
            stop.sleep(RECEIVE_RETRY_PAUSE_S)
            continue
        for message in messages or ():
            emit("received", message_id=message.message_id)
        # Acks are short calls: the batch is acked even when stop came meanwhile.
        for message in messages or ():
            try:
                consumer.ack(message)
            except Exception as error:  # pylint: disable=broad-except
                emit("ack_failed", message_id=message.message_id, error=error_text(error))
            else:
                emit("acked", message_id=message.message_id)


def from_environment():
    """(Credentials, tls) from DRILL_ACCESS_KEY, DRILL_SECRET_KEY and DRILL_TLS;
    exits 2 with a `failed` event when they make no sense."""
    access_key = os.environ.get("DRILL_ACCESS_KEY")
    secret_key = os.environ.get("DRILL_SECRET_KEY")
    tls = os.environ.get("DRILL_TLS", "0")
    problem = None
    if (access_key is None) != (secret_key is None):
        problem = "DRILL_ACCESS_KEY and DRILL_SECRET_KEY must be set together"
    elif tls not in ("0", "1"):
        problem = f"DRILL_TLS must be 1 or 0, not {tls!r}"
    if problem:
        emit("failed", error=f"bad arguments: {problem}")
        sys.exit(2)
    if tls == "1" and "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH" not in os.environ:
        sys.stderr.write(
            "DRILL_TLS=1 without GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: trusting grpc's bundled roots\n"
        )
    credentials = Credentials() if access_key is None else Credentials(access_key, secret_key)
    return credentials, tls == "1"


def main():
    arguments = parse_arguments()
    credentials, tls = from_environment()
    stop = Stop()
    stop.watch()
    configuration = ClientConfiguration(
        arguments.endpoints, credentials, request_timeout=REQUEST_TIMEOUT_S
    )
    try:
        if arguments.role == "producer":
            client = Producer(configuration, (arguments.topic,), tls_enable=tls)
        else:
            client = SimpleConsumer(
                configuration,
                arguments.group,
                {arguments.topic: FilterExpression(arguments.tag)},
                math.ceil(arguments.await_ms / 1000),
                tls_enable=tls,
            )
        client.startup()
    except Exception as error:  # pylint: disable=broad-except
        emit("failed", error=f"start the {arguments.role}: {error_text(error)}")
        sys.exit(1)
    emit("ready", client_id=client.client_id)
    try:
        if arguments.role == "producer":
            produce(arguments, client, stop)
        else:
            consume(arguments, client, stop)
    finally:
        try:
            client.shutdown()
        except Exception as error:  # pylint: disable=broad-except
            sys.stderr.write(f"shut the {arguments.role} down: {error_text(error)}\n")
    emit("stopped")


if __name__ == "__main__":
    main()
