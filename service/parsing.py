"""Reading a restoration request off the wire: multipart form or JSON with base64 fields.

Produces ``RawRestore`` (bytes and plain fields); every malformation is a typed error.
The OpenAPI description of both bodies lives here too, since FastAPI cannot infer a
body that is parsed by hand.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from .errors import InvalidField, MalformedRequest, UnsupportedMediaType, clip
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
                               f"not {clip(ctype, 64) or 'a body without Content-Type'}")


async def _from_form(request: Request) -> RawRestore:
    try:
        form = await request.form(max_files=4, max_fields=16)
    except MultiPartException as exc:
        raise MalformedRequest(f"the multipart body cannot be parsed: {clip(exc.message)}; "
                               "send multipart/form-data with a boundary and at most the "
                               "fields image, task, mask, seed, output_format") from exc
    except StarletteHTTPException as exc:    # Starlette's own refusal of the body
        raise MalformedRequest(f"the multipart body cannot be parsed: {clip(str(exc.detail))}; "
                               "send multipart/form-data with a boundary and at most the "
                               "fields image, task, mask, seed, output_format") from exc
    unknown = set(form.keys()) - FORM_FIELDS
    if unknown:
        await form.close()
        raise InvalidField(f"unknown form field(s) {[clip(k, 32) for k in sorted(unknown)[:3]]}; "
                           f"the fields are {', '.join(sorted(FORM_FIELDS))}")
    repeated = sorted({k for k in form.keys() if len(form.getlist(k)) > 1})
    if repeated:
        await form.close()
        raise InvalidField(f"the form has more than one {repeated[0]!r} field; send each "
                           "field once (one image per request: use one request per image)")

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

    def text(name: str, strip: bool = True) -> str | None:
        value = form.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidField(f"'{name}' must be a text field, not a file")
        return value.strip() if strip else value

    try:
        image = await file_bytes("image", required=True)
        mask = await file_bytes("mask", required=False)
    finally:
        await form.close()
    return RawRestore(image=image or b"", task=text("task") or None, mask=mask,
                      seed=parse_seed(text("seed", strip=False)),
                      output_format=text("output_format") or "png")


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
        where = clip(".".join(str(p) for p in first.get("loc", ())) or "body", 32)
        raise InvalidField(f"{where}: {first['msg']}") from exc
    return RawRestore(image=b64decode(data.image, "image"), task=data.task or None,
                      mask=b64decode(data.mask, "mask") if data.mask is not None else None,
                      seed=data.seed, output_format=data.output_format)
