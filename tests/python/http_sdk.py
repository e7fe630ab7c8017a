"""Drives a node's HTTP API with the official Alibaba Cloud MQ HTTP SDK for
Python (PyPI mq-http-sdk 1.0.3, unmodified) and checks what comes back,
then the JSON API under /v1/ with urllib.

Steps (each with its own consumer group, GROUP-<step>, and tags unique to
the run, so earlier runs' messages on the topic never interfere):

1. empty: a consume on a tag nobody uses raises the SDK's MessageNotExist
   (the server's 404 is the SDK's "nothing to consume").
2. tags: three messages with tags A, B and C, message keys and a user
   property; a consumer filtering on `A||B` gets exactly A and B, with
   body, MD5, tag, key and property echoed, and acknowledges them.
3. wrong_handle: acknowledging a handle the server never issued raises
   ReceiptHandleError, with the handle in the SDK's sub-errors.
4. ordered: three messages with one sharding key arrive in publish order
   through consume_message_orderly.
5. timed: a message with __STARTDELIVERTIME a few seconds ahead arrives no
   earlier than that time.
6. transactions: three half messages (__TransCheckT 10 s): one committed,
   one rolled back, one left open. The open one comes back through
   consume_half_message no earlier than 10 s after it was published and is
   committed with that handle; a consumer then gets the two committed
   messages and never the rolled-back one.
7. json: /v1/openapi.json is an OpenAPI 3.1 document; a message published
   with POST /v1/topics/T/messages is received with GET (body, tag, keys,
   properties), acknowledged with POST /v1/topics/T/acks, and a bogus handle
   is reported as not ok.

Output (one JSON object on stdout, see common.py): {"ok", "run",
"steps": {step: details}, "client_log"}; exits 1 on a failed check, 2 when
--deadline passes.

    python http_sdk.py --endpoint http://127.0.0.1:8080 [--topic demo]
"""

import base64
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import common
from mq_http_sdk.mq_client import MQClient
from mq_http_sdk.mq_exception import MQServerException
from mq_http_sdk.mq_producer import TopicMessage


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0], credentials=False)
    parser.add_argument(
        "--endpoint", required=True, help="the node's HTTP address, http://host:port"
    )
    parser.add_argument("--topic", default="demo", help="accepts every message type")
    parser.add_argument(
        "--group", default=None, help="consumer group prefix (default: fresh per run)"
    )
    parser.add_argument(
        "--instance", default="", help="the SDK's instance id (ns); empty: none"
    )
    parser.add_argument(
        "--access-key", default="ak", help="access key id (any non-empty value in development mode)"
    )
    parser.add_argument(
        "--secret-key", default="sk", help="its secret (any non-empty value in development mode)"
    )
    parser.add_argument(
        "--timed-delay", type=float, default=4.0, help="s ahead for the timed message"
    )
    parser.add_argument(
        "--step-timeout", type=float, default=45.0, help="s each step may take to see its messages"
    )
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma-separated steps to run, in this order: {','.join(STEPS)} (default: all)",
    )
    # The check-back alone takes 10 s, and every step waits on long polls.
    parser.set_defaults(deadline=240.0)
    return parser.parse_args()


STEPS = ("empty", "tags", "wrong_handle", "ordered", "timed", "transactions", "json")


def now_ms():
    return int(time.time() * 1000)


def md5_upper(text):
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


def expect_server_error(code, call):
    """Runs call(); it must raise MQServerException of type `code`."""
    try:
        result = call()
    except MQServerException as error:
        if error.type != code:
            raise common.Failure(
                f"expected the SDK's {code}, got {error.type}: {error.message}"
            ) from error
        return error
    raise common.Failure(f"expected the SDK's {code}, got {result!r}")


def consume(consumer, batch=16, wait=3, ordered=False):
    """One consume; [] when the server says MessageNotExist."""
    try:
        if ordered:
            return consumer.consume_message_orderly(batch, wait)
        return consumer.consume_message(batch, wait)
    except MQServerException as error:
        if error.type == "MessageNotExist":
            return []
        raise


def describe(message):
    return {
        "message_id": message.message_id,
        "body": message.message_body,
        "tag": message.message_tag,
        "properties": dict(message.properties),
        "consumed_times": message.consumed_times,
        "publish_time": message.publish_time,
        "first_consume_time": message.first_consume_time,
        "next_consume_time": message.next_consume_time,
    }


