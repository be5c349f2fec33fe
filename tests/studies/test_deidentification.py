"""De-identification at the door: no identifier of an upload reaches the media root, the database or an export."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from PIL import Image, PngImagePlugin

from studies.deidentify import DEIDENTIFICATION_METHOD
from studies.models import Patient, Review, Study
from studies.services import study_release
from tests.factories import StudyFactory, reviewer, site_named
from tests.images import dicom_bytes, xray_array
from training.models import DatasetSnapshot, SnapshotItem
from training.services.exports import snapshot_export_zip

URL = "/api/studies/"
IDENTIFIERS = {
    "PatientName": "DOE^JOHNATHAN",
    "PatientID": "MRN-4711-QX",
    "PatientBirthDate": "19570412",
    "PatientAddress": "12 Elmwood Street, Springfield",
    "InstitutionName": "Saint Exemplar Hospital",
    "InstitutionAddress": "1 Hospital Road, Shelbyville",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "AccessionNumber": "ACC-99887766",
    "OtherPatientIDs": "NHS-123-456-7890",
    "StudyDescription": "CHEST PA for Johnathan Doe",
    "OperatorsName": "TECH^TRACY",
}
ORIGINAL_UIDS = {
    "StudyInstanceUID": "1.2.826.0.1.3680043.2.1125.777.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.2.1125.777.2",
}


def _identified_dicom(*, patient_id: str = IDENTIFIERS["PatientID"], seed: int = 0, **extra: str) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes()))
    for keyword, value in {**IDENTIFIERS, **ORIGINAL_UIDS, "PatientID": patient_id, **extra}.items():
        setattr(dataset, keyword, value)
    dataset.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.777.3.{seed}"
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.StudyDate = "20240105"
    dataset.add_new(0x00091010, "LO", "Private: Johnathan Doe ward 7")  # a private tag
    pixels = np.tile(np.linspace(0, 4000, 96, dtype=np.uint16), (96, 1))
    pixels[seed % 96, :] = 17
    dataset.PixelData = pixels.tobytes()
    dataset.preamble = b"Saint Exemplar Hospital".ljust(128, b"\0")
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _needles() -> list[bytes]:
    words = ["DOE", "JOHNATHAN", "Johnathan", "MRN-4711", "19570412", "Elmwood", "Springfield", "Exemplar"]
    words += ["Shelbyville", "HOUSE", "GREGORY", "99887766", "NHS-123", "TECH^TRACY", "20240105", "ward 7"]
    return [word.encode() for word in words] + [uid.encode() for uid in ORIGINAL_UIDS.values()]


def _found_in(data: bytes) -> list[bytes]:
    return [needle for needle in _needles() if needle in data]


def _media_bytes(media_root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in media_root.rglob("*") if p.is_file()}


def _database_dump() -> bytes:
    out = io.StringIO()
    call_command("dumpdata", "studies", "training", stdout=out)
    return out.getvalue().encode()


def _upload(client, data: bytes, name: str = "x.dcm", **fields):
    return client.post(URL, {"image": SimpleUploadedFile(name, data), **fields}, format="multipart")


def _export(studies: list[Study]) -> dict[str, bytes]:
    snapshot = DatasetSnapshot.objects.create(content_hash="x" * 64)
    for study in studies:
        SnapshotItem.objects.create(snapshot=snapshot, study=study, study_key=study.pk, label="normal", split="train")
    with zipfile.ZipFile(snapshot_export_zip(snapshot=snapshot)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.django_db
def test_dicom_identifiers_reach_neither_the_media_root_the_database_nor_an_export(
    api_client, uploader_user, media_root
):
    api_client.force_authenticate(uploader_user)
    response = _upload(api_client, _identified_dicom(), source="site-a", view="PA")
    assert response.status_code == 201, response.content
    assert _found_in(response.content) == []

    study = Study.objects.get()
    stored = pydicom.dcmread(study.image.path)
    assert stored.PatientIdentityRemoved == "YES"
    assert stored.DeidentificationMethod == DEIDENTIFICATION_METHOD
    assert stored.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert stored.PatientID == study.patient.ref and study.patient.ref.startswith("dcm-")
    assert stored.StudyInstanceUID.startswith("2.25.") and stored.StudyInstanceUID not in ORIGINAL_UIDS.values()
    assert stored.preamble == b"\0" * 128
    assert np.array_equal(stored.pixel_array, pydicom.dcmread(io.BytesIO(_identified_dicom())).pixel_array)

    leaks = {path: _found_in(data) for path, data in _media_bytes(media_root).items()}
    assert {path: found for path, found in leaks.items() if found} == {}
    assert _found_in(_database_dump()) == []
    exported = _export([study])
    assert {name: _found_in(data) for name, data in exported.items() if _found_in(data)} == {}
    assert exported[f"images/normal/study-{study.pk}.dcm"] == Path(study.image.path).read_bytes()  # as stored


@pytest.mark.django_db
def test_the_same_patient_gets_the_same_pseudonym_and_uids_within_a_source_and_others_elsewhere(
    api_client, uploader_user
):
    api_client.force_authenticate(uploader_user)
    first = _upload(api_client, _identified_dicom(seed=1), source="site-a").json()
    second = _upload(api_client, _identified_dicom(seed=2), source="site-a").json()
    elsewhere = _upload(api_client, _identified_dicom(seed=3), source="site-b").json()
    other_patient = _upload(api_client, _identified_dicom(seed=4, patient_id="MRN-0815-ZZ"), source="site-a").json()

    assert first["patient_ref"] == second["patient_ref"]
    assert elsewhere["patient_ref"] != first["patient_ref"]
    assert other_patient["patient_ref"] != first["patient_ref"]
    assert Patient.objects.count() == 3
    one, two = (pydicom.dcmread(Study.objects.get(pk=body["id"]).image.path) for body in (first, second))
    assert one.StudyInstanceUID == two.StudyInstanceUID and one.SOPInstanceUID != two.SOPInstanceUID


@pytest.mark.django_db
def test_png_text_chunks_and_jpeg_exif_are_not_stored(api_client, uploader_user, media_root):
    gray = Image.fromarray(xray_array(size=96))
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", "DOE^JOHNATHAN 19570412")
    info.add_text("Institution", "Saint Exemplar Hospital", zip=True)
    info.add_itxt("Comment", "MRN-4711-QX")
    png = io.BytesIO()
    gray.save(png, format="PNG", pnginfo=info)
    exif = Image.Exif()
    exif[0x013B] = "HOUSE^GREGORY"  # Artist
    exif[0x010E] = "Johnathan Doe, born 1957"  # ImageDescription
    jpeg = io.BytesIO()
    gray.convert("RGB").save(jpeg, format="JPEG", exif=exif, comment=b"Springfield ward 7")
    assert _found_in(png.getvalue()) and _found_in(jpeg.getvalue())

    api_client.force_authenticate(uploader_user)
    assert _upload(api_client, png.getvalue(), name="x.png").status_code == 201
    assert _upload(api_client, jpeg.getvalue(), name="x.jpg").status_code == 201

    stored = {path: data for path, data in _media_bytes(media_root).items() if "/studies/" in path}
    assert len(stored) == 2
    assert {path: _found_in(data) for path, data in stored.items() if _found_in(data)} == {}
    for data in stored.values():
        with Image.open(io.BytesIO(data)) as image:
            assert "exif" not in image.info and not any(key in image.info for key in ("Patient", "Comment"))


@pytest.mark.django_db
def test_a_dicom_with_burned_in_annotation_is_held_and_not_predicted_until_released(
    api_client, uploader_user, django_capture_on_commit_callbacks
):
    api_client.force_authenticate(uploader_user)
    with django_capture_on_commit_callbacks() as callbacks:
        response = _upload(api_client, _identified_dicom(BurnedInAnnotation="YES"), source="site-a")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "held" and "BurnedInAnnotation=YES" in body["error"]
    assert callbacks == []  # not sent for prediction

    with django_capture_on_commit_callbacks() as callbacks:
        study = study_release(study=Study.objects.get(pk=body["id"]), user=uploader_user)
    assert study.status == Study.Status.QUEUED and len(callbacks) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "ref",
    ["DOE^JOHN 1957-04-12", "DOE^JOHN", "John Doe", "P-1957-04-12", "19570412", "12/04/1957", "MRN12345678"],
)
def test_a_patient_ref_that_is_not_a_pseudonym_is_refused_with_400(api_client, uploader_user, media_root, ref):
    from tests.images import png_bytes

    api_client.force_authenticate(uploader_user)
    response = _upload(api_client, png_bytes(), name="x.png", patient_ref=ref)
    assert response.status_code == 400
    assert "patient_ref must be a pseudonym" in response.json()["patient_ref"][0]
    assert Study.objects.count() == 0 and Patient.objects.count() == 0 and _media_bytes(media_root) == {}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "notes",
    ["Patient DOE^JOHN", "seen on 12.04.2023", "born 1957-04-12", "call 0151 2345678", "MRN 44556677", "x@hosp.org"],
)
def test_notes_that_look_like_identifiers_are_refused_with_400(api_client, uploader_user, notes):
    from tests.images import png_bytes

    api_client.force_authenticate(uploader_user)
    response = _upload(api_client, png_bytes(), name="x.png", notes=notes)
    assert response.status_code == 400
    assert "look like they contain a patient identifier" in response.json()["notes"][0]
    assert Study.objects.count() == 0


@pytest.mark.django_db
def test_pseudonyms_and_clinical_notes_are_accepted(api_client, uploader_user):
    from tests.images import png_bytes

    api_client.force_authenticate(uploader_user)
    response = _upload(
        api_client, png_bytes(), name="x.png", patient_ref="site-a:P-0042", notes="Left lower lobe opacity, 2 views."
    )
    assert response.status_code == 201, response.content


@pytest.mark.django_db
def test_an_export_de_identifies_a_file_stored_before_de_identification_existed(media_root):
    legacy = StudyFactory(
        image=ContentFile(_identified_dicom(), name="upload.dcm"),
        patient=Patient.objects.create(ref="DOE^JOHNATHAN 19570412", site=site_named("site-a")),
        source="site-a",
    )
    Review.objects.create(study=legacy, reviewer=reviewer(), label="normal")

    exported = _export([legacy])

    assert {name: _found_in(data) for name, data in exported.items() if _found_in(data)} == {}
    image = next(data for name, data in exported.items() if name.endswith(".dcm"))
    assert pydicom.dcmread(io.BytesIO(image)).PatientIdentityRemoved == "YES"


@pytest.mark.django_db
def test_a_held_study_cannot_be_sent_for_prediction_without_being_released(api_client, uploader_user):
    from django.core.exceptions import ValidationError

    from studies.services import study_requeue

    api_client.force_authenticate(uploader_user)
    study_id = _upload(api_client, _identified_dicom(BurnedInAnnotation="YES")).json()["id"]
    with pytest.raises(ValidationError, match="held for a human decision"):
        study_requeue(study=Study.objects.get(pk=study_id))
    assert Study.objects.get(pk=study_id).status == Study.Status.HELD


def _needle_exif() -> bytes:
    exif = Image.Exif()
    exif[0x013B] = "HOUSE^GREGORY"  # Artist
    exif[0x010E] = "Johnathan Doe, born 1957"  # ImageDescription
    return exif.tobytes()


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def _png(image: Image.Image, **options) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", "DOE^JOHNATHAN 19570412")
    info.add_itxt("Comment", "MRN-4711-QX", zip=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, **options)
    return buffer.getvalue()


def _mpo(first: Image.Image, second: Image.Image) -> bytes:
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[second], exif=_needle_exif())
    return buffer.getvalue()


def _jfif_thumbnail(data: bytes) -> bytes:
    """The JPEG with its JFIF APP0 carrying a 4 x 1 thumbnail whose 12 bytes spell an identifier."""
    assert data[2:4] == b"\xff\xe0"
    app0 = b"JFIF\0\x01\x02\x00\x00\x01\x00\x01\x04\x01" + b"MRN-4711-QX\0"
    return data[:2] + b"\xff\xe0" + (len(app0) + 2).to_bytes(2, "big") + app0 + data[4 + int.from_bytes(data[4:6]) :]


GRAY = Image.fromarray(xray_array(size=96, label="covid"))
UPLOADS = {
    "gray JPEG with EXIF and a comment": lambda: _jpeg(GRAY, exif=_needle_exif(), comment=b"Springfield ward 7"),
    "RGB JPEG with an ICC profile": lambda: _jpeg(GRAY.convert("RGB"), icc_profile=b"Exemplar" * 40),
    "progressive JPEG": lambda: _jpeg(GRAY, progressive=True, exif=_needle_exif()),
    "JPEG with restart markers": lambda: _jpeg(GRAY.convert("RGB"), restart_marker_rows=1),
    "CMYK JPEG (Adobe APP14)": lambda: _jpeg(GRAY.convert("CMYK"), comment=b"HOUSE^GREGORY"),
    "JPEG with a trailer after EOI": lambda: _jpeg(GRAY) + b"Johnathan Doe, born 19570412",
    "JPEG with a JFIF thumbnail": lambda: _jfif_thumbnail(_jpeg(GRAY)),
    "MPO from a phone": lambda: _mpo(GRAY, Image.fromarray(xray_array(size=48))),
    "8-bit PNG with text chunks": lambda: _png(GRAY),
    "16-bit PNG": lambda: _png(Image.fromarray(xray_array(size=96).astype(np.uint16) * 200)),
    "palette PNG with transparency": lambda: _png(GRAY.convert("P"), transparency=3),
}


@pytest.mark.parametrize("kind", UPLOADS)
def test_an_upload_loses_its_metadata_but_not_one_bit_of_its_pixels(kind):
    """image_clean keeps the coded pixels as they are (no second JPEG compression) and drops every container of text."""
    from inference.preprocessing import pillow_open
    from studies.deidentify import image_clean, stored_file_is_deidentified

    data = UPLOADS[kind]()
    assert _found_in(data) or kind in {"RGB JPEG with an ICC profile", "JPEG with restart markers", "16-bit PNG"}
    decoded = pillow_open(data)
    clean = image_clean(data, decoded)
    assert _found_in(clean.data) == [] and b"Exemplar" not in clean.data
    assert clean.suffix == ("png" if "PNG" in kind else "jpg")
    assert stored_file_is_deidentified(clean.data)
    with Image.open(io.BytesIO(clean.data)) as stored:
        assert stored.mode == decoded.mode and not {"exif", "icc_profile", "comment"} & set(stored.info)
        assert np.array_equal(np.asarray(stored), np.asarray(decoded))  # lossless: the same decoded pixels
    if "JPEG" in kind or "MPO" in kind:  # the entropy-coded scan itself is carried over byte for byte
        scan = data[data.index(b"\xff\xda") : data.index(b"\xff\xd9")]
        assert scan in clean.data


def test_a_png_that_must_be_rotated_is_re_encoded_upright():
    from inference.preprocessing import pillow_open
    from studies.deidentify import image_clean

    exif = Image.Exif()
    exif[0x0112] = 8  # rotated 90 degrees counter-clockwise
    buffer = io.BytesIO()
    Image.fromarray(xray_array(size=96)[:, :64]).save(buffer, format="PNG", exif=exif.tobytes())
    data = buffer.getvalue()
    clean = image_clean(data, pillow_open(data))
    with Image.open(io.BytesIO(clean.data)) as stored:
        assert stored.size == (96, 64) and b"eXIf" not in clean.data


def test_an_upload_that_must_be_rotated_is_re_encoded_upright():
    from inference.preprocessing import pillow_open
    from studies.deidentify import image_clean

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise
    exif[0x013B] = "HOUSE^GREGORY"
    data = _jpeg(Image.fromarray(xray_array(size=96)[:, :64]), exif=exif.tobytes())
    clean = image_clean(data, pillow_open(data))
    with Image.open(io.BytesIO(clean.data)) as stored:
        assert stored.size == (96, 64) and "exif" not in stored.info
    assert _found_in(clean.data) == []


@pytest.mark.parametrize("cut", [b"", b"\xff\xd8\xff\xe0\x00", b"\xff\xd8\xff\xdb\x00\x43"])
def test_a_jpeg_structure_the_parser_cannot_follow_is_refused_by_it(cut):
    from studies.deidentify import _jpeg_strip

    data = _jpeg(GRAY)
    with pytest.raises(ValueError):
        _jpeg_strip(cut or data[: len(data) // 2])


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _chunk(kind: bytes, body: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _clean(data: bytes):
    from inference.preprocessing import pillow_open
    from studies.deidentify import image_clean

    decoded = pillow_open(data)
    return decoded, image_clean(data, decoded)


TALL = Image.fromarray(xray_array(size=96)[:, :64])  # 64 wide, 96 high
XMP_TURNED = b'<x:xmpmeta><rdf:Description tiff:Orientation="6" dc:creator="HOUSE^GREGORY"/></x:xmpmeta>'


@pytest.mark.parametrize("kind", ["JPEG", "PNG"])
def test_an_orientation_pillow_reads_from_xmp_is_applied_to_the_stored_file_too(kind):
    if kind == "JPEG":
        plain = _jpeg(TALL)
        data = plain[:2] + _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + XMP_TURNED) + plain[2:]
    else:
        buffer = io.BytesIO()
        TALL.save(buffer, format="PNG")
        plain = buffer.getvalue()
        data = plain[:33] + _chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + XMP_TURNED) + plain[33:]
    decoded, clean = _clean(data)
    assert decoded.size == (96, 64)  # Pillow turned it upright
    with Image.open(io.BytesIO(clean.data)) as stored:
        assert stored.size == decoded.size
    assert _found_in(clean.data) == []


def test_a_second_malformed_exif_segment_is_not_a_server_error():
    data = _jpeg(GRAY)
    data = data[:2] + _segment(0xE1, b"Exif\0\0GARBAGE, NOT TIFF: DOE^JOHNATHAN") + data[2:]
    _, clean = _clean(data)
    assert _found_in(clean.data) == []


def _gray_png_with(chunk: bytes) -> bytes:
    buffer = io.BytesIO()
    GRAY.save(buffer, format="PNG")
    plain = buffer.getvalue()
    return plain[:33] + chunk + plain[33:]


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_rebuilt(data: bytes, change) -> bytes:
    return data[:8] + b"".join(_chunk(kind, body) for kind, body in change(_png_chunks(data)))


def _one_bit_palette_png() -> bytes:
    buffer = io.BytesIO()
    GRAY.convert("1").convert("P").save(buffer, format="PNG", bits=1)
    return buffer.getvalue()


def _idat_text(chunks):
    return [(kind, body + b"DOE^JOHNATHAN" if kind == b"IDAT" else body) for kind, body in chunks]


def _idat_after_end(chunks):
    return [*chunks[:-1], (b"IDAT", b"DOE^JOHNATHAN"), chunks[-1]]


def _palette_of_text(chunks):
    return [(kind, (b"DOE^JOHNATHAN " * 60)[:768] if kind == b"PLTE" else body) for kind, body in chunks]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_png_rebuilt(_gray_png_with(b""), _idat_text), id="bytes after the zlib stream in IDAT"),
        pytest.param(_png_rebuilt(_gray_png_with(b""), _idat_after_end), id="an IDAT after the stream's end"),
        pytest.param(_png_rebuilt(_one_bit_palette_png(), _palette_of_text), id="a 1-bit PNG's 256-colour PLTE"),
        pytest.param(
            _jpeg(GRAY).replace(b"\xff\xd9", _segment(0xDC, b"\x00\x60DOE^JOHNATHAN") + b"\xff\xd9"), id="DNL"
        ),
        pytest.param(_gray_png_with(_chunk(b"PLTE", b"DOE^JOHNATHAN ")), id="PLTE in a gray PNG"),
        pytest.param(_gray_png_with(_chunk(b"sBIT", b"\x08DOE^JOHNATHAN")), id="sBIT too long"),
    ],
)
def test_text_hidden_in_a_kept_segment_is_not_stored(data):
    _, clean = _clean(data)
    assert b"JOHNATHAN" not in clean.data


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_gray_png_with(_chunk(b"prVt", b"DOE^JOHNATHAN")), id="private PNG chunk"),
        pytest.param(_jpeg(GRAY) + b"DOE^JOHNATHAN", id="JPEG trailer"),
        pytest.param(_jfif_thumbnail(_jpeg(GRAY)), id="JFIF APP0 thumbnail"),
    ],
)
def test_a_file_stored_before_de_identification_holding_text_is_not_taken_as_clean(data):
    from studies.deidentify import stored_file_is_deidentified

    assert not stored_file_is_deidentified(data)
    _, clean = _clean(data)
    assert stored_file_is_deidentified(clean.data)


def test_a_png_whose_first_chunk_is_not_ihdr_is_refused():
    from inference.preprocessing import ImageDecodeError, pillow_open

    data = _gray_png_with(b"")
    data = data[:8] + _chunk(b"tEXt", b"Patient\0DOE^JOHNATHAN") + data[8:]
    with pytest.raises(ImageDecodeError, match="does not begin with its IHDR"):
        pillow_open(data)


def test_an_orientation_value_that_turns_nothing_keeps_the_file_lossless():
    exif = Image.Exif()
    exif[0x0112] = 9  # not an orientation: Pillow leaves the pixels as they are
    data = _jpeg(GRAY, exif=exif.tobytes())
    _, clean = _clean(data)
    assert data[data.index(b"\xff\xda") : data.index(b"\xff\xd9")] in clean.data
