"""Reading in a real browser: the keyboard queue, the heatmap, adjudication of a disagreement."""

import io

import pytest
from django.core.files.base import ContentFile
from PIL import Image
from playwright.sync_api import Page, expect

from studies.models import Review, Study
from tests.factories import ModelVersionFactory, PredictionFactory, reviewer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _heatmap() -> ContentFile:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), color=(220, 40, 40)).save(buffer, format="JPEG")
    return ContentFile(buffer.getvalue(), name="heat.jpg")


def _predicted_studies(count: int, **fields) -> list[Study]:
    version = ModelVersionFactory()
    return [
        PredictionFactory(model_version=version, heatmap=_heatmap(), study__seed=i, **fields).study
        for i in range(count)
    ]


def _wait_for_study(page: Page, done: int) -> None:
    """The reader has counted ``done`` reads and shows the next study, ready for a key."""
    expect(page.locator("[data-role=count]")).to_have_text(f"{done} read")
    expect(page.locator("[data-page=reader]")).to_have_attribute("data-busy", "false")
    expect(page.locator("[data-viewer]")).to_have_attribute("data-loaded", "true")


def test_a_reviewer_reads_twenty_studies_with_the_keyboard_alone(page: Page, live_server, login, reviewer_user):
    studies = _predicted_studies(22)
    login(reviewer_user)
    page.goto(f"{live_server.url}/review/read/")
    page.evaluate("window.sameDocument = true")  # lost if a study came with a page load

    keys = ["Enter", "1", "2", "3"] * 5
    skipped = rejected = None
    for done, key in enumerate(keys):
        _wait_for_study(page, done)
        if done == 3:
            skipped = int(page.locator("[data-page=reader]").get_attribute("data-study-id"))
            page.keyboard.press("s")
            expect(page.locator("[data-page=reader]")).not_to_have_attribute("data-study-id", str(skipped))
            _wait_for_study(page, done)
        if done == 7:
            rejected = int(page.locator("[data-page=reader]").get_attribute("data-study-id"))
            page.keyboard.press("r")
            expect(page.get_by_text("Reject because")).to_be_visible()
            page.keyboard.press("2")  # unreadable
            expect(page.locator("[data-page=reader]")).not_to_have_attribute("data-study-id", str(rejected))
            _wait_for_study(page, done)
        page.keyboard.press(key)
    expect(page.locator("[data-role=count]")).to_have_text("20 read")
    expect(page.get_by_text("Nothing left to read")).to_be_visible()
    assert page.evaluate("window.sameDocument") is True

    reads = Review.objects.filter(reviewer=reviewer_user)
    assert reads.count() == 20
    assert reads.filter(reading_ms__isnull=True).count() == 0
    assert reads.filter(label="covid").count() == 10  # Enter confirms the model's covid, and 1
    assert not reads.filter(study_id__in=[skipped, rejected]).exists()
    assert Study.objects.get(pk=rejected).rejection_reason == "unreadable"
    assert Study.objects.filter(reading_state="final").count() == 20
    assert {s.pk for s in studies} - set(reads.values_list("study_id", flat=True)) == {skipped, rejected}


def test_keys_toggle_the_heatmap_and_show_the_help(page: Page, live_server, login, reviewer_user):
    _predicted_studies(1)
    login(reviewer_user)
    page.goto(f"{live_server.url}/review/read/")
    _wait_for_study(page, 0)
    heatmap = page.locator("[data-role=heatmap]")
    expect(heatmap).to_be_hidden()

    page.keyboard.press("h")
    expect(heatmap).to_be_visible()
    page.keyboard.press("h")
    expect(heatmap).to_be_hidden()
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()


def test_two_readers_disagree_and_an_adjudicator_sets_the_final_label(
    page: Page, context, live_server, login, settings
):
    settings.REVIEW_READS_REQUIRED = 2
    (study,) = _predicted_studies(1)
    for reader, key in ((reviewer(username="ann"), "1"), (reviewer(username="bob"), "2")):
        context.clear_cookies()
        login(reader)
        page.goto(f"{live_server.url}/review/read/")
        _wait_for_study(page, 0)
        page.keyboard.press(key)
        expect(page.locator("[data-role=count]")).to_have_text("1 read")
    study.refresh_from_db()
    assert study.reading_state == "disagreement"

    context.clear_cookies()
    login(reviewer(username="judge", groups=["adjudicator"]))  # a reviewer of the site, adjudicator group
    page.goto(f"{live_server.url}/adjudication/")
    page.get_by_role("link", name="Adjudicate").click()
    page.locator("#adjudicate select[name=label]").select_option("pneumonia")
    page.locator("#adjudicate textarea[name=reason]").fill("Consolidation in the right lower lobe.")
    page.get_by_role("button", name="Set final label").click()

    expect(page.locator("[data-role=final-label]")).to_have_text("Other pneumonia")
    expect(page.locator("[data-role=label-rule]")).to_have_text("Adjudicated")
    study.refresh_from_db()
    assert (study.label_final, study.label_rule) == ("pneumonia", "adjudicated")
