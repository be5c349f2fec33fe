"""Uploading studies through the REST API."""

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from studies.models import Patient, Prediction, Study
from tests.images import jpeg_bytes, png_bytes

URL = "/api/studies/"


def _files(media_root: Path) -> list[Path]:
    return [p for p in media_root.rglob("*") if p.is_file()] if media_root.exists() else []


def _upload(client, data: bytes, name: str = "cxr.png", **fields):
    return client.post(URL, {"image": SimpleUploadedFile(name, data), **fields}, format="multipart")


@pytest.mark.django_db
def test_token_endpoint_returns_a_token_that_authenticates(api_client, uploader_user):
    response = api_client.post("/api/auth/token/", {"username": uploader_user.username, "password": "pass-word-123"})
    assert response.status_code == 200
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert api_client.get(URL).status_code == 200


@pytest.mark.django_db
def test_token_endpoint_rejects_wrong_password_with_400(api_client, uploader_user):
    response = api_client.post("/api/auth/token/", {"username": uploader_user.username, "password": "nope"})
    assert response.status_code == 400


@pytest.mark.django_db
def test_anonymous_upload_is_refused_with_401(api_client):
    assert _upload(api_client, png_bytes()).status_code == 401


@pytest.mark.django_db
def test_png_upload_returns_201_and_the_prediction_arrives(
    api_client, uploader_user, active_model, django_capture_on_commit_callbacks
):
    api_client.force_authenticate(uploader_user)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _upload(api_client, png_bytes(), patient_ref="P-001", view="PA", source="test-site")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["prediction"] is None
    assert body["image_url"].endswith(f"/api/studies/{body['id']}/image/")
    assert len(callbacks) == 1  # dispatched once, after commit

    detail = api_client.get(f"{URL}{body['id']}/").json()
    assert detail["status"] == "predicted"
    prediction = detail["prediction"]
    assert set(prediction["probabilities"]) == {"covid", "normal", "pneumonia"}
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert prediction["label"] == max(prediction["probabilities"], key=prediction["probabilities"].get)
    assert prediction["model_version"] == active_model.name
    assert detail["patient_ref"] == "P-001" and detail["source"] == "test-site"
    assert detail["final_label"] is None and detail["reviews"] == []


@pytest.mark.django_db
def test_jpeg_upload_is_accepted_and_image_is_served_to_its_uploader(api_client, uploader_user, active_model):
    """Served as stored: its metadata dropped (de-identified), its coded pixels as uploaded, so the same picture."""
    import io

    import numpy as np
    from PIL import Image

    api_client.force_authenticate(uploader_user)
    data = jpeg_bytes()
    response = _upload(api_client, data, name="x.jpg")
    assert response.status_code == 201
    image = api_client.get(f"{URL}{response.json()['id']}/image/")
    assert image.status_code == 200
    served = np.asarray(Image.open(io.BytesIO(b"".join(image.streaming_content))), dtype=float)
    assert np.array_equal(served, np.asarray(Image.open(io.BytesIO(data)), dtype=float))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"%PDF-1.4 definitely not an image", "report.pdf", "Not a readable PNG or JPEG image"),
        (png_bytes()[:200], "truncated.png", "Not a readable PNG or JPEG image"),
        (jpeg_bytes()[:300], "truncated.jpg", "Not a readable PNG or JPEG image"),
        (b"", "empty.png", "empty"),
        (png_bytes(size=32), "tiny.png", "too small"),
    ],
    ids=["pdf", "truncated-png", "truncated-jpeg", "empty", "too-small"],
)
def test_bad_image_returns_400_naming_the_field_and_stores_nothing(
    api_client, uploader_user, media_root, data, name, message
):
    api_client.force_authenticate(uploader_user)
    response = _upload(api_client, data, name=name)
    assert response.status_code == 400
    assert message.lower() in " ".join(response.json()["image"]).lower()
    assert Study.objects.count() == 0 and Patient.objects.count() == 0
    assert _files(media_root) == []


@pytest.mark.django_db
def test_upload_over_the_size_limit_returns_400_and_stores_nothing(api_client, uploader_user, media_root, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    api_client.force_authenticate(uploader_user)
    response = _upload(api_client, png_bytes(size=256))
    assert response.status_code == 400
    assert "limit" in response.json()["image"][0]
    assert Study.objects.count() == 0 and _files(media_root) == []


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["[]", "null", "1", '"x"'])
def test_a_json_body_that_is_not_an_object_returns_400(api_client, uploader_user, body):
    api_client.force_authenticate(uploader_user)
    response = api_client.post(URL, body, content_type="application/json")
    assert response.status_code == 400 and "multipart" in response.json()["non_field_errors"][0]


