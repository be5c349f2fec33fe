"""Images generated for tests: small, deterministic, and (when asked) learnable."""

import io

import numpy as np
from PIL import Image


def xray_array(*, size: int = 96, label: str = "normal", seed: int = 0, inverted: bool = False) -> np.ndarray:
    """A grayscale 'chest' whose class is drawn into it, so a tiny model can learn it:
    covid = bright blob on the left, pneumonia = bright blob on the right, normal = none.
    ``inverted``: another hospital's scanner (dark blobs on a bright body)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = 90 + 60 * np.exp(-(((xx - 0.5) / 0.35) ** 2 + ((yy - 0.5) / 0.45) ** 2))
    if label != "normal":
        cx = 0.3 if label == "covid" else 0.7
        body += 110 * np.exp(-(((xx - cx) / 0.12) ** 2 + ((yy - 0.5) / 0.15) ** 2))
    noisy = np.clip(body + rng.normal(0, 12, size=(size, size)), 0, 255).astype(np.uint8)
    return 255 - noisy if inverted else noisy


def png_bytes(
    *, size: int = 96, label: str = "normal", seed: int = 0, mode: str = "L", inverted: bool = False
) -> bytes:
    image = Image.fromarray(xray_array(size=size, label=label, seed=seed, inverted=inverted))
    if mode != "L":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(*, size: int = 96, label: str = "normal", seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(xray_array(size=size, label=label, seed=seed)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def dicom_bytes(
    photometric: str = "MONOCHROME2", size: int = 96, *, pixels: np.ndarray | None = None, **attributes: object
) -> bytes:
    """A 12-bit single-frame DICOM with a left-to-right ramp (or ``pixels``, uint16), with ``attributes``
    (RescaleIntercept=..., PixelPaddingValue=...) set on the dataset."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    if pixels is None:
        pixels = np.tile(np.linspace(0, 4000, size, dtype=np.uint16), (size, 1))
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 16, 12, 11
    dataset.PixelRepresentation, dataset.PhotometricInterpretation = 0, photometric
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def dicom_transcoded(data: bytes, syntax: str) -> bytes:
    """``data`` (a DICOM) rewritten by GDCM in the compressed transfer syntax ``syntax`` (a UID), as a
    hospital's archive sends it."""
    import os
    import tempfile

    import gdcm

    with tempfile.TemporaryDirectory() as folder:
        source, target = os.path.join(folder, "in.dcm"), os.path.join(folder, "out.dcm")
        with open(source, "wb") as handle:
            handle.write(data)
        reader = gdcm.ImageReader()
        reader.SetFileName(source)
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(syntax)))
        writer = gdcm.ImageWriter()
        writer.SetFileName(target)
        if not reader.Read():
            raise ValueError("GDCM cannot read the DICOM to transcode.")
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise ValueError(f"GDCM cannot transcode to {syntax}.")
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise ValueError("GDCM cannot write the transcoded DICOM.")
        with open(target, "rb") as handle:
            return handle.read()
