"""The one preprocessing function shared by training and prediction."""

import io
import logging

import numpy as np
import pytest
from PIL import Image

from inference.preprocessing import ImageDecodeError, load_grayscale, preprocess
from tests.images import dicom_bytes, dicom_transcoded, jpeg_bytes, png_bytes, xray_array


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_preprocess_returns_three_equal_channels_in_0_255_at_the_model_size():
    array = preprocess(load_grayscale(png_bytes(size=100)), 48)
    assert array.shape == (48, 48, 3) and array.dtype == np.float32
    assert np.array_equal(array[:, :, 0], array[:, :, 2])
    assert array.min() >= 0 and array.max() <= 255


def test_sixteen_bit_png_is_windowed_to_the_full_8_bit_range_not_clipped():
    pixels = np.linspace(1000, 3000, 128 * 128).reshape(128, 128).astype(np.uint16)
    gray = load_grayscale(_png(Image.fromarray(pixels)))
    assert gray.dtype == np.uint8
    assert gray.min() == 0 and gray.max() == 255
    assert len(np.unique(gray)) > 200


def test_rgb_and_grayscale_versions_of_one_image_preprocess_alike():
    gray = load_grayscale(png_bytes())
    rgb = load_grayscale(png_bytes(mode="RGB"))
    assert np.abs(gray.astype(int) - rgb.astype(int)).max() <= 1


def test_exif_orientation_is_applied():
    image = Image.fromarray(xray_array(size=64)).resize((64, 128))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    assert load_grayscale(buffer.getvalue()).shape == (64, 128)


def test_monochrome1_dicom_is_inverted():
    normal = load_grayscale(dicom_bytes("MONOCHROME2"))
    inverted = load_grayscale(dicom_bytes("MONOCHROME1"))
    assert normal[0, 0] < normal[0, -1]
    assert inverted[0, 0] > inverted[0, -1]


@pytest.mark.parametrize(
    "syntax",
    [
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1, what CR/DX archives mostly send
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    ],
)
def test_a_compressed_dicom_decodes_to_the_same_pixels_as_the_uncompressed_one(syntax):
    original = dicom_bytes(size=128)
    compressed = dicom_transcoded(original, syntax)
    assert len(compressed) < len(original)
    assert np.array_equal(load_grayscale(compressed), load_grayscale(original))


