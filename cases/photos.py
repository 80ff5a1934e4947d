"""Photos of reports and of their handling: checked, stripped of metadata, stored by content hash.

An upload is decoded with Pillow, turned upright from its EXIF orientation and re-encoded from
bare pixels, so nothing the camera wrote (EXIF with GPS, XMP, comments, ICC, PNG text) survives.
Files live outside the database under a root folder, named by the SHA-256 of the stored bytes;
their rows (`photo_rows`) link them to the case and to the event that brought them.

Storing is transactional with the rows: `decode_photos` checks the count and sizes, decodes
every photo (at most `decode_slots()` at once in a process) and writes files only when all of
them passed; the files it wrote are remembered on the session and removed if its transaction
rolls back. Files no row refers to are swept later (`cases.jobs.remove_orphan_photos`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from cases.models import Photo, PhotoKind
from gridmgmt.kernel.db import AppSession
from gridmgmt.kernel.errors import InvalidInput, Message, NotFound

ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAX_BYTES = 10 * 1024 * 1024  # default size limit of an upload
MAX_PIXELS = 40_000_000  # decompression-bomb guard
THUMB_SIZE = 320  # longest side of the thumbnail, px
JPEG_QUALITY = 88
THUMB_QUALITY = 85

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_THUMB_SUFFIX = ".thumb.jpg"
_WHITE = (255, 255, 255)
WRITTEN_KEY = "gridmgmt.photos_written"  # session.info: files this transaction wrote
DEFAULT_DECODE_SLOTS = 2  # photos a process decodes at once (PHOTO_DECODE_SLOTS)
# Only names store_photo makes: "ab/cd/abcd<60 hex>[.thumb].<ext>".
STORED_NAME = re.compile(
    r"(?P<a>[0-9a-f]{2})/(?P<b>[0-9a-f]{2})/(?P=a)(?P=b)[0-9a-f]{60}(?:\.thumb)?\.(?:jpg|png|webp)"
)
# Signatures of the accepted formats, to tell a damaged photo from something that is no photo.
_SIGNATURES = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "WEBP": (b"RIFF",),
}


MAX_PHOTOS = 6  # photos at a time: a report, a result, a check


@dataclass(frozen=True)
class Upload:
    """An uploaded file: its name (for messages) and bytes."""

    filename: str
    data: bytes


class PhotoError(InvalidInput):
    """An upload that is not an acceptable photo; `details` carry `filename` and a `reason`."""

    code = "invalid_photo"
    status = 400


class PhotoTooLarge(PhotoError):
    """An upload over the byte limit, refused before it is decoded."""

    status = 413


@dataclass(frozen=True)
class StoredPhoto:
    """A photo stored under the photo root, with its thumbnail."""

    sha256: str  # of the stored (stripped) image bytes
    path: str  # relative to root, e.g. "ab/cd/<sha256>.jpg"
    thumb_path: str  # relative, e.g. "ab/cd/<sha256>.thumb.jpg"
    mime: str
    width: int
    height: int
    size_bytes: int  # stored file size
    original_sha256: str  # of the uploaded bytes (to recognise re-uploads)


@dataclass(frozen=True)
class CheckedPhoto:
    """A photo decoded, cleaned and re-encoded in memory: what `write_photo` stores."""

    stored: StoredPhoto
    body: bytes
    thumb: bytes


def check_upload(data: bytes, filename: str = "", max_bytes: int = MAX_BYTES) -> None:
    """The checks of an upload that need no decoding: not empty, not over `max_bytes`.

    Raises:
        PhotoTooLarge: `data` is over `max_bytes` (status 413).
        PhotoError: `data` is empty.
    """
    if not data:
        raise _error(filename, "empty", Message("the file is empty"))
    if len(data) > max_bytes:
        raise _error(
            filename,
            "too_large",
            Message(
                "it is %(size)s bytes, more than the %(most)s allowed",
                {"size": len(data), "most": max_bytes},
            ),
            PhotoTooLarge,
        )


def prepare_photo(data: bytes, filename: str = "", max_bytes: int = MAX_BYTES) -> CheckedPhoto:
    """Check an uploaded photo and strip its metadata, in memory (nothing is written).

    At most `decode_slots()` photos are decoded at once in a process; others wait their turn.

    Raises:
        PhotoTooLarge: `data` is over `max_bytes` (status 413).
        PhotoError: empty, not an image, a format outside ALLOWED_FORMATS, corrupt or truncated,
            more than MAX_PIXELS, or animated.
    """
    check_upload(data, filename, max_bytes)
    with _decoding():
        image, fmt = _decode(data, filename)
        clean = _convert(image, _output_mode(image, fmt))
        body = _encode(clean, fmt)
        thumb = _encode_thumbnail(clean)
    sha = hashlib.sha256(body).hexdigest()
    folder = f"{sha[:2]}/{sha[2:4]}"
    stored = StoredPhoto(
        sha256=sha,
        path=f"{folder}/{sha}.{_EXTENSIONS[fmt]}",
        thumb_path=f"{folder}/{sha}{_THUMB_SUFFIX}",
        mime=ALLOWED_FORMATS[fmt],
        width=clean.width,
        height=clean.height,
        size_bytes=len(body),
        original_sha256=hashlib.sha256(data).hexdigest(),
    )
    return CheckedPhoto(stored, body, thumb)


def write_photo(
    photo: CheckedPhoto, root: Path, written: list[tuple[Path, int]] | None = None
) -> list[tuple[Path, int]]:
    """Store a checked photo and its thumbnail under `root` (created as needed).

    Returns:
        `written` (or a new list) with the files this call wrote appended as they are written,
        each with its modification time (ns); files already there are left as they are (only
        their time is refreshed) and not listed.
    """
    written = [] if written is None else written
    for relative, body in ((photo.stored.path, photo.body), (photo.stored.thumb_path, photo.thumb)):
        mtime = _write_once(root / relative, body)
        if mtime is not None:
            written.append((root / relative, mtime))
    return written


def store_photo(
    data: bytes, root: Path, filename: str = "", max_bytes: int = MAX_BYTES
) -> StoredPhoto:
    """Check an uploaded photo, strip its metadata and store it with a JPEG thumbnail.

    Args:
        data: the uploaded bytes.
        root: folder under which photos are stored (created as needed).
        filename: the name the client gave, only used in error messages.
        max_bytes: size limit of the upload.

    Returns:
        The stored photo; storing the same image again returns the same value and writes nothing.

    Raises:
        PhotoTooLarge: `data` is over `max_bytes` (status 413).
        PhotoError: empty, not an image, a format outside ALLOWED_FORMATS, corrupt or truncated,
            more than MAX_PIXELS, or animated.
    """
    photo = prepare_photo(data, filename, max_bytes)
    write_photo(photo, root)
    return photo.stored


def open_stored(root: Path, relative: str) -> Path:
    """Return the absolute path of a stored photo or thumbnail under `root`.

    Raises:
        PhotoError: `relative` is not a name store_photo makes ('..', absolute paths, ...).
        NotFound: the name is well-formed but no such file is stored.
    """
    refused = PhotoError(
        "%(path)r is not a stored photo path.",
        details={"path": relative, "reason": "bad_path"},
        path=relative,
    )
    if not STORED_NAME.fullmatch(relative):
        raise refused
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):  # a symlink inside the root pointing out of it
        raise refused
    if not path.is_file():
        raise NotFound("No stored photo %(path)r.", details={"path": relative}, path=relative)
    return path


def _error(
    filename: str, reason: str, why: Message, cls: type[PhotoError] = PhotoError
) -> PhotoError:
    """A PhotoError whose message names the file and says why it was refused."""
    name = "".join(ch for ch in filename if ch.isprintable())[:200] or "(unnamed upload)"
    return cls(
        Message("Photo %(name)r was refused: %(why)s.", {"name": name, "why": why}),
        details={"filename": filename, "reason": reason},
    )


def _decode(data: bytes, filename: str) -> tuple[Image.Image, str]:
    """Decode `data` as an accepted, still, reasonably sized image; return it upright."""
    try:
        probe = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except UnidentifiedImageError:
        raise _error(filename, *_why_unidentified(data)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own, higher limit; the warning is raised when warnings are errors.
        raise _error(
            filename,
            "too_many_pixels",
            Message("it has more than the %(most)s pixels allowed", {"most": MAX_PIXELS}),
        ) from None
    except Exception as exc:  # Pillow's plugins raise many types on malformed headers
        raise _error(
            filename, "corrupt", Message("the image cannot be read (%(error)s)", {"error": exc})
        ) from None

    # A JPEG with extra images (previews, depth maps: MPO) is a JPEG; only its first is kept.
    fmt = "JPEG" if probe.format == "MPO" else str(probe.format)
    width, height = probe.size
    if not width or not height:
        raise _error(filename, "corrupt", Message("the image has no pixels"))
    if width * height > MAX_PIXELS:
        raise _error(
            filename,
            "too_many_pixels",
            Message(
                "it is %(width)sx%(height)s pixels, more than the %(most)s allowed",
                {"width": width, "height": height, "most": MAX_PIXELS},
            ),
        )
    if fmt != "JPEG" and getattr(probe, "n_frames", 1) > 1:
        raise _error(filename, "animated", Message("animated images are not accepted"))

    try:
        probe.verify()
        # verify() leaves the file unusable: decode again from the start.
        image = Image.open(io.BytesIO(data), formats=[fmt])
        image.load()
        upright = ImageOps.exif_transpose(image)
    except MemoryError:
        raise
    except Exception as exc:  # truncated data, bad checksums, broken EXIF...
        raise _error(
            filename,
            "corrupt",
            Message("the image is damaged or truncated (%(error)s)", {"error": exc}),
        ) from None
    return upright, fmt


def _why_unidentified(data: bytes) -> tuple[str, Message]:
    """Reason and explanation for data that no accepted format's decoder recognises."""
    accepted = {"accepted": ", ".join(ALLOWED_FORMATS)}
    if data.startswith(b"%PDF"):
        return "not_an_image", Message(
            "it is a PDF document, not an image; only %(accepted)s are accepted", accepted
        )
    try:
        with Image.open(io.BytesIO(data)) as other:
            other_format = other.format
    except Exception:  # unknown to every plugin, which is the common case
        other_format = None
    if other_format:
        return "format_not_allowed", Message(
            "it is a %(format)s image; only %(accepted)s are accepted",
            {"format": other_format, **accepted},
        )
    for fmt, signatures in _SIGNATURES.items():
        if data.startswith(signatures) and (fmt != "WEBP" or data[8:12] == b"WEBP"):
            return "corrupt", Message(
                "it looks like a %(format)s image but is damaged or truncated", {"format": fmt}
            )
    return "not_an_image", Message("it is not an image; only %(accepted)s are accepted", accepted)


