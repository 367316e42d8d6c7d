"""Every odd input becomes RGB with a note, or a clear InputImageError."""

import io

import numpy as np
import pytest
from PIL import Image

from model.errors import ImageTooLargeError, InputImageError
from model.imageio import decode_image, decode_mask, encode_image, format_for_path


def _png(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgb_roundtrip_is_exact():
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = decode_image(encode_image(arr, "png"))
    np.testing.assert_array_equal(out.pixels, arr)
    assert out.notes == []


@pytest.mark.parametrize("mode,note", [("L", "grayscale"), ("RGBA", "alpha"), ("CMYK", "CMYK"),
                                       ("P", None)])
def test_modes_become_rgb(mode, note):
    im = Image.new("RGB", (16, 12), (10, 200, 30)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode_image(_png(im, fmt))
    assert out.pixels.shape == (12, 16, 3) and out.pixels.dtype == np.uint8
    if note:
        assert any(note in n for n in out.notes)


def test_rgba_is_composited_over_white():
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    out = decode_image(_png(im))
    assert (out.pixels == 255).all()


def test_16bit_grayscale_scales_to_8bit():
    arr = np.full((10, 10), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    im = Image.fromarray(arr)
    out = decode_image(_png(im))
    assert out.pixels[5, 5, 0] == 255 and out.pixels[0, 0, 0] == 0
    assert any("16-bit" in n for n in out.notes)


def test_exif_rotation_is_applied():
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6          # rotate 90 CW on display
    out = decode_image(_png(im, "JPEG", exif=exif.tobytes()))
    assert out.pixels.shape[:2] == (40, 20)
    assert any("EXIF" in n for n in out.notes)


def test_corrupt_truncated_empty_and_not_images():
    good = _png(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    for bad, word in [(b"", "empty"), (b"hello world", "not a recognised image"),
                      (good[: len(good) // 2], "truncated")]:
        with pytest.raises(InputImageError, match=word):
            decode_image(bad)


def test_pixel_limit_and_tiny_images():
    with pytest.raises(ImageTooLargeError, match="limit"):
        decode_image(_png(Image.new("RGB", (200, 200))), max_pixels=100 * 100)
    with pytest.raises(InputImageError, match="at least"):
        decode_image(_png(Image.new("RGB", (4, 50))))


def test_decompression_bomb_is_refused_before_decoding():
    # a 1-bit PNG that declares 36M pixels (over the 16M default) but is tiny on disk
    bomb = _png(Image.new("1", (6000, 6000)))
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLargeError):
        decode_image(bomb)


def test_mask_size_must_match():
    mask = _png(Image.new("L", (10, 10), 255))
    assert decode_mask(mask, (10, 10)).all()
    with pytest.raises(InputImageError, match="same size"):
        decode_mask(mask, (12, 10))


def test_output_formats():
    arr = np.zeros((8, 8, 3), np.uint8)
    for fmt in ("png", "jpeg", "webp"):
        assert decode_image(encode_image(arr, fmt)).pixels.shape == (8, 8, 3)
    with pytest.raises(InputImageError):
        encode_image(arr, "gif")
    with pytest.raises(InputImageError):
        format_for_path("x.gif")