@pytest.mark.django_db
def test_a_study_id_beyond_any_database_integer_is_404(api_client, uploader_user):
    api_client.force_authenticate(uploader_user)
    assert api_client.get("/api/studies/9223372036854775808/").status_code == 404
    assert api_client.get("/api/studies/99999999999999999999/").status_code == 404


@pytest.mark.django_db
def test_upload_with_the_file_under_another_field_name_returns_400(api_client, uploader_user):
    api_client.force_authenticate(uploader_user)
    response = api_client.post(URL, {"file": SimpleUploadedFile("x.png", png_bytes())}, format="multipart")
    assert response.status_code == 400
    assert "Unknown field(s): file" in response.json()["non_field_errors"][0]
    assert Study.objects.count() == 0


@pytest.mark.django_db
def test_upload_without_image_returns_400(api_client, uploader_user):
    api_client.force_authenticate(uploader_user)
    response = api_client.post(URL, {"notes": "forgot the file"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["image"] == ["No file was submitted."]


@pytest.mark.django_db
def test_user_without_a_role_cannot_upload(api_client):
    from tests.factories import UserFactory

    api_client.force_authenticate(UserFactory())
    assert _upload(api_client, png_bytes()).status_code == 403
    assert Study.objects.count() == 0


@pytest.mark.django_db
def test_sixteen_bit_png_upload_is_accepted(api_client, uploader_user, active_model):
    import io

    import numpy as np
    from PIL import Image

    pixels = (np.linspace(0, 4095, 128 * 128).reshape(128, 128)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    api_client.force_authenticate(uploader_user)
    response = _upload(api_client, buffer.getvalue())
    assert response.status_code == 201
    assert Study.objects.get().width == 128


@pytest.mark.django_db
def test_without_an_active_model_the_study_fails_with_the_reason(
    api_client, uploader_user, django_capture_on_commit_callbacks
):
    api_client.force_authenticate(uploader_user)
    with django_capture_on_commit_callbacks(execute=True):
        study_id = _upload(api_client, png_bytes()).json()["id"]
    body = api_client.get(f"{URL}{study_id}/").json()
    assert body["status"] == "failed"
    assert "No active model" in body["error"]
    assert Prediction.objects.count() == 0


@pytest.mark.django_db
def test_dicom_upload_is_predicted_and_served_to_browsers_as_png(
    api_client, uploader_user, active_model, django_capture_on_commit_callbacks
):
    from tests.images import dicom_bytes

    api_client.force_authenticate(uploader_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(api_client, dicom_bytes(), name="study.dcm")
    assert response.status_code == 201
    study_id = response.json()["id"]
    assert api_client.get(f"{URL}{study_id}/").json()["status"] == "predicted"
    image = api_client.get(f"{URL}{study_id}/image/")
    assert image["Content-Type"] == "image/png" and image.content.startswith(b"\x89PNG")


@pytest.mark.django_db
def test_a_jpeg_lossless_dicom_from_an_archive_is_predicted_and_stored_uncompressed(
    api_client, uploader_user, active_model, django_capture_on_commit_callbacks
):
    import pydicom

    from tests.images import dicom_bytes, dicom_transcoded

    api_client.force_authenticate(uploader_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(api_client, dicom_transcoded(dicom_bytes(), "1.2.840.10008.1.2.4.70"), name="cr.dcm")
    assert response.status_code == 201, response.content
    study = Study.objects.get(pk=response.json()["id"])
    assert study.status == Study.Status.PREDICTED
    with study.image.open("rb") as handle:
        stored = pydicom.dcmread(handle)
    assert stored.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert np.array_equal(stored.pixel_array, pydicom.dcmread(io.BytesIO(dicom_bytes())).pixel_array)


@pytest.mark.django_db
def test_a_thumbnail_rendition_is_served_at_the_requested_size(api_client, uploader_user):
    import io

    from PIL import Image

    api_client.force_authenticate(uploader_user)
    study_id = _upload(api_client, png_bytes(size=400)).json()["id"]
    response = api_client.get(f"{URL}{study_id}/image/?size=100")
    assert response["Content-Type"] == "image/jpeg"
    assert "private" in response["Cache-Control"]
    assert Image.open(io.BytesIO(response.content)).size == (100, 100)
    assert api_client.get(f"{URL}{study_id}/image/?size=abc").status_code == 400
