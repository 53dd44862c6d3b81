"""A driver's appeal photos (pipeline/appeals/photos.py): what a phone sends is taken, checked by its
content, and kept without its metadata."""

import io

import pillow_heif
import pytest
from PIL import Image

from pipeline.appeals import photos
from pipeline.appeals.grounds import NotAllowed

pytestmark = pytest.mark.unit

GPS = {1: "N", 2: (30.0, 16.0, 45.0), 3: "E", 4: (120.0, 0.0, 14.0)}


def taken(fmt: str, size=(800, 600), exif: bool = True) -> bytes:
    image = Image.new("RGB", size, (30, 120, 200))
    out = io.BytesIO()
    if exif:
        meta = Image.Exif()
        meta[0x0110] = "PhoneModel X"
        meta[0x8825] = GPS
        meta[0x0112] = 6  # taken with the phone turned: shown rotated 90°
        image.save(out, fmt, exif=meta)
    else:
        image.save(out, fmt)
    return out.getvalue()


def test_a_jpeg_from_a_phone_is_kept_upright_without_its_gps_position_or_phone_model():
    kept = photos.clean(taken("JPEG"))

    assert kept.content_type == "image/jpeg"
    image = Image.open(io.BytesIO(kept.data))
    assert image.size == (600, 800), "the EXIF orientation applied before it was dropped"
    assert not image.getexif() and b"PhoneModel" not in kept.data and b"Exif" not in kept.data


def test_a_png_stays_a_png_and_a_heic_becomes_a_jpeg_browsers_show():
    assert photos.clean(taken("PNG", exif=False)).content_type == "image/png"
    heic = io.BytesIO()
    pillow_heif.from_pillow(Image.new("RGB", (640, 480), (200, 30, 30))).save(heic, quality=80)
    kept = photos.clean(heic.getvalue())
    assert kept.content_type == "image/jpeg" and Image.open(io.BytesIO(kept.data)).format == "JPEG"


@pytest.mark.parametrize("raw", [b"%PDF-1.7 not a photo", b"GIF89a" + b"\0" * 100, b""], ids=["pdf", "gif", "empty"])
def test_what_is_not_a_jpeg_png_or_heic_is_refused_whatever_its_name(raw):
    with pytest.raises(NotAllowed) as refused:
        photos.clean(raw)
    assert refused.value.key == "photo_type"


def test_a_photo_too_large_in_bytes_or_pixels_is_refused_before_it_is_decoded(monkeypatch):
    with pytest.raises(NotAllowed) as refused:
        photos.clean(b"\xff\xd8" + b"\0" * photos.MAX_BYTES)
    assert refused.value.key == "photo_too_big"
    monkeypatch.setattr(photos, "MAX_PIXELS", 100 * 100)
    with pytest.raises(NotAllowed) as refused:
        photos.clean(taken("PNG", size=(101, 100), exif=False))
    assert refused.value.key == "photo_too_big"


def test_a_large_photo_is_scaled_down_to_what_shows_a_sign_or_a_plate():
    kept = photos.clean(taken("JPEG", size=(4000, 3000), exif=False))
    assert max(Image.open(io.BytesIO(kept.data)).size) == photos.KEEP_LONG_SIDE
