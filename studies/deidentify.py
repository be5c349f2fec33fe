"""De-identification at the door: what is stored is rebuilt from the pixels and an allow-list, never the upload.

DICOM: DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile, applied by construction with pydicom:
a new dataset holds only the attributes the platform needs (ALLOWED below: the image pixel module, windowing, view),
every UID in it is replaced by an HMAC of the original under a per-deployment key (the same study gives the same
UIDs within a source), the patient is a pseudonym, PatientIdentityRemoved is YES and DeidentificationMethod and its
code sequence (DCM 113100) say how. Every other attribute of the upload, private tags, the preamble and the file
meta information are dropped, so none of the Annex E attributes (names, IDs, dates, addresses, institutions,
physicians, accession numbers, free text) can survive. Pixels are written uncompressed (Explicit VR Little
Endian) from the decoded array, so nothing can hide in an encapsulated stream either.

PNG and JPEG: the file's own coded pixels kept as they are, every metadata container dropped (image_clean, by an
allow-list of the segments and chunks that code pixels), so nothing is lost to a second compression. A file Pillow
turned upright (EXIF or XMP orientation), or one the walkers below do not follow, is re-encoded from the decoded
pixels instead (pixels_reencode).

Free-text inputs: ``patient_ref`` must look like a pseudonym; ``notes`` that look like identifiers are refused.
"""

import hashlib
import hmac
import io
import re
import string
import zlib
from dataclasses import dataclass

import numpy as np
from django.core.exceptions import ValidationError
from PIL import Image

from inference.preprocessing import PNG_SIGNATURE, applied_orientation, is_dicom

DEIDENTIFICATION_METHOD = "PS3.15 Annex E Basic Profile, allow-list (cxr-platform)"  # LO: 64 chars at most
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
# What the platform reads from a DICOM: the image pixel module, the modality and VOI LUT (windowing), and the view.
ALLOWED = (
    "SOPClassUID",
    "Modality",
    "ViewPosition",
    "PatientOrientation",
    "ImageLaterality",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PresentationLUTShape",
    "LossyImageCompression",
    "BurnedInAnnotation",
)
# Sequences kept with only these attributes in each item (LUTExplanation, free text, is dropped).
ALLOWED_SEQUENCES = {
    "ModalityLUTSequence": ("LUTDescriptor", "ModalityLUTType", "LUTData"),
    "VOILUTSequence": ("LUTDescriptor", "LUTData"),
}
UID_ROOT = "2.25."  # UUID-derived UIDs (PS3.5 B.2): no organisation root needed
PSEUDONYM_LETTERS = string.ascii_lowercase  # no digits: a pseudonym never looks like a date or a number

PATIENT_REF_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
DATE_PATTERNS = (
    re.compile(r"(?<!\d)(1[89]|20)\d\d[-/._ ]?(0[1-9]|1[0-2])[-/._ ]?(0[1-9]|[12]\d|3[01])(?!\d)"),
    re.compile(r"(?<!\d)(0?[1-9]|[12]\d|3[01])[-/.](0?[1-9]|1[0-2])[-/.]((1[89]|20)?\d\d)(?!\d)"),
    re.compile(
        r"\b\d{1,2}\s*(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s*(1[89]|20)\d\d\b", re.IGNORECASE
    ),
)
LONG_NUMBER = re.compile(r"\d{7,}")
DICOM_NAME = re.compile(r"[A-Za-z]\^[A-Za-z]|[A-Za-z]+\^")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


# What dicom_deidentify writes besides ALLOWED.
_WRITTEN = {
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "PatientID",
    "PatientName",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
}


@dataclass(frozen=True)
class Deidentified:
    data: bytes
    suffix: str
    patient_ref: str = ""  # a pseudonym derived from the file's patient ID, when it has one
    hold_reason: str = ""  # why a person must look at it before it is used


def _digest(key: str, *parts: str) -> bytes:
    return hmac.new(key.encode(), "\x1f".join(parts).encode(), hashlib.sha256).digest()