def _output_mode(image: Image.Image, fmt: str) -> str:
    """Pixel mode the stored image is encoded in."""
    alpha = image.has_transparency_data
    if fmt == "JPEG":
        return "RGB"
    grey = image.mode in ("1", "L", "LA", "F") or image.mode.startswith("I")
    if fmt == "PNG" and grey:
        return "LA" if alpha else "L"
    return "RGBA" if alpha else "RGB"


def _convert(image: Image.Image, mode: str) -> Image.Image:
    """A new image in `mode` holding only the pixels of `image` (no info, EXIF, ICC or text).

    Transparency is flattened on white when `mode` has no alpha band.
    """
    if image.mode.startswith("I"):  # 16-bit grey: scale down, Pillow's convert would clip
        image = image.convert("I").point(lambda v: v / 257).convert("L")
    if mode in ("RGB", "L") and image.has_transparency_data:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    if image.mode != mode:
        image = image.convert(mode)
    clean = Image.new(mode, image.size)
    clean.paste(image)
    return clean


def _encode(image: Image.Image, fmt: str) -> bytes:
    """Encode `image` in `fmt` with no metadata."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    elif fmt == "WEBP":
        image.save(buffer, "WEBP", quality=JPEG_QUALITY)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def _encode_thumbnail(image: Image.Image) -> bytes:
    """A JPEG of `image` whose longest side is at most THUMB_SIZE, never enlarged."""
    scale = THUMB_SIZE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    _convert(image, "RGB").save(buffer, "JPEG", quality=THUMB_QUALITY, optimize=True)
    return buffer.getvalue()


def _write_once(path: Path, body: bytes) -> int | None:
    """Write `body` to `path` atomically, unless the file is already there; the written file's
    modification time (ns), or None when it was there.

    Names are content hashes, so an existing file of the right size already holds `body`; its
    time is refreshed, so that neither the orphan sweep nor a failed report that wrote it
    removes a file a report is about to use again.
    """
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size == len(body):
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)
            return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes 0600; the web server must be able to read it
        os.replace(temp, path)
        return path.stat().st_mtime_ns
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


# ---------------------------------------------------------------- decoding slots


_slots = threading.BoundedSemaphore(DEFAULT_DECODE_SLOTS)
_slot_count = DEFAULT_DECODE_SLOTS


def set_decode_slots(count: int) -> None:
    """How many photos a process decodes at once (`PHOTO_DECODE_SLOTS`, at least 1); set when
    the app starts, before any request."""
    global _slots, _slot_count
    count = max(1, int(count))
    if count != _slot_count:
        _slots, _slot_count = threading.BoundedSemaphore(count), count


def decode_slots() -> int:
    """How many photos a process decodes at once."""
    return _slot_count


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Hold one of the process's decoding slots (a decoded photo may take ~160 MB)."""
    slots = _slots
    with slots:
        yield


