"""Reading a restoration request off the wire: multipart form or JSON with base64 fields.

Produces ``RawRestore`` (bytes and plain fields); every malformation is a typed error.
The OpenAPI description of both bodies lives here too, since FastAPI cannot infer a
body that is parsed by hand.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from .errors import InvalidField, MalformedRequest, UnsupportedMediaType
from .schemas import RestoreForm, RestoreJSON
from .validation import RawRestore, b64decode, parse_seed

FORM_FIELDS = {"image", "task", "mask", "seed", "output_format"}

OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": RestoreForm.model_json_schema()},
            "application/json": {"schema": RestoreJSON.model_json_schema()},
        },
    }
}


async def read_restore(request: Request) -> RawRestore:
    """The request's fields, whichever of the two encodings it uses."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _from_form(request)
    if ctype == "application/json" or (ctype.startswith("application/") and
                                       ctype.endswith("+json")):
        return _from_json(await request.body())
    raise UnsupportedMediaType(f"send multipart/form-data (fields image, task, mask, seed, "
                               f"output_format) or application/json with base64 images, "
                               f"not {ctype or 'a body without Content-Type'}")


async def _from_form(request: Request) -> RawRestore:
    try:
        form = await request.form(max_files=4, max_fields=16)
    except MultiPartException as exc:
        raise MalformedRequest(f"the multipart body cannot be parsed: {exc.message}") from exc
    unknown = set(form.keys()) - FORM_FIELDS
    if unknown:
        raise InvalidField(f"unknown form field(s) {sorted(unknown)[:5]}; the fields are "
                           f"{', '.join(sorted(FORM_FIELDS))}")

    async def file_bytes(name: str, required: bool) -> bytes | None:
        value = form.get(name)
        if value is None:
            if required:
                raise InvalidField(f"the form has no '{name}' file part; send the image "
                                   f"as a file field named {name!r}")
            return None
        if isinstance(value, UploadFile):
            return await value.read()
        if required or value != "":
            raise InvalidField(f"'{name}' must be a file part (filename=...), not a text field")
        return None

    def text(name: str) -> str | None:
        value = form.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidField(f"'{name}' must be a text field, not a file")
        return value.strip()

    try:
        image = await file_bytes("image", required=True)
        mask = await file_bytes("mask", required=False)
    finally:
        await form.close()
    return RawRestore(image=image or b"", task=text("task") or None, mask=mask,
                      seed=parse_seed(text("seed")), output_format=text("output_format") or "png")


def _from_json(body: bytes) -> RawRestore:
    try:
        data = RestoreJSON.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] in ("json_invalid", "json_type") for e in errors) or \
                (errors and errors[0].get("loc") == () and errors[0]["type"] == "model_type"):
            raise MalformedRequest(f"the body is not a JSON object: {errors[0]['msg']}",
                                   code="malformed_json") from exc
        first = errors[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidField(f"{where}: {first['msg']}") from exc
    return RawRestore(image=b64decode(data.image, "image"), task=data.task or None,
                      mask=b64decode(data.mask, "mask") if data.mask is not None else None,
                      seed=data.seed, output_format=data.output_format)