def uid_pseudonym(*, key: str, namespace: str, uid: str) -> str:
    """The same original UID gives the same replacement within a namespace (a source), and nothing else does."""
    return UID_ROOT + str(int.from_bytes(_digest(key, "uid", namespace, uid)[:16], "big"))


def patient_pseudonym(*, key: str, namespace: str, patient_id: str) -> str:
    """A pseudonymous patient key for a DICOM patient ID: same patient and source, same pseudonym."""
    digest = _digest(key, "patient", namespace, patient_id.strip())
    return "dcm-" + "".join(PSEUDONYM_LETTERS[byte % 26] for byte in digest[:16])


def patient_ref_check(ref: str) -> str:
    """A patient_ref must be a pseudonym: no name, no date, no hospital number. ValidationError says why."""
    ref = ref.strip()
    if not ref:
        return ref
    problem = _identifier_in(ref)
    if problem or not PATIENT_REF_PATTERN.match(ref):
        raise ValidationError(
            {
                "patient_ref": (
                    f"patient_ref must be a pseudonym ({problem or 'letters, digits and . _ : - only, no spaces'}). "
                    "Use your site's study key, e.g. P-0042 or site:3f9a1c; never a name, date or hospital number."
                )
            }
        )
    return ref


def notes_check(notes: str, *, field: str = "notes") -> str:
    """Refuse free text (an upload's notes, a reader's comment or reason, shown to other readers) that
    looks like it carries an identifier; ValidationError on ``field`` says what was seen."""
    problem = _identifier_in(notes)
    if problem:
        raise ValidationError(
            {
                field: f"The words of '{field}' look like they contain a patient identifier ({problem}); "
                "remove them and resend."
            }
        )
    return notes


def _identifier_in(text: str) -> str:
    if DICOM_NAME.search(text):
        return "a name written as FAMILY^GIVEN"
    if any(pattern.search(text) for pattern in DATE_PATTERNS):
        return "a date"
    if LONG_NUMBER.search(text):
        return "a number of 7 or more digits, like a hospital or phone number"
    if EMAIL.search(text):
        return "an e-mail address"
    return ""