def collect(consumer, wanted, timeout, ordered=False, ack=True):
    """Consumes until every id in `wanted` arrived; acks what it gets.
    Returns the messages in arrival order (duplicates included)."""
    seen = []
    deadline = time.monotonic() + timeout
    while not wanted <= {message.message_id for message in seen}:
        if time.monotonic() >= deadline:
            raise common.Failure(
                f"received {sorted(m.message_id for m in seen)}, expected {sorted(wanted)} "
                f"within {timeout} s",
                received=[describe(message) for message in seen],
            )
        batch = consume(consumer, ordered=ordered)
        seen.extend(batch)
        if ack and batch:
            consumer.ack_message([message.receipt_handle for message in batch])
    return seen


def step_empty(client, arguments, run):
    consumer = client.get_consumer(
        arguments.instance, arguments.topic, f"{arguments.group}-empty", f"none-{run}"
    )
    started = time.monotonic()
    error = expect_server_error("MessageNotExist", lambda: consumer.consume_message(1, 1))
    waited = time.monotonic() - started
    if waited < 0.8:
        raise common.Failure(f"a 1 s long poll answered after {waited:.3f} s")
    short = expect_server_error("MessageNotExist", lambda: consumer.consume_message(1))
    return {
        "request_id": error.req_id,
        "long_poll_s": round(waited, 3),
        "short_poll_request_id": short.req_id,
    }


def step_tags(client, arguments, run):
    producer = client.get_producer(arguments.instance, arguments.topic)
    tags = {name: f"{name}-{run}" for name in ("A", "B", "C")}
    sent = {}
    for name, tag in tags.items():
        message = TopicMessage(f"body {name} {run} <&>", tag)
        message.set_message_key(f"key-{name}")
        message.put_property("colour", "blue")
        receipt = producer.publish_message(message)
        if receipt.message_body_md5 != md5_upper(message.message_body):
            raise common.Failure(
                f"publish answered MD5 {receipt.message_body_md5}, expected "
                f"{md5_upper(message.message_body)}"
            )
        sent[name] = {"message_id": receipt.message_id, "body": message.message_body}
    consumer = client.get_consumer(
        arguments.instance,
        arguments.topic,
        f"{arguments.group}-tags",
        f"{tags['A']}||{tags['B']}",
    )
    wanted = {sent["A"]["message_id"], sent["B"]["message_id"]}
    received = collect(consumer, wanted, arguments.step_timeout)
    for message in received:
        name = next(n for n in ("A", "B") if sent[n]["message_id"] == message.message_id)
        checks = {
            "body": (message.message_body, sent[name]["body"]),
            "md5": (message.message_body_md5, md5_upper(sent[name]["body"])),
            "tag": (message.message_tag, tags[name]),
            "key": (message.get_message_key(), f"key-{name}"),
            "colour": (message.get_property("colour"), "blue"),
        }
        for what, (got, expected) in checks.items():
            if got != expected:
                raise common.Failure(
                    f"message {name}: {what} is {got!r}, expected {expected!r}",
                    received=describe(message),
                )
        if message.consumed_times < 1 or message.next_consume_time <= message.publish_time:
            raise common.Failure("implausible delivery times", received=describe(message))
    leftover = consume(consumer, wait=2)
    if leftover:
        raise common.Failure(
            "the A||B filter delivered more", received=[describe(m) for m in leftover]
        )
    return {"sent": sent, "received": [describe(message) for message in received]}


def step_wrong_handle(client, arguments):
    consumer = client.get_consumer(
        arguments.instance, arguments.topic, f"{arguments.group}-tags", ""
    )
    handle = "not-a-handle-of-this-server"
    error = expect_server_error("ReceiptHandleError", lambda: consumer.ack_message([handle]))
    failed = [entry.get("ReceiptHandle") for entry in error.sub_errors or []]
    if failed != [handle]:
        raise common.Failure(f"the sub-errors name {failed}, expected [{handle!r}]")
    return {"message": error.message, "sub_errors": error.sub_errors}


