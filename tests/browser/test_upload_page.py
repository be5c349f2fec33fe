"""The upload page and the study page in a real browser: progress bars, error messages, a prediction arriving."""

import re

import pytest
from playwright.sync_api import Page, expect

from studies.models import Review, Study
from tests.images import png_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _file(name: str, data: bytes, mime: str = "image/png") -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


# Records every value the upload list's progress bars take (app.js sets them from upload progress events).
WATCH_PROGRESS = """() => {
  window.progressSeen = [];
  new MutationObserver((changes) => { for (const c of changes) window.progressSeen.push(Number(c.target.value)); })
    .observe(document.querySelector(".upload-list"), { subtree: true, attributes: true, attributeFilter: ["value"] });
}"""


def test_uploads_show_progress_and_link_each_new_study(page: Page, context, live_server, login, uploader_user):
    """The upload is throttled (Chromium's network emulation, 400 kB/s) so that its bar is seen part-way."""
    login(uploader_user)
    page.goto(f"{live_server.url}/studies/upload/")
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 400_000},
    )
    page.evaluate(WATCH_PROGRESS)

    page.set_input_files(
        "input[type=file]",
        [_file("a.png", png_bytes(size=512, seed=1)), _file("b.png", png_bytes(seed=2, label="covid"))],
    )
    page.get_by_role("button", name="Upload 2 files").click()

    rows = page.locator(".upload-list li")
    expect(rows.locator("a")).to_have_count(2)
    for progress in rows.locator("progress").all():
        expect(progress).to_have_attribute("value", "100")
    assert [value for value in page.evaluate("window.progressSeen") if 0 < value < 100]  # seen part-way
    assert Study.objects.count() == 2


def test_upload_errors_are_shown_per_file_and_store_nothing(page: Page, live_server, login, uploader_user, settings):
    settings.MAX_UPLOAD_BYTES = 1000  # plus the multipart allowance (64 KiB): a 200 kB file is refused with a 413
    login(uploader_user)
    page.goto(f"{live_server.url}/studies/upload/")

    page.set_input_files(
        "input[type=file]",
        [
            _file("notes.txt", b"not an image", "text/plain"),
            _file("empty.png", b""),
            _file("large.png", png_bytes(size=512)),
        ],
    )
    page.get_by_role("button", name="Upload 3 files").click()

    expect(page.locator(".upload-list .error-text")).to_have_text(
        [
            "image: Not a readable PNG or JPEG image: the file is not an image we recognise; upload PNG, JPEG or "
            "DICOM.",
            "image: The submitted file is empty.",
            re.compile(r"^The request body is 0\.2 MB; the limit for an upload is .* Nothing was stored\.$"),
        ]
    )
    assert Study.objects.count() == 0


def test_study_page_shows_the_prediction_when_it_arrives_and_reads_it(page: Page, live_server, login, reviewer_user):
    """The study is uploaded while no model is active; the page polls until a prediction lands, then its review
    buttons confirm it and the read keeps the time it took."""
    from django.core.files.base import ContentFile

    from studies.services import prediction_record
    from tests.factories import ModelVersionFactory, StudyFactory

    study = StudyFactory(status=Study.Status.QUEUED)
    login(reviewer_user)
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    expect(page.get_by_text("Waiting for the model")).to_be_visible()

    version = ModelVersionFactory(artifact=ContentFile(b"x", name="m.keras"))
    prediction_record(
        study=study,
        model_version_id=version.pk,
        probabilities={"covid": 0.1, "normal": 0.2, "pneumonia": 0.7},
        inference_ms=3.0,
    )

    expect(page.locator("[data-role=label]")).to_have_text("Other pneumonia")
    expect(page.locator("[data-role=status]")).to_have_text("Predicted")
    page.get_by_role("button", name="Confirm Other pneumonia").click()
    expect(page.get_by_text(f"Study {study.pk} labelled Other pneumonia.")).to_be_visible()
    read = Review.objects.get(study=study)
    assert (read.reviewer, read.label) == (reviewer_user, "pneumonia")
    assert read.reading_ms is not None