def test_a_damaged_compressed_dicom_is_refused_naming_its_compression_without_an_error_in_the_log(caplog):
    compressed = dicom_transcoded(dicom_bytes(size=128), "1.2.840.10008.1.2.4.70")
    middle = compressed.rindex(b"\xe0\x7f\x10\x00") + (len(compressed) - compressed.rindex(b"\xe0\x7f\x10\x00")) // 2
    damaged = compressed[:middle] + bytes(range(64)) + compressed[middle + 64 :]
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(ImageDecodeError, match="the JPEG Lossless SV1 stream is damaged"),
    ):
        load_grayscale(damaged)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def _chest(size: int = 128) -> np.ndarray:
    """0..1: dark lungs in a brighter body, a bright spine down the middle."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 0.6)
    image[
        (((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1)
        | (((xx - 0.7) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1)
    ] = 0.15
    image[:, int(0.47 * size) : int(0.53 * size)] = 0.95
    return image


def _spine_and_lung(gray: np.ndarray) -> tuple[float, float]:
    """Mean gray of the spine and of the left lung of a 128 px _chest."""
    return gray[40:88, 62:66].mean(), gray[50:78, 32:45].mean()


def test_a_dicom_window_is_applied_to_the_rescaled_values_not_the_stored_ones():
    stored = (_chest() * 2000 + 1000).astype(np.uint16)  # rescaled: -1000..1000, the window's units
    data = dicom_bytes(pixels=stored, RescaleSlope=1, RescaleIntercept=-2000, WindowCenter=0, WindowWidth=2000)
    spine, lung = _spine_and_lung(load_grayscale(data))
    assert spine > 200 and lung < 80  # was all black: the window was laid on the stored values


def test_dicom_padding_is_left_out_of_the_stretch_and_shown_black_also_after_de_identification():
    from studies.services import image_check

    stored = (_chest() * 4095).astype(np.uint16)
    stored[:, :16] = stored[:, -16:] = 65535  # outside the collimated field
    data = dicom_bytes(pixels=stored, BitsStored=16, HighBit=15, PixelPaddingValue=65535)
    for gray in (load_grayscale(data), load_grayscale(image_check(file=io.BytesIO(data)).data)):
        spine, lung = _spine_and_lung(gray)
        assert spine > 200 and lung < 80  # was spine 15, lung 2: the padding took the whole range
        assert gray[:, :16].max() == 0


def test_a_12_bit_lossy_jpeg_dicom_is_refused_saying_what_to_send_instead():
    compressed = dicom_transcoded(dicom_bytes(size=128), "1.2.840.10008.1.2.4.51")  # 12 bits stored
    with pytest.raises(ImageDecodeError, match=r"12-bit lossy JPEG .* lossless syntax"):
        load_grayscale(compressed)


def test_a_for_processing_dicom_is_refused_saying_what_to_send_instead():
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    dataset.PresentationIntentType = "FOR PROCESSING"
    dataset.PixelIntensityRelationship = "LIN"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageDecodeError, match=r"'FOR PROCESSING' image.*send the 'FOR PRESENTATION' image"):
        load_grayscale(buffer.getvalue())
    dataset.PresentationIntentType = "FOR PRESENTATION"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    assert load_grayscale(buffer.getvalue()).shape == (dataset.Rows, dataset.Columns)


def test_a_dicom_dataset_without_the_file_header_is_refused_saying_what_it_is():
    import pydicom
    from pydicom.filebase import DicomBytesIO

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    raw = DicomBytesIO()
    raw.is_little_endian, raw.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(raw, dataset)  # no preamble, no 'DICM', no file meta
    with pytest.raises(ImageDecodeError, match="without the DICOM file header"):
        load_grayscale(raw.getvalue())


def test_a_phone_cameras_multi_picture_jpeg_is_read_as_its_first_picture():
    photo = Image.fromarray(xray_array(size=160))
    buffer = io.BytesIO()
    photo.save(buffer, format="MPO", save_all=True, append_images=[photo.resize((80, 80))])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    assert load_grayscale(buffer.getvalue()).shape == (160, 160)


def _png16(values: np.ndarray, colour_type: int, channels: int) -> bytes:
    """A 16-bit PNG (Pillow writes none in colour) holding ``values`` in every colour channel, opaque."""
    import struct
    import zlib

    pixels = np.repeat(values.astype(">u2")[:, :, None], channels, axis=2)
    if colour_type in {4, 6}:
        pixels[:, :, -1] = 65535  # opaque
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", values.shape[1], values.shape[0], 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("colour_type, channels", [(2, 3), (4, 2), (6, 4)])
def test_a_16_bit_colour_png_is_read_when_its_high_bytes_hold_the_picture_and_refused_when_they_do_not(
    colour_type, channels
):
    twelve_bit = (xray_array(size=96).astype(np.uint16) * 16) % 4096  # a detector's 12 bits: 0..4095
    with pytest.raises(ImageDecodeError, match=r"16-bit colour channels.*keep only \d+ gray levels"):
        load_grayscale(_png16(twelve_bit, colour_type, channels))
    full_range = xray_array(size=96).astype(np.uint16) * 257  # the 16 bits used: the high byte is the picture
    assert np.array_equal(load_grayscale(_png16(full_range, colour_type, channels)), load_grayscale(png_bytes(size=96)))


def test_an_image_without_any_contrast_is_refused():
    transparent = Image.fromarray(np.stack([xray_array()] * 3 + [np.zeros((96, 96), np.uint8)], axis=-1), "RGBA")
    buffer = io.BytesIO()
    transparent.save(buffer, format="PNG")
    with pytest.raises(ImageDecodeError, match="no contrast"):
        load_grayscale(buffer.getvalue())


def test_a_cut_off_compressed_dicom_is_refused_as_damaged_not_as_holding_no_image():
    compressed = dicom_transcoded(dicom_bytes(size=128), "1.2.840.10008.1.2.4.90")
    with pytest.raises(ImageDecodeError, match="damaged or cut short"):
        load_grayscale(compressed[:-200])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello", "Not a readable PNG or JPEG image"),
        (jpeg_bytes()[:400], "Not a readable PNG or JPEG image"),
        (b"", "empty"),
        (png_bytes(size=40), "too small"),
    ],
    ids=["text", "truncated-jpeg", "empty", "too-small"],
)
def test_unreadable_input_raises_a_clear_decode_error(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        load_grayscale(data)


def test_gif_is_refused_with_the_supported_formats_named():
    buffer = io.BytesIO()
    Image.fromarray(xray_array(size=96)).save(buffer, format="GIF")
    with pytest.raises(ImageDecodeError, match="upload PNG, JPEG or DICOM"):
        load_grayscale(buffer.getvalue())


def test_a_png_claiming_a_huge_size_is_refused_without_decoding_it():
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )
    with pytest.raises(ImageDecodeError, match="too large"):
        load_grayscale(bomb)


def _stretch_by_float_percentiles(pixels: np.ndarray) -> np.ndarray:
    """The stretch as first written (np.percentile on floats): the lookup-table path must equal it."""
    values = pixels.astype(np.float32)
    low, high = np.percentile(values, [0.5, 99.5])
    high = max(high, low + 1.0)
    return ((np.clip(values, low, high) - low) * (255.0 / (high - low))).round().astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_integer_images_take_a_lookup_table_stretch_equal_to_the_float_one(seed):
    from inference.preprocessing import _to_uint8

    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(64, 300)), int(rng.integers(64, 300)))
    cases = [
        rng.integers(0, 256, shape, dtype=np.uint8),
        rng.normal(120, 30, shape).clip(0, 255).astype(np.uint8),  # x.5 ties after scaling occur here
        rng.integers(0, 4096, shape, dtype=np.uint16),
        rng.integers(0, 65536, shape, dtype=np.uint16),
        np.full(shape, seed * 7, dtype=np.uint8),  # flat: high == low
        xray_array(size=shape[0]).astype(np.uint8),
    ]
    for pixels in cases:
        assert np.array_equal(_to_uint8(pixels), _stretch_by_float_percentiles(pixels)), pixels.dtype
        padding = rng.random(pixels.shape) < 0.2  # percentiles of the other pixels only, the stretch applied to all
        values = pixels.astype(np.float32)
        low, high = np.percentile(values[~padding], [0.5, 99.5])
        high = max(high, low + 1.0)
        expected = ((np.clip(values, low, high) - low) * (255.0 / (high - low))).round().astype(np.uint8)
        assert np.array_equal(_to_uint8(pixels, ignore=padding), expected), pixels.dtype


def test_an_identity_rescale_keeps_the_exact_integer_stretch():
    """Slope 1 and intercept 0, on most DX and CR files: pydicom's modality LUT would make floats of the
    pixels, and the stretch's slow float path gave the same image 4x slower at 3000 px."""
    from unittest import mock

    import inference.preprocessing as preprocessing

    plain, identity = dicom_bytes(size=128), dicom_bytes(size=128, RescaleSlope=1, RescaleIntercept=0)
    calls = []
    for data in (plain, identity):
        with mock.patch.object(preprocessing, "_to_uint8_lookup", wraps=preprocessing._to_uint8_lookup) as lookup:
            calls.append((load_grayscale(data), lookup.call_count))
    assert np.array_equal(calls[0][0], calls[1][0])
    assert calls[1][1] == calls[0][1]  # the same lookup-table path, not the float one
