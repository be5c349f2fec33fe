"""The dashboard draws its charts from GET /api/stats/."""

import pytest
from playwright.sync_api import Page, expect

from studies.services import review_submit
from tests.factories import ModelVersionFactory, PredictionFactory, reviewer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_dashboard_draws_every_chart_and_the_kappa_table(page: Page, live_server, login, settings):
    settings.REVIEW_READS_REQUIRED = 2
    for site in ("site-a", "site-b"):  # ann and bob read at both sites
        ann, bob = reviewer(username="ann", site_name=site), reviewer(username="bob", site_name=site)
    for i, (a, b) in enumerate([("covid", "covid"), ("normal", "normal"), ("covid", "normal")]):
        study = PredictionFactory(study__source="site-a" if i else "site-b").study
        review_submit(study=study, reviewer=ann, label=a)
        review_submit(study=study, reviewer=bob, label=b)
    ModelVersionFactory(metrics={"per_source": {"site-a": {"n": 10, "accuracy": 0.8, "macro_auc": 0.9}}})
    login(ann)

    page.goto(f"{live_server.url}/dashboard/")

    expect(page.locator("[data-page=dashboard]")).to_have_attribute("data-loaded", "true")
    for name in ("per-day", "backlog", "labels", "readers", "readers-by-source", "fleiss"):
        expect(page.locator(f"[data-chart={name}] svg")).to_be_visible()
        expect(page.locator(f"[data-chart={name}] svg rect")).not_to_have_count(0)
    expect(page.locator("[data-chart=models] svg circle")).to_have_count(1)
    expect(page.locator("[data-chart=over-time] svg circle")).to_have_count(1)  # one week
    # Each reader over time: the model said covid three times; ann read covid twice, bob once.
    week_vs_model = page.locator("[data-chart=readers-model-weekly] svg circle title")
    expect(week_vs_model).to_have_count(2)
    expect(week_vs_model.first).to_contain_text("ann: 67%")
    expect(week_vs_model.last).to_contain_text("bob: 33%")
    expect(page.locator("[data-chart=readers-final-weekly] svg circle title").first).to_contain_text("ann: 100%")
    expect(page.locator("[data-table=pairs] tbody tr")).to_have_text(["ann · bob3" + "0.40"])
