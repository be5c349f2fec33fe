"""A corpus of malformed and hostile files, generated small and in memory (tests/studies/test_hostile_uploads.py).

Every variant must be refused with a 4xx and a clear message, leaving no row and no file."""

import io
import struct
import zlib
from collections.abc import Iterator
from functools import cache

import numpy as np
from PIL import Image

from tests.images import dicom_bytes, dicom_transcoded, jpeg_bytes, png_bytes

DEFLATED = "1.2.840.10008.1.2.1.99"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, idat: bytes, *, bit_depth: int = 8, color: int = 0, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@cache
def _zeros_deflated(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9)
    block = b"\0" * (1024 * 1024)
    return b"".join([*(compressor.compress(block) for _ in range(megabytes)), compressor.flush()])


def _dicom(size: int = 96, *, syntax: str = "1.2.840.10008.1.2.1", **attributes: object) -> bytes:
    """A DICOM with the given attributes overridden (None deletes one); the pixel data is written as given."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    dataset = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.Rows = dataset.Columns = size
    dataset.SamplesPerPixel, dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 16, 12, 11
    dataset.PixelRepresentation, dataset.PhotometricInterpretation = 0, "MONOCHROME2"
    dataset.PixelData = np.tile(np.linspace(0, 4000, size, dtype=np.uint16), (size, 1)).tobytes()
    for key, value in attributes.items():
        if value is None:
            if key in dataset:
                delattr(dataset, key)
        else:
            setattr(dataset, key, value)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    data = buffer.getvalue()
    if syntax != "1.2.840.10008.1.2.1":  # claim another transfer syntax for the same bytes
        data = data.replace(b"1.2.840.10008.1.2.1\0", (syntax + ("\0" if len(syntax) % 2 else "")).encode(), 1)
    return data


def _deflated_dicom_bomb(megabytes: int) -> bytes:
    """A deflated DICOM declaring 12000 x 12000 pixels whose dataset inflates to ``megabytes`` of zeros."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = DEFLATED
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, meta)
    size = struct.pack("<HH2sHH", 0x0028, 0x0010, b"US", 2, 12_000) + struct.pack(
        "<HH2sHH", 0x0028, 0x0011, b"US", 2, 12_000
    )
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = b"\0" * (1024 * 1024)
    body = b"".join(
        [compressor.compress(size), *(compressor.compress(block) for _ in range(megabytes)), compressor.flush()]
    )
    return b"\0" * 128 + b"DICM" + buffer.getvalue() + body


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(jpeg_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _pillow(format_: str, size: int = 96, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), 128, dtype=np.uint8)).save(buffer, format=format_, **options)
    return buffer.getvalue()


