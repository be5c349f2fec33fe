"""The list and queue endpoints run a constant number of queries, however many studies a page holds."""

import pytest
from knox.models import AuthToken

from studies.models import Study
from tests.factories import PredictionFactory, ReviewFactory, StudyFactory, reviewer

# The token (with its user), the user's sites and roles, the count, the page's ids, then the page's
# studies (with patient and people), predictions and reviews.
LIST_QUERIES = 7


def _studies(count: int, reviewer_user) -> None:
    """Predicted studies, every other one reviewed (so the queue has some too)."""
    for i in range(count):
        study = StudyFactory(status=Study.Status.PREDICTED)
        PredictionFactory(study=study)
        if i % 2:
            ReviewFactory(study=study, reviewer=reviewer_user)


@pytest.mark.parametrize("path", ["/api/studies/", "/api/studies/?status=predicted&reviewed=false"])
@pytest.mark.django_db
def test_a_page_of_studies_costs_the_same_few_queries_with_two_studies_or_fifty(
    api_client, path, django_assert_num_queries
):
    user = reviewer()
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=user)[1]}")
    _studies(2, user)
    with django_assert_num_queries(LIST_QUERIES):
        assert len(api_client.get(path).json()["results"]) >= 1
    _studies(48, user)
    with django_assert_num_queries(LIST_QUERIES):
        assert len(api_client.get(path).json()["results"]) >= 24
