"""Decoding: every mode to RGB the documented way, and every bad file ends with its status."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipeval.data.fetch import FetchOptions
from clipeval.data.images import STATUSES, LoadedImage, decode_image, read_image, read_images, to_rgb


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` RGB pixels, with no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _noise(size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))


def _palette_with_transparency() -> bytes:
    """A 2x1 palette PNG: pixel 0 uses the transparent index (red in the palette), pixel 1 green."""
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    return _encode(image, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated_jpeg() -> bytes:
    """A 20x10 JPEG tagged with EXIF orientation 6 (display rotated 90 degrees: 10x20)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(Image.new("RGB", (20, 10), (0, 128, 0)), "JPEG", exif=exif.tobytes())


def _bad_folder(tmp_path: Path) -> dict[str, tuple[bytes | None, str]]:
    """Write the bad-files folder; returns file name -> (content, expected status)."""
    jpeg = _encode(_noise(), "JPEG")
    png = _encode(_noise(), "PNG")
    cases = {
        "good.png": (png, "ok"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "zero.jpg": (b"", "empty_file"),
        "cmyk.jpg": (_encode(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "JPEG"), "ok"),
        "sixteen_bit.png": (_encode(Image.fromarray(np.full((8, 8), 65535, np.uint16)), "PNG"), "ok"),
        "palette_transparent.png": (_palette_with_transparency(), "ok"),
        "animated.gif": (_animated_gif(), "ok"),
        "huge_dimensions.png": (_png_header_only(100_000, 100_000), "too_many_pixels"),
        "text.jpg": (b"not an image, just text named .jpg\n", "decode_error"),
        "html.png": (b"<!doctype html><html><body>404</body></html>", "decode_error"),
        "rotated.jpg": (_exif_rotated_jpeg(), "ok"),
        "not_there.jpg": (None, "missing"),
    }
    for name, (content, _) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    return cases


def test_bad_files_folder_every_case_gets_its_status(tmp_path):
    cases = _bad_folder(tmp_path)
    (tmp_path / "a_folder.jpg").mkdir()
    refs = [*cases, "a_folder.jpg", "", None, float("nan")]
    expected = [status for _, status in cases.values()] + ["read_error", "bad_reference", "bad_reference",
                                                            "bad_reference"]

    loaded = read_images(refs, tmp_path, fetch_options=FetchOptions(read_threads=2))

    assert len(loaded) == len(refs)
    assert [item.status for item in loaded] == expected
    for ref, item in zip(refs, loaded):
        assert (item.image is not None) == (item.status == "ok"), ref
        assert (item.error == "") == (item.status == "ok"), ref
        assert item.image is None or item.image.mode == "RGB"
        assert item.status in STATUSES


def test_decoded_bad_cases_have_the_documented_pixels(tmp_path):
    _bad_folder(tmp_path)
    by_name = {name: read_image(name, tmp_path).image
               for name in ("cmyk.jpg", "sixteen_bit.png", "palette_transparent.png", "animated.gif", "rotated.jpg")}
    assert np.abs(np.asarray(by_name["cmyk.jpg"]).astype(int) - 255).max() <= 2  # CMYK 0,0,0,0 is white
    assert (np.asarray(by_name["sixteen_bit.png"]) == 255).all()  # 65535 -> 255, not clipped garbage
    assert by_name["palette_transparent.png"].getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert by_name["palette_transparent.png"].getpixel((1, 0)) == (0, 255, 0)
    assert by_name["animated.gif"].getpixel((0, 0)) == (255, 0, 0)  # first frame
    assert by_name["rotated.jpg"].size == (10, 20)  # EXIF orientation applied


def test_truncated_jpeg_is_not_silently_grey():
    jpeg = _encode(_noise(), "JPEG")
    for cut in (len(jpeg) // 3, len(jpeg) // 2, len(jpeg) - 20):
        result = decode_image(jpeg[:cut])
        assert result.status == "truncated", (cut, result)
        assert result.image is None


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_cap_is_checked_from_the_header_before_decoding():
    small_cap = decode_image(_encode(Image.new("RGB", (40, 30)), "PNG"), max_pixels=1000)
    assert small_cap.status == "too_many_pixels"
    assert "40x30" in small_cap.error
    assert decode_image(_encode(Image.new("RGB", (40, 25)), "PNG"), max_pixels=1000).status == "ok"
    # Header-only PNGs: 10000x10000 is refused by our check (PIL only warns), 100000x100000 by
    # PIL's own guard at open; neither allocates the pixels.
    assert "10000x10000" in decode_image(_png_header_only(10_000, 10_000)).error
    assert decode_image(_png_header_only(100_000, 100_000)).status == "too_many_pixels"


def test_empty_bytes():
    assert decode_image(b"") == LoadedImage(None, "empty_file", "the file is empty (0 bytes)")


@pytest.mark.parametrize(("image", "expected"), [
    (Image.fromarray(np.array([[0, 257 * 100, 65535]], np.uint16)), [0, 100, 255]),  # I;16
    (Image.fromarray(np.array([[0, 257 * 100, 70000, -5]], np.int32)), [0, 100, 255, 0]),  # I
    (Image.fromarray(np.array([[0.0, 0.5, 2.0, -1.0]], np.float32)), [0, 128, 255, 0]),  # F
    (Image.new("1", (1, 1), 1), [255]),
    (Image.new("L", (1, 1), 77), [77]),
])
def test_greyscale_modes_scale_to_8_bits(image, expected):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    pixels = np.asarray(rgb)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()
    assert pixels[0, :, 0].tolist() == expected


@pytest.mark.parametrize("image", [
    Image.new("RGBA", (1, 1), (10, 20, 30, 0)),
    Image.new("LA", (1, 1), (10, 0)),
    Image.new("PA", (1, 1), (0, 0)),
    Image.new("RGBa", (1, 1), (0, 0, 0, 0)),
])
def test_fully_transparent_pixels_become_white(image):
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_half_transparent_pixels_blend_with_white():
    assert to_rgb(Image.new("RGBA", (1, 1), (0, 0, 0, 128))).getpixel((0, 0)) == (127, 127, 127)


def test_colour_key_transparency_is_composited_on_white():
    for mode, key in (("L", 10), ("RGB", (1, 2, 3))):
        reopened = Image.open(io.BytesIO(_encode(Image.new(mode, (2, 2), key), "PNG", transparency=key)))
        assert to_rgb(reopened).getpixel((0, 0)) == (255, 255, 255), mode


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "LAB", "HSV", "RGBX", "P", "I;16B"])
def test_other_modes_convert_to_rgb(mode):
    rgb = to_rgb(Image.new(mode, (3, 2)))
    assert (rgb.mode, rgb.size) == ("RGB", (3, 2))


def test_to_rgb_takes_the_first_frame_even_when_seeked_away():
    animated = Image.open(io.BytesIO(_animated_gif()))
    animated.seek(1)
    assert to_rgb(animated).getpixel((0, 0)) == (255, 0, 0)


def test_statuses_table_has_one_line_meanings():
    assert {"ok", "truncated", "empty_file", "too_many_pixels", "decode_error", "missing", "bad_scheme",
            "timeout", "too_large", "http_<code>", "empty_caption"} <= STATUSES.keys()
    assert all(meaning and "\n" not in meaning for meaning in STATUSES.values())