def step_ordered(client, arguments, run):
    producer = client.get_producer(arguments.instance, arguments.topic)
    tag = f"O-{run}"
    shard = f"shard-{run}"
    ids = []
    for index in range(3):
        message = TopicMessage(f"ordered {index}", tag)
        message.set_sharding_key(shard)
        ids.append(producer.publish_message(message).message_id)
    consumer = client.get_consumer(
        arguments.instance, arguments.topic, f"{arguments.group}-ordered", tag
    )
    received = collect(consumer, set(ids), arguments.step_timeout, ordered=True)
    order = []
    for message in received:
        if message.message_id not in order:
            order.append(message.message_id)
        if message.get_sharding_key() != shard:
            raise common.Failure(
                f"sharding key {message.get_sharding_key()!r}, expected {shard!r}",
                received=describe(message),
            )
    if order != ids:
        raise common.Failure(
            f"arrived in the order {order}, published {ids}",
            received=[describe(m) for m in received],
        )
    return {"published": ids, "received": [describe(message) for message in received]}


def step_timed(client, arguments, run):
    producer = client.get_producer(arguments.instance, arguments.topic)
    tag = f"T-{run}"
    deliver_at = now_ms() + int(arguments.timed_delay * 1000)
    message = TopicMessage(f"timed {run}", tag)
    message.set_start_deliver_time(deliver_at)
    message_id = producer.publish_message(message).message_id
    consumer = client.get_consumer(
        arguments.instance, arguments.topic, f"{arguments.group}-timed", tag
    )
    received = collect(consumer, {message_id}, arguments.step_timeout + arguments.timed_delay)
    arrived_at = now_ms()
    first = received[0]
    if arrived_at < deliver_at:
        raise common.Failure(
            f"the timed message arrived {deliver_at - arrived_at} ms early",
            received=describe(first),
        )
    if first.get_start_deliver_time() != deliver_at:
        raise common.Failure(
            f"__STARTDELIVERTIME echoed as {first.get_start_deliver_time()}, sent {deliver_at}",
            received=describe(first),
        )
    return {
        "deliver_at_ms": deliver_at,
        "arrived_at_ms": arrived_at,
        "late_ms": arrived_at - deliver_at,
    }


def step_transactions(client, arguments, run):
    group = f"{arguments.group}-trans"
    producer = client.get_trans_producer(arguments.instance, arguments.topic, group)
    tag = f"X-{run}"
    sent = {}
    for name in ("commit", "rollback", "orphan"):
        message = TopicMessage(f"{name} {run}", tag)
        message.set_trans_check_immunity_time(10)
        receipt = producer.publish_message(message)
        if not receipt.receipt_handle:
            raise common.Failure(f"no ReceiptHandle for the {name} half message")
        sent[name] = {
            "message_id": receipt.message_id,
            "handle": receipt.receipt_handle,
            "published_at": time.monotonic(),
        }
    producer.commit(sent["commit"]["handle"])
    producer.rollback(sent["rollback"]["handle"])

    # The open one comes back as a check-back once its 10 s have passed.
    checked = None
    foreign = 0
    deadline = time.monotonic() + 10 + arguments.step_timeout
    while checked is None:
        if time.monotonic() >= deadline:
            raise common.Failure("the open half message never came back through trans=pop")
        try:
            halves = producer.consume_half_message(16, 5)
        except MQServerException as error:
            if error.type != "MessageNotExist":
                raise
            halves = []
        for half in halves:
            if half.message_id == sent["orphan"]["message_id"]:
                checked = half
            elif half.message_tag != tag:
                foreign += 1
            elif half.message_id != sent["orphan"]["message_id"]:
                raise common.Failure(
                    f"a resolved half message came back: {half.message_id}",
                    half=describe(half),
                )
    after = time.monotonic() - sent["orphan"]["published_at"]
    if after < 9.5:
        raise common.Failure(f"the check-back came {after:.1f} s after publishing, before 10 s")
    if checked.get_trans_check_immunity_time() != 10:
        raise common.Failure(
            "the check-back lost __TransCheckT", half=describe(checked)
        )
    producer.commit(checked.receipt_handle)

    consumer = client.get_consumer(arguments.instance, arguments.topic, f"{group}-consumer", tag)
    wanted = {sent["commit"]["message_id"], sent["orphan"]["message_id"]}
    received = collect(consumer, wanted, arguments.step_timeout)
    received += consume(consumer, wait=3)
    ids = [message.message_id for message in received]
    if sent["rollback"]["message_id"] in ids or len(ids) != len(set(ids)):
        raise common.Failure(
            f"delivered {ids}; expected {sorted(wanted)} once each",
            received=[describe(m) for m in received],
        )
    for entry in sent.values():
        entry.pop("published_at")
    return {
        "sent": sent,
        "check_back_after_s": round(after, 1),
        "foreign_check_backs": foreign,
        "received": [describe(message) for message in received],
    }


