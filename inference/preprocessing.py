"""The one preprocessing function, shared by training and prediction.

Decoding turns any supported file (PNG, JPEG, 16-bit PNG, DICOM) into an 8-bit
grayscale array; ``preprocess`` turns that into the model's input. Scaling to the
backbone's range happens inside each model, so every model takes 0..255 input.
"""

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = str | Path | bytes | BinaryIO

DICOM_MAGIC_OFFSET = 128
MIN_SIDE = 64
MAX_PIXELS = 80_000_000


class ImageDecodeError(ValueError):
    """The file is not an image we can read; the message says why."""


def _is_dicom(head: bytes) -> bool:
    return len(head) >= DICOM_MAGIC_OFFSET + 4 and head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Window to the 0.5th..99.5th percentile and scale to 0..255."""
    pixels = pixels.astype(np.float32)
    low, high = np.percentile(pixels, [0.5, 99.5])
    if high <= low:
        high = low + 1.0
    scaled = (np.clip(pixels, low, high) - low) * (255.0 / (high - low))
    return scaled.round().astype(np.uint8)


def _decode_dicom(data: bytes) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        pixels = dataset.pixel_array
    except Exception as exc:  # pydicom raises many types for broken files
        raise ImageDecodeError(f"Unreadable DICOM file: {exc}") from exc
    if pixels.ndim != 2:
        raise ImageDecodeError("Only single-frame grayscale DICOM images are supported.")
    pixels = apply_voi_lut(pixels, dataset)
    gray = _to_uint8(pixels)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        gray = 255 - gray
    return gray


def _decode_pillow(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in {"PNG", "JPEG"}:
                raise ImageDecodeError(f"Unsupported image format {image.format}; upload PNG, JPEG or DICOM.")
            if image.width * image.height > MAX_PIXELS:
                raise ImageDecodeError("Image is too large (more than 80 megapixels).")
            image.load()  # raises on truncated files
            image = ImageOps.exif_transpose(image)
            if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
                return _to_uint8(np.asarray(image))
            if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (0, 0, 0, 255))
                image = Image.alpha_composite(background, image)
            return np.asarray(image.convert("L"))
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("Image is too large (more than 80 megapixels).") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("Not a readable PNG or JPEG image: the file is not an image we recognise.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"Not a readable PNG or JPEG image: {exc}.") from exc


def _read_bytes(source: ImageSource) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, str | Path):
        return Path(source).read_bytes()
    position = source.tell() if source.seekable() else None
    data = source.read()
    if position is not None:
        source.seek(position)
    return data


def _decode_checked(source: ImageSource) -> np.ndarray:
    data = _read_bytes(source)
    if not data:
        raise ImageDecodeError("The file is empty.")
    gray = _decode_dicom(data) if _is_dicom(data[: DICOM_MAGIC_OFFSET + 4]) else _decode_pillow(data)
    if min(gray.shape) < MIN_SIDE:
        raise ImageDecodeError(f"Image is too small ({gray.shape[1]}x{gray.shape[0]}); at least {MIN_SIDE} px a side.")
    return gray


def load_grayscale(source: ImageSource) -> np.ndarray:
    """Decode a chest X-ray into an (H, W) uint8 array, contrast-stretched."""
    # The same stretch for every source, so exposure differs less between hospitals.
    return _to_uint8(_decode_checked(source))


def image_check_decode(source: ImageSource) -> tuple[int, int]:
    """Decode fully and check a chest X-ray as load_grayscale does, without the contrast stretch
    (most of its cost): an upload's validation. Returns (width, height)."""
    gray = _decode_checked(source)
    return gray.shape[1], gray.shape[0]


def preprocess(gray: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8 → (size, size, 3) float32 in 0..255: the model's input."""
    resized = Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    array = np.asarray(resized, dtype=np.float32)
    return np.repeat(array[:, :, None], 3, axis=2)


def load_and_preprocess(source: ImageSource, size: int) -> np.ndarray:
    return preprocess(load_grayscale(source), size)


def display_image(source: ImageSource, *, max_side: int = 2048, image_format: str = "PNG") -> bytes:
    """An 8-bit rendition for browsers: DICOM files cannot be shown as they are, and lists need thumbnails."""
    image = Image.fromarray(load_grayscale(source))
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()