def check_uploads(uploads: Sequence[Upload], max_bytes: int = MAX_BYTES) -> None:
    """The checks of a batch of uploads that need no decoding: their number and sizes.

    Raises:
        InvalidInput: more than MAX_PHOTOS photos.
        PhotoError: an empty upload, or one over `max_bytes` (PhotoTooLarge).
    """
    if len(uploads) > MAX_PHOTOS:
        raise InvalidInput(
            "at most %(most)s photos at a time, not %(given)s", most=MAX_PHOTOS, given=len(uploads)
        )
    for upload in uploads:
        check_upload(upload.data, upload.filename, max_bytes)


def decode_photos(
    uploads: Sequence[Upload], root: Path, session: Session | None = None
) -> list[StoredPhoto]:
    """Check, clean and store the uploaded images: every one is decoded before any is written.

    With a `session`, the files written are removed if the session's transaction rolls back
    (files that were already there are left alone): call it after the cheap checks, inside the
    transaction that writes the photos' rows.

    Raises:
        InvalidInput: too many photos, or one that is not an accepted image.
    """
    check_uploads(uploads)
    checked = [prepare_photo(u.data, u.filename) for u in uploads]
    written: list[tuple[Path, int]] = (
        session.info.setdefault(WRITTEN_KEY, []) if session is not None else []
    )
    for photo in checked:
        write_photo(photo, root, written)  # listed as written: a failure midway is undone too
    return [photo.stored for photo in checked]


