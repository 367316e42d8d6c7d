"""Bad input: each case is a JSON error naming the rule; odd-but-valid images just work.

The shared ``client`` serves sr (x4), inpaint and face (32x32 inputs in these tests)
with RESSHIFT_MAX_PIXELS=40000 and RESSHIFT_MAX_BODY_BYTES=300000.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.helpers.images import decode, encode, photo, png_with_size
from tests.helpers.paths import REPO
from tests.helpers.service import assert_error, form, metric, running_app, settings_for


# -- not an image / truncated / corrupt ---------------------------------------------------
@pytest.mark.parametrize("payload", [
    b"this is not an image",
    encode(photo(32, 32))[:300],                          # truncated PNG
    encode(photo(32, 32), "JPEG")[:400],                  # truncated JPEG
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,                  # PNG signature, garbage after
], ids=["text", "truncated-png", "truncated-jpeg", "garbage-png"])
def test_unreadable_images_are_422(client, payload):
    assert_error(client.post("/v1/restore", **form(payload, task="sr")), 422, "invalid_image")


def test_corrupt_png_data_is_422(client):
    data = bytearray(encode(photo(32, 32)))
    start = data.index(b"IDAT") + 4
    data[start:start + 40] = bytes(40)                    # breaks the CRC and the stream
    assert_error(client.post("/v1/restore", **form(bytes(data), task="sr")), 422,
                 "invalid_image", "corrupt")


def test_empty_file_is_422(client):
    assert_error(client.post("/v1/restore", **form(b"", task="sr")), 422, "invalid_image",
                 "empty")


# -- sizes ----------------------------------------------------------------------------------
def test_decompression_bomb_is_413_without_decoding(client):
    # Pillow's own bomb guard fires first; the message still quotes the configured limit
    body = assert_error(client.post("/v1/restore", **form(png_with_size(60000, 60000),
                                                          task="sr")),
                        413, "image_too_large", "40000")
    assert "178956970" not in body["error"]["message"]


def test_over_max_pixels_is_413(client):
    big = encode(np.full((250, 250, 3), 90, np.uint8))
    assert_error(client.post("/v1/restore", **form(big, task="sr")), 413, "image_too_large",
                 "250x250", "40000")


def test_body_over_the_limit_is_413(client):
    blob = bytes(400_000)
    assert_error(client.post("/v1/restore", **form(blob, task="sr")), 413, "body_too_large",
                 "300000")

    def chunks():                                          # no Content-Length: streamed
        for _ in range(10):
            yield bytes(50_000)
    streamed = client.post("/v1/restore", content=chunks(),
                           headers={"content-type": "application/json"})
    assert_error(streamed, 413, "body_too_large")


@pytest.mark.parametrize("shape", [(4, 4), (4, 64), (64, 3)])
def test_tiny_images_are_422(client, shape):
    assert_error(client.post("/v1/restore", **form(encode(photo(*shape)), task="sr")), 422,
                 "invalid_image", "at least 8")


def test_zero_sized_image_is_422(client):
    assert_error(client.post("/v1/restore", **form(png_with_size(0, 10), task="sr")), 422,
                 "invalid_image")


# -- task rules -----------------------------------------------------------------------------
def test_unknown_task_is_422_and_names_the_served_ones(client):
    assert_error(client.post("/v1/restore", **form(encode(photo(16, 16)), task="colorize")),
                 422, "unknown_task", "colorize", "inpaint", "sr")


def test_task_is_required_when_several_are_served(client):
    assert_error(client.post("/v1/restore", **form(encode(photo(16, 16)))), 422,
                 "task_required")


def test_inpainting_without_a_mask_is_422(client):
    assert_error(client.post("/v1/restore", **form(encode(photo(32, 32)), task="inpaint")),
                 422, "mask_required", "mask")


def test_mask_of_another_size_is_422(client):
    mask = encode(np.zeros((16, 16), np.uint8))
    assert_error(client.post("/v1/restore", **form(encode(photo(32, 40)), task="inpaint",
                                                    mask=mask)),
                 422, "mask_size_mismatch", "16x16", "40x32")


def test_mask_for_a_task_without_masks_is_422(client):
    mask = encode(np.zeros((16, 16), np.uint8))
    assert_error(client.post("/v1/restore", **form(encode(photo(16, 16)), task="sr", mask=mask)),
                 422, "mask_not_supported")


def test_face_task_takes_only_its_input_size(client):
    assert_error(client.post("/v1/restore", **form(encode(photo(40, 40)), task="face")), 422,
                 "face_input_size", "32x32", "40x40")
    ok = client.post("/v1/restore", **form(encode(photo(32, 32)), task="face", seed=1))
    assert ok.status_code == 200 and decode(ok.content).shape == (32, 32, 3)


# -- odd but valid images: converted, with a note -------------------------------------------
def _rgba() -> bytes:
    rgba = np.dstack([photo(16, 20), np.full((16, 20), 128, np.uint8)])
    return encode(Image.fromarray(rgba, "RGBA"))


def _gray16() -> bytes:
    return encode(Image.fromarray((photo(16, 20)[..., 0].astype(np.uint16) * 257)))


def _cmyk() -> bytes:
    return encode(Image.fromarray(photo(16, 20)).convert("CMYK"), "JPEG")


def _exif_rotated() -> bytes:
    im = Image.fromarray(photo(16, 20))
    exif = im.getexif()
    exif[0x0112] = 6                                       # display rotated 90 degrees
    return encode(im, "JPEG", exif=exif.tobytes())


def _rgb16() -> bytes:
    """A 16-bit-per-channel RGB PNG, 20x10 (Pillow writes no such files: built by hand)."""
    rows = np.random.default_rng(0).integers(0, 65535, (10, 20 * 3)).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20, 10, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _frames(fmt: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "green", "blue")]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:])


@pytest.mark.parametrize("payload, note, out_shape", [
    (_rgba(), "alpha", (64, 80, 3)),
    (encode(Image.fromarray(photo(16, 20)[..., 1])), "grayscale", (64, 80, 3)),
    (_gray16(), "16-bit", (64, 80, 3)),
    (_cmyk(), "cmyk", (64, 80, 3)),
    (_exif_rotated(), "exif", (80, 64, 3)),               # rotated: height and width swap
    (_rgb16(), "16-bit rgb", (40, 80, 3)),
    (_frames("GIF"), "first of 3 frames", (64, 64, 3)),
    (_frames("TIFF"), "first of 3 frames", (64, 64, 3)),
], ids=["rgba", "grayscale", "16-bit", "cmyk", "exif-rotated", "16-bit-rgb", "animated-gif",
        "multi-page-tiff"])
def test_odd_images_are_converted_with_a_note(client, payload, note, out_shape):
    response = client.post("/v1/restore", **form(payload, task="sr", seed=0))
    assert response.status_code == 200, response.text
    assert note in response.headers["x-input-notes"].lower()
    assert decode(response.content).shape == out_shape


# -- malformed requests ----------------------------------------------------------------------
def test_malformed_json_is_400(client):
    bad = client.post("/v1/restore", content=b'{"image": "abc", ',
                      headers={"content-type": "application/json"})
    assert_error(bad, 400, "malformed_json")
    assert_error(client.post("/v1/restore", json=[1, 2]), 400, "malformed_json")


def test_bad_base64_is_400(client):
    assert_error(client.post("/v1/restore", json={"image": "not base64!!", "task": "sr"}), 400,
                 "bad_base64", "image")
    good = base64.b64encode(encode(photo(32, 32))).decode()
    assert_error(client.post("/v1/restore", json={"image": good, "task": "inpaint",
                                                   "mask": "%%%"}), 400, "bad_base64", "mask")


@pytest.mark.parametrize("body, words", [
    ({"task": "sr"}, ["image"]),
    ({"image": "aGk=", "seed": -1}, ["seed"]),
    ({"image": "aGk=", "seed": "x"}, ["seed"]),
    ({"image": "aGk=", "output_format": "gif"}, ["output_format"]),
    ({"image": "aGk=", "colour": "red"}, ["colour"]),
])
def test_json_fields_out_of_range_are_422(client, body, words):
    assert_error(client.post("/v1/restore", json=body), 422, "invalid_field", *words)


@pytest.mark.parametrize("fields, words", [
    ({"seed": "abc"}, ["seed"]),
    ({"seed": str(2 ** 64)}, ["seed"]),
    ({"output_format": "gif"}, ["output_format"]),
])
def test_form_fields_out_of_range_are_422(client, fields, words):
    response = client.post("/v1/restore", **form(encode(photo(16, 16)), task="sr", **fields))
    assert_error(response, 422, "invalid_field", *words)


def test_form_without_an_image_file_is_422(client):
    assert_error(client.post("/v1/restore", data={"task": "sr"},
                             files={"other": ("x", b"1")}), 422, "invalid_field")
    assert_error(client.post("/v1/restore", files={"image": (None, b"abc")}), 422,
                 "invalid_field", "file part")


def test_broken_multipart_is_400(client):
    response = client.post("/v1/restore", content=b"--zz\r\nnonsense",
                           headers={"content-type": "multipart/form-data; boundary=zz"})
    assert response.status_code in (400, 422), response.text
    assert "error" in response.json()


def test_multipart_without_a_boundary_or_with_too_many_fields_is_400(client):
    no_boundary = client.post("/v1/restore", content=b"--zz\r\n",
                              headers={"content-type": "multipart/form-data"})
    assert_error(no_boundary, 400, "malformed_request", "boundary")
    body = "".join(f"--zz\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\n1\r\n"
                   for i in range(2000)) + "--zz--\r\n"
    crowded = client.post("/v1/restore", content=body.encode(),
                          headers={"content-type": "multipart/form-data; boundary=zz"})
    assert_error(crowded, 400, "malformed_request")


def test_a_second_image_field_is_422_not_a_silent_replacement(client):
    files = [("image", ("a.png", encode(photo(16, 16)), "image/png")),
             ("image", ("b.png", encode(photo(16, 16, seed=1)), "image/png"))]
    assert_error(client.post("/v1/restore", data={"task": "sr"}, files=files), 422,
                 "invalid_field", "more than one 'image'")


@pytest.mark.parametrize("seed", [" 7", "7 ", "+5", "-0", "\u0667", "1e3", "0x10"])
def test_form_seeds_are_ascii_digits_only(client, seed):
    response = client.post("/v1/restore", **form(encode(photo(16, 16)), task="sr", seed=seed))
    assert_error(response, 422, "invalid_field", "seed")


@pytest.mark.parametrize("seed", [True, "7", 7.0, " 7"])
def test_json_seeds_are_json_integers_only(client, seed):
    body = {"image": base64.b64encode(encode(photo(16, 16))).decode(), "task": "sr",
            "seed": seed}
    assert_error(client.post("/v1/restore", json=body), 422, "invalid_field", "seed")


@pytest.mark.parametrize("fields", [{"seed": "9" * 400}, {"task": "t" * 400},
                                    {"output_format": "p" * 400}])
def test_errors_never_echo_more_than_64_characters_of_the_input(client, fields):
    response = client.post("/v1/restore", **form(encode(photo(16, 16)), **fields))
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    longest = max(len(run) for run in __import__("re").findall(r"9+|t+|p+", message))
    assert longest <= 64, message


def test_405_says_which_methods_are_allowed(client):
    response = client.get("/v1/restore")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_every_answer_to_a_submission_is_counted(model_dirs):
    settings = settings_for({"sr": model_dirs["sr"]}, max_body_bytes=2000, api_keys="k")
    with running_app(settings) as c:
        key = {"Authorization": "Bearer k"}
        assert c.post("/v1/restore", headers=key, content=bytes(5000)).status_code == 413
        assert c.post("/v1/jobs", content=b"{}",
                      headers={"content-type": "application/json"}).status_code == 401
        text = c.get("/metrics", headers=key).text
    assert metric(text, "resshift_requests_total", task="unknown", status="413") == 1
    assert metric(text, "resshift_requests_total", task="unknown", status="401") == 1


@pytest.mark.parametrize("ctype", ["text/plain", "image/png", None])
def test_other_content_types_are_415(client, ctype):
    headers = {"content-type": ctype} if ctype else {}
    response = client.post("/v1/restore", content=encode(photo(16, 16)), headers=headers)
    assert_error(response, 415, "unsupported_media_type")


def test_bad_requests_never_take_the_worker_down(client):
    ok = client.post("/v1/restore", **form(encode(photo(16, 16)), task="sr"))
    assert ok.status_code == 200 and client.get("/readyz").status_code == 200


def test_every_error_code_the_service_can_send_is_in_the_docs_table():
    import re

    from service import errors
    sent = {code for _, code in errors._STATUS.values()} | set(errors._HTTP_CODES.values())
    sent |= {"internal_error", "inference_failed"}              # unknown errors, remote ones
    for path in (REPO / "service").rglob("*.py"):
        sent |= set(re.findall(r'code="([a-z_]+)"', path.read_text()))
    doc = (REPO / "docs" / "service.md").read_text()
    table = doc[doc.index("| status | code | when |"):doc.index("No other code is ever sent")]
    documented = set(re.findall(r"`([a-z_]+)`", table))
    assert sent <= documented, sorted(sent - documented)
    assert "http_error" not in documented and "http_error" not in sent
