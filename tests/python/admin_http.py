"""Checks the node's JSON admin API over HTTP: fetches its OpenAPI document
from /openapi.json, validates it (openapi-spec-validator: OpenAPI 3.1), calls
every read endpoint, a reset, and creates, changes, exports and deletes a
topic and a group, and validates each answer against the
document's schema for it (JSON Schema 2020-12, which OpenAPI 3.1 schemas
are); bad requests must get 400 and unknown names 404 with an error body
naming what was wrong.

Output: {"ok", "openapi", "paths", "checked": [{"method", "path", "status"}]}.
"""

import json
import urllib.error
import urllib.parse
import urllib.request

import common
import jsonschema
from openapi_spec_validator import validate


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0], credentials=False)
    parser.add_argument("--base-url", required=True, help="http://host:port of the admin address")
    parser.add_argument("--topic", required=True, help="a topic with messages")
    parser.add_argument("--group", required=True, help="a group that consumed the topic")
    parser.add_argument("--message-id", required=True, help="a stored message's id")
    return parser.parse_args()


def call(base_url, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def main(arguments, log):
    status, document = call(arguments.base_url, "GET", "/openapi.json")
    if status != 200:
        raise common.Failure(f"/openapi.json answered {status}")
    validate(document)
    result = {
        "openapi": document["openapi"],
        "paths": sorted(document["paths"]),
        "checked": [],
    }

    def schema_of(path, method, status):
        operation = document["paths"][path][method.lower()]
        content = operation["responses"][str(status)]["content"]["application/json"]
        return {**content["schema"], "components": document["components"]}

    def check(method, template, path, expected, body=None):
        status, answer = call(arguments.base_url, method, path, body)
        result["checked"].append({"method": method, "path": path, "status": status})
        if status != expected:
            raise common.Failure(f"{method} {path} answered {status}: {answer}", **result)
        try:
            jsonschema.validate(
                answer,
                schema_of(template, method, expected),
                cls=jsonschema.Draft202012Validator,
            )
        except jsonschema.ValidationError as error:
            raise common.Failure(
                f"{method} {path}: the answer does not match the document: {error.message}",
                **result,
            ) from error
        return answer

    topic = urllib.parse.quote(arguments.topic, safe="")
    group = urllib.parse.quote(arguments.group, safe="")
    message_id = urllib.parse.quote(arguments.message_id, safe="")
    topics = check("GET", "/v1/topics", "/v1/topics", 200)
    if arguments.topic not in [listed["name"] for listed in topics["topics"]]:
        raise common.Failure(f"{arguments.topic} not listed: {topics}", **result)
    check("GET", "/v1/topics/{topic}", f"/v1/topics/{topic}", 200)
    found = check(
        "GET",
        "/v1/topics/{topic}/messages",
        f"/v1/topics/{topic}/messages?limit=1",
        200,
    )
    if len(found["messages"]) != 1 or not found["next_page_token"]:
        raise common.Failure(f"one message and a next page expected: {found}", **result)
    check("GET", "/v1/groups", "/v1/groups", 200)
    check("GET", "/v1/groups/{group}", f"/v1/groups/{group}", 200)
    traced = check("GET", "/v1/messages/{id}", f"/v1/messages/{message_id}?with_body=true", 200)
    if not traced["messages"][0]["trace"] or traced["messages"][0]["body"] is None:
        raise common.Failure(f"no trace or body: {traced}", **result)
    check(
        "POST",
        "/v1/groups/{group}/reset",
        f"/v1/groups/{group}/reset",
        200,
        {"topic": arguments.topic, "to": "latest"},
    )
    # Topics and groups made, changed and deleted over HTTP.
    made = check("POST", "/v1/topics", "/v1/topics", 200, {"name": "http-made", "queues": 2})
    if made["queues"] != 2:
        raise common.Failure(f"created: {made}", **result)
    changed = check(
        "PUT", "/v1/topics/{topic}", "/v1/topics/http-made", 200, {"retention_ms": 60000}
    )
    if changed["retention_ms"] != 60000 or changed["queues"] != 2:
        raise common.Failure(f"updated: {changed}", **result)
    check("POST", "/v1/groups", "/v1/groups", 200, {"name": "http-group", "max_attempts": 4})
    check("PUT", "/v1/groups/{group}", "/v1/groups/http-group", 200, {"fifo": True})
    exported = check("GET", "/v1/export", "/v1/export", 200)
    if "[topics.http-made]" not in exported["toml"] or "[groups.http-group]" not in exported["toml"]:
        raise common.Failure(f"export lacks the changes: {exported['toml']}", **result)
    check("DELETE", "/v1/groups/{group}", "/v1/groups/http-group", 200)
    check("DELETE", "/v1/topics/{topic}", "/v1/topics/http-made", 200)
    # Bad input: 4xx naming what was wrong.
    # A path the API does not have: 404 with a JSON error too.
    status, answer = call(arguments.base_url, "GET", "/v1/nothing-here")
    if status != 404 or "nothing-here" not in (answer or {}).get("error", ""):
        raise common.Failure(f"an unknown path answered {status}: {answer}", **result)
    for method, template, path, expected, body, names in [
        ("GET", "/v1/topics/{topic}", "/v1/topics/no-such-topic", 404, None, "no-such-topic"),
        (
            "GET",
            "/v1/topics/{topic}/messages",
            f"/v1/topics/{topic}/messages?limit=5000",
            400,
            None,
            "limit",
        ),
        (
            "GET",
            "/v1/topics/{topic}/messages",
            f"/v1/topics/{topic}/messages?page_token=garbage",
            400,
            None,
            "page_token",
        ),
        ("GET", "/v1/messages/{id}", "/v1/messages/no-such-id", 404, None, "no-such-id"),
        (
            "POST",
            "/v1/groups/{group}/reset",
            f"/v1/groups/{group}/reset",
            400,
            {"topic": arguments.topic, "to": "yesterday"},
            "to",
        ),
        ("POST", "/v1/topics", "/v1/topics", 409, {"name": arguments.topic}, "exists"),
        (
            "POST",
            "/v1/topics",
            "/v1/topics",
            400,
            {"name": "elsewhere", "replicate_to": ["mars"]},
            "mars",
        ),
        ("POST", "/v1/topics", "/v1/topics", 400, {"name": "x", "queues": "many"}, "body"),
        ("PUT", "/v1/topics/{topic}", "/v1/topics/http-made", 404, {"queues": 4}, "http-made"),
        ("POST", "/v1/topics", "/v1/topics", 400, {"name": "typo", "qeues": 4}, "qeues"),
        (
            "PUT",
            "/v1/topics/{topic}",
            f"/v1/topics/{topic}",
            400,
            {"name": "other", "queues": 99},
            "other",
        ),
        (
            "GET",
            "/v1/topics/{topic}/messages",
            f"/v1/topics/{topic}/messages?limit=abc",
            400,
            None,
            "limit",
        ),
        (
            "POST",
            "/v1/groups/{group}/reset",
            "/v1/groups/no-such-group/reset",
            404,
            {"topic": arguments.topic, "to": "latest"},
            "no-such-group",
        ),
    ]:
        answer = check(method, template, path, expected, body)
        if names not in answer["error"]:
            raise common.Failure(f"{method} {path}: the error does not name {names}: {answer}")
    return result


if __name__ == "__main__":
    common.run(main, parse_arguments())
