"""The image viewer on the study page: zoom, pan, window/level by drag (mouse or touch mode) and presets, invert,
reset, heatmap."""

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_reading import _predicted_studies

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_viewer_zooms_windows_inverts_resets_and_fades_the_heatmap(page: Page, live_server, login, reviewer_user):
    (study,) = _predicted_studies(1)
    login(reviewer_user)
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    viewer = page.locator("[data-viewer]")
    readout = viewer.locator("[data-role=readout]")
    expect(viewer).to_have_attribute("data-loaded", "true")
    expect(readout).to_have_text("100% · W 255 L 128")

    viewer.get_by_role("button", name="+").click()
    expect(readout).to_contain_text("125%")
    box = viewer.locator("[data-role=box]").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.keyboard.down("Shift")  # Shift-drag: window (x) and level (y)
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx - 100, cy - 40)
    page.mouse.up()
    page.keyboard.up("Shift")
    expect(readout).to_have_text("125% · W 191 L 153")
    page.mouse.move(cx, cy)  # plain drag pans
    page.mouse.down()
    page.mouse.move(cx + 50, cy)
    page.mouse.up()
    stage_style = viewer.locator("[data-role=stage]").get_attribute("style")
    assert "translate(50px, 0px) scale(1.25)" in stage_style
    viewer.get_by_role("button", name="W/L drag").click()  # touch screens: a plain drag sets window/level
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 100, cy)
    page.mouse.up()
    expect(readout).to_have_text("125% · W 255 L 153")
    viewer.get_by_role("button", name="W/L drag").click()
    expect(viewer.get_by_role("button", name="W/L drag")).to_have_attribute("aria-pressed", "false")

    viewer.get_by_role("button", name="Invert").click()
    expect(viewer.get_by_role("button", name="Invert")).to_have_attribute("aria-pressed", "true")
    viewer.locator("[data-role=preset]").select_option(label="Lung (dark detail)")
    expect(readout).to_have_text("125% · W 153 L 97")
    viewer.get_by_role("button", name="Reset").click()
    expect(readout).to_have_text("100% · W 255 L 128")
    expect(viewer.get_by_role("button", name="Invert")).to_have_attribute("aria-pressed", "false")

    viewer.get_by_role("checkbox", name="Heatmap").check()
    expect(viewer.locator("[data-role=heatmap]")).to_be_visible()
    viewer.get_by_label("Heatmap opacity").fill("30")
    expect(viewer.locator("[data-role=heatmap]")).to_have_css("opacity", "0.3")