def _apng() -> bytes:
    frames = [Image.fromarray(np.full((96, 96), value, dtype=np.uint8)) for value in (10, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def hostile_files() -> Iterator[tuple[str, bytes]]:
    """(name, bytes) for every variant; names say what each one is."""
    png, jpeg, dicom = png_bytes(size=96), jpeg_bytes(size=96), dicom_bytes()
    # Truncated: every kind cut at many offsets before its image data is complete.
    for kind, data in (("png", png), ("jpeg", jpeg), ("dicom", dicom)):
        for offset in np.linspace(0, int(len(data) * 0.9), 200, dtype=int):
            yield f"truncated-{kind}-{offset}", data[:offset]
    # Bit flips and garbage in the headers.
    for kind, data in (("png", png),):
        for position in range(8, 33):
            broken = bytearray(data)
            broken[position] ^= 0xFF
            yield f"header-flip-{kind}-{position}", bytes(broken)
    # PNG bombs and impossible sizes, declared in the header.
    bomb_idat = _zeros_deflated(8)
    sizes = [(0, 0), (0, 96), (96, 0), (12_001, 64), (64, 12_001), (7_072, 7_072), (20_000, 20_000), (65_535, 65_535)]
    sizes += [(2**31 - 1, 1), (1, 2**31 - 1), (10_000, 10_000), (50_001, 1_000)]
    for width, height in sizes:
        for bit_depth, color in ((8, 0), (16, 0), (8, 2), (8, 6)):
            yield (
                f"png-{width}x{height}-{bit_depth}bit-color{color}",
                _png(width, height, bomb_idat, bit_depth=bit_depth, color=color),
            )
    # Too small to be an X-ray.
    for side in (1, 2, 8, 16, 32, 63):
        yield f"png-tiny-{side}", _png(side, side, zlib.compress(b"\0" * (side * (side + 1))))
        yield f"jpeg-tiny-{side}", _pillow("JPEG", side)
    # JPEG declaring huge or zero sizes in its frame header.
    for width, height in ((0, 0), (96, 0), (65_000, 65_000), (12_001, 100), (8_000, 8_000)):
        yield f"jpeg-sof-{width}x{height}", _jpeg_with_size(width, height)
    # Text chunks too big for a picture: a zTXt/iTXt decompression bomb, a long tEXt.
    ztxt = _zeros_deflated(4)
    for kind, body in (
        (b"zTXt", b"Comment\0\0" + ztxt),
        (b"iTXt", b"Comment\0\x01\0\0\0" + ztxt),
        (b"tEXt", b"Comment\0" + b"A" * (2 * 1024 * 1024)),
    ):
        for repeat in (1, 2):
            extra = _chunk(kind, body) * repeat
            yield f"png-huge-{kind.decode()}-x{repeat}", _png(96, 96, zlib.compress(b"\0" * 97 * 96), extra=extra)
    # Animated and multi-frame images.
    yield "apng-two-frames", _apng()
    for frames in (2, 3, 10):
        yield f"dicom-{frames}-frames", _dicom(64, NumberOfFrames=frames, PixelData=b"\0\0" * 64 * 64 * frames)
    # DICOM headers that lie or that the platform cannot use.
    for rows, columns in ((12_000, 12_000), (0, 96), (96, 0), (65_535, 65_535), (12_001, 64), (8_000, 8_000)):
        yield f"dicom-declares-{rows}x{columns}", _dicom(96, Rows=rows, Columns=columns)
    for bits in (1, 12, 64):
        yield f"dicom-bits-allocated-{bits}", _dicom(96, BitsAllocated=bits)
    for samples in (3, 4):
        yield f"dicom-samples-{samples}", _dicom(96, SamplesPerPixel=samples)
    for width in ("0", "-10", "0.0", "-0.5"):
        for center in ("100", "0", "-5000"):
            yield f"dicom-window-{center}-{width}", _dicom(96, WindowCenter=center, WindowWidth=width)
    yield "dicom-no-pixel-data", _dicom(96, PixelData=None)
    yield "dicom-no-rows", _dicom(96, Rows=None)
    for length in (0, 2, 100, 96 * 96):
        yield f"dicom-short-pixel-data-{length}", _dicom(96, PixelData=b"\0" * length)
    # Transfer syntaxes that are unknown, unsupported, or do not match the bytes.
    for syntax in (
        "1.2.3",
        "1.2.840.10008.1.2.4.100",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        DEFLATED,
        "",
        "x" * 40,
    ):
        yield f"dicom-syntax-{syntax[:24]}", _dicom(96, syntax=syntax)
    # Compressed pixel data (GDCM decodes it) cut short or overwritten in the middle.
    for syntax in ("1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"):
        compressed = dicom_transcoded(dicom_bytes(size=128), syntax)
        pixel_data = compressed.rindex(b"\xe0\x7f\x10\x00")  # the (7FE0,0010) Pixel Data tag
        cut = pixel_data + (len(compressed) - pixel_data) // 2
        yield f"dicom-{syntax[-4:]}-truncated", compressed[:cut]
        yield f"dicom-{syntax[-4:]}-garbled", compressed[:cut] + bytes(range(64)) + compressed[cut + 64 :]
    # Deflate bombs: a few KB that inflate to tens of MB.
    for megabytes in (4, 16, 64):
        yield f"dicom-deflate-bomb-{megabytes}mb", _deflated_dicom_bomb(megabytes)
    # Polyglots: one format's magic with another's body, or a script.
    preamble_png = png[:128].ljust(128, b"\0") + b"DICM" + b"\0" * 64
    yield "polyglot-png-preamble-dicm", preamble_png
    yield "polyglot-dicm-then-png", b"\0" * 128 + b"DICM" + png
    yield "polyglot-png-then-jpeg", png[:8] + jpeg
    yield "polyglot-jpeg-then-png", jpeg[:3] + png
    yield "polyglot-html-png-magic", b"\x89PNG\r\n\x1a\n<script>alert(1)</script>"
    yield "polyglot-png-with-trailing-zip", png + b"PK\x03\x04" + b"\0" * 200
    yield "polyglot-png-with-trailing-html", png + b"<html><script>alert(1)</script></html>"
    yield "polyglot-gif-dicm", b"GIF89a" + b"\0" * 122 + b"DICM" + b"\0" * 300
    # Formats the platform does not accept.
    for format_ in ("GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO", "PCX", "TGA"):
        yield f"format-{format_.lower()}", _pillow(format_, 96 if format_ != "ICO" else 64)
    for name, data in (
        ("empty", b""),
        ("text", b"hello, this is not an image"),
        ("html", b"<!doctype html><script>alert(1)</script>"),
        ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
        ("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"),
        ("zip", b"PK\x03\x04" + b"\0" * 100),
        ("nul", b"\0" * 1000),
        ("png-magic-only", b"\x89PNG\r\n\x1a\n"),
        ("jpeg-magic-only", b"\xff\xd8\xff"),
        ("dicm-only", b"\0" * 128 + b"DICM"),
    ):
        yield f"other-{name}", data
    # Random bytes, with and without each format's magic.
    rng = np.random.default_rng(8)
    for index in range(80):
        noise = rng.integers(0, 256, size=int(rng.integers(1, 4000)), dtype=np.uint8).tobytes()
        for prefix_name, prefix in (
            ("raw", b""),
            ("png", png[:16]),
            ("jpeg", b"\xff\xd8\xff\xe0"),
            ("dicm", b"\0" * 128 + b"DICM"),
        ):
            yield f"random-{prefix_name}-{index}", prefix + noise
