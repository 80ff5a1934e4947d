"""Photos of reports: cases.photos.store_photo and open_stored (no database needed)."""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin
from PIL.TiffImagePlugin import IFDRational

from cases import photos
from cases.photos import (
    MAX_PIXELS,
    THUMB_SIZE,
    PhotoError,
    PhotoTooLarge,
    StoredPhoto,
    Upload,
    check_uploads,
    decode_photos,
    open_stored,
    store_photo,
)
from gridmgmt.kernel.errors import InvalidInput, NotFound

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GPS_IFD = 0x8825
ORIENTATION = 0x0112
MAKE = "GridCamMaker"
MODEL = "GridCam 3000"
DATUM = "WGS-84-GRIDTEST"
COMMENT = b"GRIDTEST comment: 12 Main Street"
ICC = b"GRIDTEST-not-really-an-icc-profile"


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def halves(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return image


def camera_exif(orientation: int = 6, make: str = MAKE) -> Image.Exif:
    """EXIF as a phone writes it: maker, model, orientation and a GPS position."""
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = MODEL
    exif[ORIENTATION] = orientation
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = "N"
    gps[2] = (IFDRational(48, 1), IFDRational(51, 1), IFDRational(2442, 100))
    gps[3] = "E"
    gps[4] = (IFDRational(2, 1), IFDRational(21, 1), IFDRational(792, 100))
    gps[0x12] = DATUM
    return exif


def noisy(size: tuple[int, int] = (64, 64)) -> Image.Image:
    """Pixels that do not compress, so a cut file really misses image data."""
    return Image.frombytes("RGB", size, random.Random(0).randbytes(size[0] * size[1] * 3))


def png_header_only(width: int, height: int) -> bytes:
    """A grey PNG claiming `width` x `height` whose data holds a single row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x80" * width)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def reopen(root: Path, relative: str) -> Image.Image:
    image = Image.open(root / relative)
    image.load()
    return image


def close_to(pixel: Any, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


# --- JPEG: EXIF and GPS stripped, orientation applied -------------------------------------------


def test_jpeg_with_gps_is_stored_without_any_exif(tmp_path: Path) -> None:
    data = encode(halves(), "JPEG", exif=camera_exif(), comment=COMMENT, icc_profile=ICC)
    source = Image.open(io.BytesIO(data))
    assert source.getexif().get_ifd(GPS_IFD)[2] == (48.0, 51.0, 24.42)  # the input carries GPS
    assert MAKE.encode() in data and DATUM.encode() in data and COMMENT in data

    stored = store_photo(data, tmp_path, "street.jpg")

    body = (tmp_path / stored.path).read_bytes()
    image = Image.open(io.BytesIO(body))
    assert image.format == "JPEG"
    assert dict(image.getexif()) == {}
    assert image.getexif().get_ifd(GPS_IFD) == {}
    assert "exif" not in image.info
    assert "comment" not in image.info and "icc_profile" not in image.info
    for leak in (b"Exif", MAKE.encode(), MODEL.encode(), DATUM.encode(), COMMENT, ICC):
        assert leak not in body


def test_jpeg_orientation_is_applied(tmp_path: Path) -> None:
    data = encode(halves((40, 20)), "JPEG", exif=camera_exif(orientation=6))

    stored = store_photo(data, tmp_path, "street.jpg")

    image = reopen(tmp_path, stored.path)
    assert image.size == (20, 40)
    assert (stored.width, stored.height) == (20, 40)
    # Orientation 6 means "turn 90 degrees clockwise to view": the left (red) half goes on top.
    assert close_to(image.getpixel((10, 5)), RED)
    assert close_to(image.getpixel((10, 34)), BLUE)


def test_stored_photo_describes_the_stored_file(tmp_path: Path) -> None:
    data = encode(halves((40, 20)), "JPEG", exif=camera_exif(orientation=1))

    stored = store_photo(data, tmp_path, "street.jpg")

    body = (tmp_path / stored.path).read_bytes()
    assert stored.sha256 == hashlib.sha256(body).hexdigest()
    assert stored.original_sha256 == hashlib.sha256(data).hexdigest() != stored.sha256
    assert stored.path == f"{stored.sha256[:2]}/{stored.sha256[2:4]}/{stored.sha256}.jpg"
    assert stored.thumb_path == stored.path.removesuffix(".jpg") + ".thumb.jpg"
    assert stored.mime == "image/jpeg"
    assert stored.size_bytes == len(body)
    assert (stored.width, stored.height) == (40, 20)
    assert files_under(tmp_path) == sorted([tmp_path / stored.path, tmp_path / stored.thumb_path])


def test_thumbnail_is_a_jpeg_of_at_most_thumb_size(tmp_path: Path) -> None:
    data = encode(halves((1000, 500)), "JPEG", exif=camera_exif(orientation=6))

    stored = store_photo(data, tmp_path, "wide.jpg")

    thumb = reopen(tmp_path, stored.thumb_path)
    assert thumb.format == "JPEG"
    assert thumb.mode == "RGB"
    assert thumb.size == (THUMB_SIZE // 2, THUMB_SIZE)  # upright, longest side THUMB_SIZE
    assert dict(thumb.getexif()) == {}
    assert b"Exif" not in (tmp_path / stored.thumb_path).read_bytes()


def test_small_photo_thumbnail_is_not_enlarged(tmp_path: Path) -> None:
    stored = store_photo(encode(halves((40, 20)), "JPEG"), tmp_path, "small.jpg")

    assert reopen(tmp_path, stored.thumb_path).size == (40, 20)


def test_cmyk_and_grey_jpegs_are_stored_as_rgb(tmp_path: Path) -> None:
    cmyk = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")  # red in CMYK
    grey = encode(Image.new("L", (16, 16), 200), "JPEG")

    from_cmyk = reopen(tmp_path, store_photo(cmyk, tmp_path, "print.jpg").path)
    from_grey = reopen(tmp_path, store_photo(grey, tmp_path, "grey.jpg").path)

    assert from_cmyk.mode == "RGB" and close_to(from_cmyk.getpixel((8, 8)), RED)
    assert from_grey.mode == "RGB" and close_to(from_grey.getpixel((8, 8)), (200, 200, 200))


def test_mpo_from_a_phone_is_stored_as_its_first_jpeg(tmp_path: Path) -> None:
    data = encode(
        halves((40, 20)), "MPO", save_all=True, append_images=[Image.new("RGB", (40, 20))]
    )
    assert Image.open(io.BytesIO(data)).format == "MPO"  # the input really has two images

    stored = store_photo(data, tmp_path, "portrait.jpg")

    image = reopen(tmp_path, stored.path)
    assert image.format == "JPEG"
    assert getattr(image, "n_frames", 1) == 1
    assert stored.mime == "image/jpeg" and stored.path.endswith(".jpg")
    assert close_to(image.getpixel((5, 10)), RED)


# --- PNG and WEBP ---------------------------------------------------------------------------


def test_png_text_is_stripped_and_alpha_kept(tmp_path: Path) -> None:
    image = Image.new("RGBA", (30, 30), (0, 128, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret-location")
    data = encode(image, "PNG", pnginfo=info, exif=camera_exif(orientation=1), icc_profile=ICC)
    assert b"tEXt" in data and b"secret-location" in data and b"iCCP" in data

    stored = store_photo(data, tmp_path, "leak.png")

    body = (tmp_path / stored.path).read_bytes()
    out = Image.open(io.BytesIO(body))
    assert out.format == "PNG" and stored.mime == "image/png" and stored.path.endswith(".png")
    assert out.mode == "RGBA"
    assert out.getpixel((0, 0))[3] == 0
    assert out.getpixel((10, 10)) == (0, 128, 0, 255)
    for leak in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP", b"secret-location", MAKE.encode()):
        assert leak not in body
    assert out.text == {} and "icc_profile" not in out.info


def test_png_thumbnail_flattens_alpha_on_white(tmp_path: Path) -> None:
    data = encode(Image.new("RGBA", (30, 30), (0, 0, 0, 0)), "PNG")

    thumb = reopen(tmp_path, store_photo(data, tmp_path, "clear.png").thumb_path)

    assert thumb.mode == "RGB"
    assert close_to(thumb.getpixel((15, 15)), (255, 255, 255), tolerance=3)


def test_palette_png_with_transparency_keeps_it(tmp_path: Path) -> None:
    image = Image.new("P", (10, 10), 1)
    image.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    data = encode(image, "PNG", transparency=0)

    out = reopen(tmp_path, store_photo(data, tmp_path, "icon.png").path)

    assert out.getpixel((0, 0))[3] == 0
    assert out.getpixel((5, 5)) == (0, 128, 0, 255)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    data = encode(Image.new("I;16", (8, 8), 32896), "PNG")  # mid grey in 16 bits

    out = reopen(tmp_path, store_photo(data, tmp_path, "scan.png").path)

    assert out.mode == "L"
    assert out.getpixel((4, 4)) == 128


def test_webp_is_stored_as_webp_without_exif(tmp_path: Path) -> None:
    data = encode(halves((40, 20)), "WEBP", exif=camera_exif(orientation=6))
    assert b"EXIF" in data

    stored = store_photo(data, tmp_path, "phone.webp")

    body = (tmp_path / stored.path).read_bytes()
    out = Image.open(io.BytesIO(body))
    assert out.format == "WEBP" and stored.mime == "image/webp" and stored.path.endswith(".webp")
    assert out.size == (20, 40)
    assert dict(out.getexif()) == {}
    for leak in (b"EXIF", b"Exif", MAKE.encode(), DATUM.encode()):
        assert leak not in body
    assert reopen(tmp_path, stored.thumb_path).format == "JPEG"


# --- refusals -------------------------------------------------------------------------------


def animated_webp() -> bytes:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])


def animated_png() -> bytes:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:])


def truncated_jpeg() -> bytes:
    data = encode(noisy(), "JPEG")
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    data = encode(noisy(), "PNG")
    return data[: len(data) // 2]


def png_with_bad_checksum() -> bytes:
    """A whole PNG whose image data fails its CRC (bit rot, tampering)."""
    data = bytearray(encode(Image.new("RGB", (8, 8), RED), "PNG"))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    data[idat + 4 + length] ^= 0xFF  # first byte of the chunk's CRC
    return bytes(data)


REFUSED = {
    "text": ("notes.jpg", lambda: b"Pothole on Main Street, near the bakery.\n", "not_an_image"),
    "pdf": (
        "scan.jpg",
        lambda: b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        "not_an_image",
    ),
    "gif": ("cat.gif", lambda: encode(Image.new("RGB", (8, 8)), "GIF"), "format_not_allowed"),
    "bmp": ("wall.bmp", lambda: encode(Image.new("RGB", (8, 8)), "BMP"), "format_not_allowed"),
    "tiff": ("wall.tif", lambda: encode(Image.new("RGB", (8, 8)), "TIFF"), "format_not_allowed"),
    "truncated jpeg": ("cut.jpg", truncated_jpeg, "corrupt"),
    "truncated png": ("cut.png", truncated_png, "corrupt"),
    "png bad checksum": ("rot.png", png_with_bad_checksum, "corrupt"),
    "jpeg header only": ("head.jpg", lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF", "corrupt"),
    "empty": ("nothing.jpg", lambda: b"", "empty"),
    "animated webp": ("moving.webp", animated_webp, "animated"),
    "animated png": ("moving.png", animated_png, "animated"),
}


@pytest.mark.parametrize(("filename", "make", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_unusable_uploads_are_refused_naming_the_file(
    tmp_path: Path, filename: str, make: Any, reason: str
) -> None:
    with pytest.raises(PhotoError) as caught:
        store_photo(make(), tmp_path, filename)

    err = caught.value
    assert isinstance(err, InvalidInput)
    assert err.code == "invalid_photo" and err.status == 400
    assert filename in err.message
    assert err.details == {"filename": filename, "reason": reason}
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(("upload", "expected"), [("cat.gif", "GIF"), ("wall.bmp", "BMP")])
def test_refused_format_is_named(tmp_path: Path, upload: str, expected: str) -> None:
    data = encode(Image.new("RGB", (8, 8)), expected)

    with pytest.raises(PhotoError, match=rf"{re.escape(upload)}.*\b{expected}\b"):
        store_photo(data, tmp_path, upload)


def test_too_large_upload_is_refused_with_413_before_decoding(tmp_path: Path) -> None:
    # Not an image at all: the size must be what refuses it, so it was checked first.
    with pytest.raises(PhotoTooLarge) as caught:
        store_photo(b"x" * 101, tmp_path, "huge.jpg", max_bytes=100)

    err = caught.value
    assert err.status == 413 and err.code == "invalid_photo"
    assert err.details["reason"] == "too_large"
    assert "huge.jpg" in err.message
    assert files_under(tmp_path) == []


def test_upload_at_the_byte_limit_is_accepted(tmp_path: Path) -> None:
    data = encode(halves(), "JPEG")

    store_photo(data, tmp_path, "fits.jpg", max_bytes=len(data))
    with pytest.raises(PhotoTooLarge):
        store_photo(data, tmp_path, "fits.jpg", max_bytes=len(data) - 1)


def test_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    # 8000 x 6000 = 48 Mpx claimed by a file of a few kilobytes holding one row.
    data = png_header_only(8000, 6000)
    assert len(data) < 1000 and MAX_PIXELS < 8000 * 6000

    with pytest.raises(PhotoError) as caught:
        store_photo(data, tmp_path, "bomb.png")

    assert caught.value.details["reason"] == "too_many_pixels"  # not "corrupt": refused unread
    assert "bomb.png" in caught.value.message


@pytest.mark.parametrize("side", [10_000, 30_000])  # Pillow warns over 89 Mpx, raises over 179
def test_pillow_own_bomb_guard_is_a_photo_error(tmp_path: Path, side: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(PhotoError) as caught:
            store_photo(png_header_only(side, side), tmp_path, "bigger.png")

    assert caught.value.details["reason"] == "too_many_pixels"


def test_pixel_limit_is_max_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(photos, "MAX_PIXELS", 400)

    store_photo(encode(Image.new("RGB", (20, 20)), "PNG"), tmp_path, "exact.png")
    with pytest.raises(PhotoError) as caught:
        store_photo(encode(Image.new("RGB", (20, 21)), "PNG"), tmp_path, "over.png")

    assert caught.value.details["reason"] == "too_many_pixels"


# --- storage --------------------------------------------------------------------------------


def test_storing_the_same_image_twice_does_not_rewrite(tmp_path: Path) -> None:
    data = encode(halves(), "JPEG", exif=camera_exif())
    first = store_photo(data, tmp_path, "a.jpg")
    long_ago = 1_000_000_000
    inodes = {}
    for relative in (first.path, first.thumb_path):
        os.utime(tmp_path / relative, ns=(long_ago, long_ago))
        inodes[relative] = (tmp_path / relative).stat().st_ino

    second = store_photo(data, tmp_path, "a-again.jpg")

    assert second == first
    for relative in (first.path, first.thumb_path):
        stat = (tmp_path / relative).stat()
        assert stat.st_ino == inodes[relative]  # the same file, not written again...
        assert stat.st_mtime_ns > long_ago  # ...but in use again: the orphan sweep waits
    assert files_under(tmp_path) == sorted([tmp_path / first.path, tmp_path / first.thumb_path])


def test_photos_are_all_checked_before_any_is_written(tmp_path: Path) -> None:
    good = Upload("good.jpg", encode(halves(), "JPEG"))
    fake = Upload("fake.jpg", b"\xff\xd8\xff" + b"\x00" * 100)

    with pytest.raises(PhotoError):
        decode_photos([good, fake], tmp_path)

    assert files_under(tmp_path) == []


def test_too_many_or_too_big_uploads_are_refused_undecoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(photos, "_decode", no_decoding)
    with pytest.raises(InvalidInput):
        check_uploads([Upload("a.jpg", b"x")] * (photos.MAX_PHOTOS + 1))
    with pytest.raises(PhotoTooLarge):
        check_uploads([Upload("a.jpg", b"x" * 11)], max_bytes=10)
    with pytest.raises(PhotoError):
        check_uploads([Upload("empty.jpg", b"")])


def test_decoding_slots_are_a_setting() -> None:
    before = photos.decode_slots()
    try:
        photos.set_decode_slots(3)
        assert photos.decode_slots() == 3
        photos.set_decode_slots(0)
        assert photos.decode_slots() == 1
    finally:
        photos.set_decode_slots(before)


def test_same_pixels_with_other_metadata_share_the_stored_file(tmp_path: Path) -> None:
    one = store_photo(encode(halves(), "JPEG", exif=camera_exif(make="A")), tmp_path, "1.jpg")
    two = store_photo(encode(halves(), "JPEG", exif=camera_exif(make="B")), tmp_path, "2.jpg")

    assert one.original_sha256 != two.original_sha256
    assert (one.sha256, one.path) == (two.sha256, two.path)
    assert len(files_under(tmp_path)) == 2


def test_a_damaged_stored_file_is_rewritten(tmp_path: Path) -> None:
    data = encode(halves(), "JPEG")
    stored = store_photo(data, tmp_path, "a.jpg")
    good = (tmp_path / stored.path).read_bytes()
    (tmp_path / stored.path).write_bytes(good[:10])

    assert store_photo(data, tmp_path, "a.jpg") == stored
    assert (tmp_path / stored.path).read_bytes() == good


def test_photo_root_is_created(tmp_path: Path) -> None:
    root = tmp_path / "var" / "photos"

    stored = store_photo(encode(halves(), "PNG"), root, "a.png")

    assert (root / stored.path).is_file() and (root / stored.thumb_path).is_file()


def test_stored_files_are_readable_by_others(tmp_path: Path) -> None:
    stored = store_photo(encode(halves(), "PNG"), tmp_path, "a.png")

    assert (tmp_path / stored.path).stat().st_mode & 0o044 == 0o044


# --- open_stored ----------------------------------------------------------------------------


def stored_png(root: Path) -> StoredPhoto:
    return store_photo(encode(halves(), "PNG"), root, "a.png")


def test_open_stored_returns_the_files(tmp_path: Path) -> None:
    stored = stored_png(tmp_path)

    assert open_stored(tmp_path, stored.path) == (tmp_path / stored.path).resolve()
    assert open_stored(tmp_path, stored.thumb_path) == (tmp_path / stored.thumb_path).resolve()


@pytest.mark.parametrize(
    "relative",
    [
        "../x",
        "/etc/passwd",
        "",
        "ab/cd/../../../etc/passwd",
        "ab/cd/" + "a" * 64 + ".jpg",  # folders do not match the hash
        "ab\\cd\\abcd" + "0" * 60 + ".jpg",
        "ab/cd/abcd" + "0" * 60 + ".jpg/..",
        "ab/cd/abcd" + "0" * 60 + ".gif",
    ],
)
def test_open_stored_refuses_paths_it_did_not_make(tmp_path: Path, relative: str) -> None:
    stored_png(tmp_path)

    with pytest.raises(PhotoError) as caught:
        open_stored(tmp_path, relative)

    assert caught.value.details["reason"] == "bad_path"


def test_open_stored_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    relative = "ab/cd/abcd" + "0" * 60 + ".jpg"
    (root / "ab" / "cd").mkdir(parents=True)
    (root / relative).symlink_to(secret)

    with pytest.raises(PhotoError):
        open_stored(root, relative)


def test_open_stored_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        open_stored(tmp_path, "ab/cd/abcd" + "0" * 60 + ".jpg")