def remove_written(written: Sequence[tuple[Path, int]]) -> int:
    """Remove files a failed transaction wrote, unless another writer has touched them since
    (a report storing the same image again refreshes its time). How many were removed."""
    removed = 0
    for path, mtime in written:
        try:
            if path.stat().st_mtime_ns != mtime:
                continue
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed


@event.listens_for(AppSession, "after_commit")
def _keep_on_commit(session: Session) -> None:
    if session.get_nested_transaction() is None:  # a savepoint's release commits nothing yet
        session.info.pop(WRITTEN_KEY, None)


@event.listens_for(AppSession, "after_soft_rollback")
def _remove_on_rollback(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is not None:  # a savepoint: the files may still be kept by the rest
        return
    written = session.info.pop(WRITTEN_KEY, None)
    if written:
        remove_written(written)


def photo_rows(
    session: Session,
    case_id: int,
    stored: Sequence[StoredPhoto],
    kind: PhotoKind,
    event_id: int | None = None,
) -> list[Photo]:
    """The rows of stored photos of a case, linked to the event that brought them."""
    rows = [
        Photo(
            case_id=case_id,
            event_id=event_id,
            kind=kind.value,
            sha256=s.sha256,
            path=s.path,
            thumb_path=s.thumb_path,
            mime=s.mime,
            width=s.width,
            height=s.height,
            size_bytes=s.size_bytes,
        )
        for s in stored
    ]
    session.add_all(rows)
    session.flush()
    return rows