def http_json(arguments, method, path, body=None, expect=200):
    url = arguments.endpoint.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    credentials = f"{arguments.access_key}:{arguments.secret_key}".encode()
    request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
    try:
        with urllib.request.urlopen(request, timeout=40) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    if status != expect:
        raise common.Failure(f"{method} {path} answered {status}, expected {expect}: {text}")
    return json.loads(text) if text else None


def step_json(arguments, run):
    document = http_json(arguments, "GET", "/v1/openapi.json")
    if not str(document.get("openapi", "")).startswith("3.1"):
        raise common.Failure(f"/v1/openapi.json is OpenAPI {document.get('openapi')!r}")
    topic = urllib.parse.quote(arguments.topic, safe="")
    tag = f"J-{run}"
    published = http_json(
        arguments,
        "POST",
        f"/v1/topics/{topic}/messages",
        {"body": f"json {run}", "tag": tag, "keys": ["kj"], "properties": {"p": "1"}},
        expect=201,
    )
    group = urllib.parse.quote(f"{arguments.group}-json", safe="")
    found = None
    deadline = time.monotonic() + arguments.step_timeout
    while found is None:
        if time.monotonic() >= deadline:
            raise common.Failure("the JSON message never arrived")
        answer = http_json(
            arguments,
            "GET",
            f"/v1/topics/{topic}/messages?group={group}&tag={urllib.parse.quote(tag)}"
            "&max=16&wait_ms=3000",
        )
        for message in answer["messages"]:
            if message["message_id"] == published["message_id"]:
                found = message
    expected = {"body": f"json {run}", "tag": tag, "keys": ["kj"], "properties": {"p": "1"}}
    for field, value in expected.items():
        if found.get(field) != value:
            raise common.Failure(f"JSON message {field} is {found.get(field)!r}, expected {value!r}")
    acked = http_json(
        arguments,
        "POST",
        f"/v1/topics/{topic}/acks",
        {"group": f"{arguments.group}-json", "receipt_handles": [found["receipt_handle"], "bogus"]},
    )
    results = acked["results"]
    if not results[0]["ok"] or results[1]["ok"]:
        raise common.Failure(f"ack results {results}; expected ok, then not ok")
    return {"published": published, "received": found, "ack_results": results}


def main(arguments, _log):
    run = f"{os.getpid()}-{now_ms()}"
    if arguments.group is None:
        arguments.group = f"GID_http_sdk_{run}"
    client = MQClient(arguments.endpoint, arguments.access_key, arguments.secret_key)
    result = {"run": run, "group": arguments.group, "topic": arguments.topic, "steps": {}}
    steps = {
        "empty": lambda: step_empty(client, arguments, run),
        "tags": lambda: step_tags(client, arguments, run),
        "wrong_handle": lambda: step_wrong_handle(client, arguments),
        "ordered": lambda: step_ordered(client, arguments, run),
        "timed": lambda: step_timed(client, arguments, run),
        "transactions": lambda: step_transactions(client, arguments, run),
        "json": lambda: step_json(arguments, run),
    }
    chosen = [name for name in arguments.steps.split(",") if name]
    unknown = [name for name in chosen if name not in steps]
    if unknown or not chosen:
        raise common.Failure(f"unknown steps {unknown}; choose from {','.join(STEPS)}")
    for name in chosen:
        step = steps[name]
        started = time.monotonic()
        try:
            details = step()
        except common.Failure as failure:
            raise common.Failure(f"step {name}: {failure}", **failure.details, **result) from failure
        except MQServerException as error:
            raise common.Failure(
                f"step {name}: the server answered {error.type}: {error.message} "
                f"(request {error.req_id})",
                **result,
            ) from error
        details["elapsed_ms"] = common.elapsed_ms(started)
        result["steps"][name] = details
        print(f"http_sdk: step {name} passed", file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    common.run(main, parse_arguments())
