"""A driver's photos for an appeal: taken as a phone sends them (JPEG, PNG, HEIC), kept as JPEG or
PNG with nothing but the pixels.

Each photo is bounded before it is decoded (``MAX_BYTES``, ``MAX_PHOTOS``) and while it is decoded
(``MAX_PIXELS``: Pillow refuses a decompression bomb); its type is what its content is (Pillow
identifies it), not its name or the type the browser claims. It is decoded and encoded again, so
EXIF (GPS position, the phone's model, the time), XMP and ICC data are gone; the EXIF orientation
is applied first so the picture stays upright. Kept in PostgreSQL (``appeal_photos``, bytea) in the
appeal's transaction, and emptied with the appeal's statement by retention (``decided_cases``).
"""

import hashlib
import io
from dataclasses import dataclass

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.appeals.grounds import NotAllowed

pillow_heif.register_heif_opener()

MAX_PHOTOS = 3
MAX_BYTES = 8 * 1024 * 1024
"""A phone's photo is 2-6 MB; HEIC less."""
MAX_PIXELS = 50_000_000
KEEP_LONG_SIDE = 2560
"""Photos larger than this are scaled down: enough to read a sign or a plate."""
TAKEN = {"JPEG": "image/jpeg", "PNG": "image/png", "HEIF": "image/jpeg"}
"""Formats taken -> what is kept (HEIC becomes JPEG: browsers other than Safari do not show it)."""


@dataclass(frozen=True)
class Photo:
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def clean(raw: bytes) -> Photo:
    """The photo re-encoded without metadata; ``NotAllowed`` naming what is wrong with it."""
    if len(raw) > MAX_BYTES:
        raise NotAllowed("photo_too_big", max_mb=MAX_BYTES // (1024 * 1024))
    try:
        with Image.open(io.BytesIO(raw)) as image:
            kind = image.format
            if kind not in TAKEN:
                raise NotAllowed("photo_type")
            if image.width * image.height > MAX_PIXELS:
                raise NotAllowed("photo_too_big", max_mb=MAX_BYTES // (1024 * 1024))
            image = ImageOps.exif_transpose(image)
            image.thumbnail((KEEP_LONG_SIDE, KEEP_LONG_SIDE))
            out = io.BytesIO()
            if TAKEN[kind] == "image/png":
                image.save(out, "PNG", optimize=True)
            else:
                image.convert("RGB").save(out, "JPEG", quality=88)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        raise NotAllowed("photo_type") from None
    return Photo(TAKEN[kind], out.getvalue())