def dicom_deidentify(dataset, *, key: str, namespace: str, patient_ref: str = "") -> Deidentified:
    """A new DICOM built from ``dataset`` (already checked and decoded) as the module docstring describes."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    original_patient = str(dataset.get("PatientID", "") or "").strip()
    pseudonym = patient_ref or (
        patient_pseudonym(key=key, namespace=namespace, patient_id=original_patient) if original_patient else ""
    )
    clean = Dataset()
    for keyword in ALLOWED:
        if keyword in dataset:
            clean[keyword] = dataset[keyword]
    for keyword, item_keywords in ALLOWED_SEQUENCES.items():
        if keyword in dataset:
            items = []
            for item in dataset[keyword].value:
                kept = Dataset()
                for item_keyword in item_keywords:
                    if item_keyword in item:
                        kept[item_keyword] = item[item_keyword]
                items.append(kept)
            setattr(clean, keyword, Sequence(items))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        original = str(dataset.get(keyword, "") or "") or pydicom.uid.generate_uid()
        setattr(clean, keyword, uid_pseudonym(key=key, namespace=namespace, uid=original))
    clean.SOPClassUID = str(dataset.get("SOPClassUID", "") or "1.2.840.10008.5.1.4.1.1.1.1")
    clean.PatientID = pseudonym
    clean.PatientName = pseudonym
    clean.PatientIdentityRemoved = "YES"
    clean.DeidentificationMethod = DEIDENTIFICATION_METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
    clean.DeidentificationMethodCodeSequence = Sequence([code])
    pixels = np.ascontiguousarray(dataset.pixel_array)  # decoded once already by the upload check (cached)
    clean.PixelData = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    clean["PixelData"].VR = "OW" if int(clean.BitsAllocated) > 8 else "OB"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = clean.SOPClassUID
    meta.MediaStorageSOPInstanceUID = clean.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    clean.file_meta = meta
    clean.preamble = b"\0" * 128
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, clean, enforce_file_format=True)
    hold = ""
    if str(dataset.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        hold = (
            "Held for a human decision: the DICOM header says BurnedInAnnotation=YES, so text (possibly a name or "
            "date) may be burned into the pixels. A reviewer must check the image before it is predicted or used."
        )
    return Deidentified(data=buffer.getvalue(), suffix="dcm", patient_ref=pseudonym, hold_reason=hold)


_JPEG_KEPT_APPS = {0xE0: b"JFIF\0", 0xEE: b"Adobe"}  # APP0 JFIF (density only), APP14 (the colour transform)
_JPEG_NO_LENGTH = {0x01, 0xD8, *range(0xD0, 0xD8)}  # TEM, SOI, RSTn: markers without a segment
# Segments that code the pixels: SOFn, DHT, DAC (0xC0-0xCF but JPG), DQT, DNL, DRI, DHP, EXP, SOS. Anything else
# (APPn, COM; the JPGn extensions and reserved markers, which libjpeg refuses anyway) can carry text: dropped.
_JPEG_CODING = {*range(0xC0, 0xC8), *range(0xC9, 0xD0), 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF}
_PNG_KEPT = {b"IHDR", b"PLTE", b"tRNS", b"sBIT", b"IDAT", b"IEND"}


def image_clean(data: bytes, image: Image.Image) -> Deidentified:
    """A PNG or JPEG upload without its metadata, its coded pixels untouched. ``image`` is the upload as
    pillow_open decoded it: one it turned upright (an orientation in EXIF or XMP, as Pillow reads them), and one
    whose structure this module does not follow, is re-encoded from those pixels instead."""
    png = data.startswith(PNG_SIGNATURE)
    if applied_orientation(image) == 1:
        try:
            return Deidentified(data=_stripped(data), suffix="png" if png else "jpg")
        except ValueError:  # a structure the decoder tolerated and this parser does not
            pass
    return pixels_reencode(image, source_format="PNG" if png else "JPEG")


def _stripped(data: bytes) -> bytes:
    """A PNG or JPEG without its metadata (ValueError where the walker cannot follow it)."""
    return _png_strip(data) if data.startswith(PNG_SIGNATURE) else _jpeg_strip(data)


def _jpeg_strip(data: bytes) -> bytes:
    """SOI, every table, frame and scan segment and their entropy-coded data as they are, then EOI; APP0 JFIF
    without its thumbnail and APP14 Adobe; no other APPn (EXIF, XMP, ICC, MPF, maker notes) or COM, nothing after
    the first EOI (an MPO's further pictures, trailers). ValueError for anything but a well-formed marker
    structure."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("no SOI")
    out, pos, end = [b"\xff\xd8"], 2, len(data)
    while True:
        if pos >= end or data[pos] != 0xFF:
            raise ValueError(f"no marker at byte {pos}")
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos] if pos < end else None
        if marker == 0xD9:
            out.append(b"\xff\xd9")
            return b"".join(out)
        if marker is None or pos + 2 >= end:
            raise ValueError("cut short")
        if marker in _JPEG_NO_LENGTH or marker == 0x00:
            raise ValueError(f"marker {marker:#x} outside a scan")
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        if length < 2 or pos + 1 + length > end:
            raise ValueError("segment length")
        payload, pos = data[pos + 3 : pos + 1 + length], pos + 1 + length
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            magic = _JPEG_KEPT_APPS.get(marker)
            if magic and payload.startswith(magic) and len(payload) >= (14 if marker == 0xE0 else 12):
                payload = payload[:12] + b"\0\0" if marker == 0xE0 else payload[:12]  # no thumbnail; Adobe's 12 bytes
                out.append(bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload)
            continue
        if marker not in _JPEG_CODING:
            continue
        if marker == 0xDC and length != 4:  # DNL is a line count; decoders skip any longer one unread
            raise ValueError("DNL segment of the wrong length")
        out.append(bytes([0xFF, marker]) + length.to_bytes(2, "big") + payload)
        if marker == 0xDA:  # a scan: entropy-coded data up to the next marker that is not a stuffed 0 or RSTn
            start = pos
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= end:
                    raise ValueError("scan cut short")
                following = data[pos + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    pos += 2
                elif following == 0xFF:
                    pos += 1
                else:
                    break
            out.append(data[start:pos])


def _png_strip(data: bytes) -> bytes:
    """The signature and the chunks that code the pixels (IHDR, IDAT, IEND; PLTE of a palette image; tRNS and sBIT
    of their sizes) as they are; every other chunk (tEXt, zTXt, iTXt, eXIf, tIME, iCCP, private ones) and anything
    after IEND dropped. ValueError for a kept chunk larger than its content can be, or compressed pixel data with
    bytes after its end (room for other bytes)."""
    if data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise ValueError("IHDR is not the first chunk")
    bit_depth, colour_type = data[24], data[25]
    limits = {
        b"IHDR": 13,
        b"IEND": 0,
        b"PLTE": 3 * min(2**bit_depth, 256),
        b"sBIT": 4,
        b"tRNS": {0: 2, 2: 6, 3: min(2**bit_depth, 256)}.get(colour_type, 0),
    }
    out, idat, pos = [data[:8]], [], 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, chunk_end = data[pos + 4 : pos + 8], pos + 12 + length
        if chunk_end > len(data):
            raise ValueError("chunk cut short")
        if kind in _PNG_KEPT and not (kind == b"PLTE" and colour_type != 3):  # a suggested palette: dropped
            if length > limits.get(kind, length):
                raise ValueError(f"{kind.decode()} chunk larger than its content")
            out.append(data[pos:chunk_end])
            if kind == b"IDAT":
                idat.append(data[pos + 8 : chunk_end - 4])
        if kind == b"IEND":
            _zlib_stream_exact(b"".join(idat))
            return b"".join(out)
        pos = chunk_end
    raise ValueError("no IEND")


def _zlib_stream_exact(compressed: bytes) -> None:
    """ValueError unless ``compressed`` is one zlib stream that ends where the data ends (a decoder ignores what
    follows the stream's end, so bytes there would be kept unseen). The output is thrown away as it comes."""
    stream = zlib.decompressobj()
    pending = compressed
    try:
        while pending and not stream.eof:
            stream.decompress(pending, 1 << 20)
            pending = stream.unconsumed_tail
    except zlib.error as exc:
        raise ValueError(f"compressed pixel data: {exc}") from exc
    if not stream.eof or stream.unused_data or pending:
        raise ValueError("bytes after the end of the compressed pixel data")


def pixels_reencode(image: Image.Image, *, source_format: str) -> Deidentified:
    """A PNG or JPEG rebuilt from the decoded pixels alone: no text chunk, EXIF, ICC profile or comment survives."""
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
    clean = Image.frombytes(image.mode, image.size, image.tobytes())  # pixels only: ``info`` is not copied
    buffer = io.BytesIO()
    if source_format == "JPEG" and clean.mode in {"L", "RGB", "CMYK"}:
        clean.save(buffer, format="JPEG", quality=95)
        return Deidentified(data=buffer.getvalue(), suffix="jpg")
    clean.save(buffer, format="PNG", compress_level=1)  # lossless; level 6 cost 4x in the upload request
    return Deidentified(data=buffer.getvalue(), suffix="png")


def stored_file_is_deidentified(data: bytes) -> bool:
    """Whether a stored file is one this module wrote (files stored before it existed are not)."""
    import pydicom

    if is_dicom(data):
        try:
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except Exception:  # unreadable: treat as not de-identified, the export rewrites it or skips it
            return False
        return (
            str(header.get("PatientIdentityRemoved", "")) == "YES"
            and str(header.get("DeidentificationMethod", "")) == DEIDENTIFICATION_METHOD
            and set(header.dir()) <= {*ALLOWED, *ALLOWED_SEQUENCES, *_WRITTEN}
        )
    try:  # this module's files are their own clean form: no container that could hold text (or an orientation)
        return _stripped(data) == data
    except ValueError:
        return False
