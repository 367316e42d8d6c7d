"""A property test over the OpenAPI schema: whatever a client sends, never a 500.

Requests are generated from the app's own schema (every path and method, its path
parameters and both request-body encodings), with values that follow the schema,
values that break it, and now and then a small valid image so that some requests go
all the way through the worker.
"""

from __future__ import annotations

import base64
import string

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.images import encode, photo

IMAGES = [encode(photo(8, 8)), encode(photo(16, 12), "JPEG"), encode(photo(32, 32)),
          encode(np.zeros((32, 32), np.uint8))]
SERVED_TASKS = ["sr", "inpaint", "face"]


def _binary() -> st.SearchStrategy:
    return st.one_of(st.binary(max_size=64), st.sampled_from(IMAGES),
                     st.sampled_from(IMAGES).map(lambda b: b[: len(b) // 2]))


def _value(schema: dict) -> st.SearchStrategy:
    """A value for one property: schema-following most of the time, junk otherwise."""
    options = schema.get("anyOf", [schema])
    good = []
    for option in options:
        kind = option.get("type")
        if "enum" in option:
            good.append(st.sampled_from(option["enum"]))
        elif kind == "string" and option.get("format") == "binary":
            good.append(_binary())
        elif kind == "string":
            good.append(st.one_of(st.text(max_size=16), st.sampled_from(SERVED_TASKS)))
        elif kind == "integer":
            good.append(st.integers(min_value=option.get("minimum", -2 ** 70),
                                    max_value=option.get("maximum", 2 ** 70)))
        elif kind == "null":
            good.append(st.none())
    junk = st.one_of(st.text(max_size=8), st.integers(-2 ** 65, 2 ** 65), st.none(),
                     st.booleans(), st.lists(st.integers(), max_size=2))
    return st.one_of(*good, junk) if good else junk


@st.composite
def _json_body(draw, schema: dict):
    body = {}
    for name, prop in schema.get("properties", {}).items():
        if draw(st.booleans()) or name in schema.get("required", []) and draw(st.booleans()):
            value = draw(_value({**prop, "format": None} if name in ("image", "mask") else prop))
            if name in ("image", "mask") and draw(st.booleans()):
                value = base64.b64encode(draw(_binary())).decode()
            body[name] = value
    return draw(st.one_of(st.just(body), st.just(body), st.sampled_from([[], "x", 3, None])))


@st.composite
def _form_body(draw, schema: dict):
    files, data = {}, {}
    for name, prop in schema.get("properties", {}).items():
        if not draw(st.booleans()):
            continue
        value = draw(_value(prop))
        if isinstance(value, bytes):
            files[name] = ("f", value)
        elif value is not None:
            data[name] = str(value)
    return files, data


@st.composite
def _request(draw, openapi: dict):
    path = draw(st.sampled_from(sorted(openapi["paths"])))
    method = draw(st.sampled_from(sorted(openapi["paths"][path])))
    op = openapi["paths"][path][method]
    ident = st.text(alphabet=string.ascii_letters + string.digits + "-_.%", min_size=1,
                    max_size=40)
    for param in op.get("parameters", []):
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", draw(ident))
    kwargs: dict = {}
    content = op.get("requestBody", {}).get("content", {})
    if content:
        ctype = draw(st.sampled_from(sorted(content) + ["text/plain"]))
        schema = content.get(ctype, {}).get("schema", {})
        if ctype == "multipart/form-data":
            files, data = draw(_form_body(schema))
            kwargs = {"files": files or {"x": ("x", b"")}, "data": data}
        elif ctype == "application/json":
            kwargs = {"json": draw(_json_body(schema))}
        else:
            kwargs = {"content": draw(st.binary(max_size=32)),
                      "headers": {"content-type": ctype}}
    return method.upper(), path, kwargs


def test_no_request_built_from_the_schema_gets_a_500(client):
    openapi = client.get("/openapi.json").json()
    assert {"/v1/restore", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result",
            "/v1/models", "/healthz", "/readyz", "/metrics"} <= set(openapi["paths"])
    seen: set[int] = set()

    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(_request(openapi))
    def check(request):
        method, path, kwargs = request
        response = client.request(method, path, **kwargs)
        seen.add(response.status_code)
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"code", "message"}

    check()
    # the run reached both the rules and the worker
    assert {200, 422} <= seen and seen & {400, 404, 415}, seen
