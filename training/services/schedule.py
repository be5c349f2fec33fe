"""Scheduled retraining: start a run when reviewers have taught the platform something new."""

from django.conf import settings

from studies.selectors import review_corrections_by_source, studies_newly_reviewed_count
from training.models import TrainingRun
from training.selectors import training_run_in_progress, training_run_last_succeeded
from training.services.runs import training_run_create, training_runs_release_stale


def retrain_due_reason(*, min_new_reviews: int | None = None) -> str | None:
    """Why a retrain is due, or None. Counted since the last successful run's snapshot (failed runs
    do not reset the count): enough distinct newly reviewed studies (re-reviews do not count), or a
    source whose latest predictions reviewers corrected often (a site the model does not fit)."""
    threshold = settings.RETRAIN_MIN_NEW_REVIEWS if min_new_reviews is None else min_new_reviews
    last = training_run_last_succeeded()
    after = last.snapshot.last_review_id if last is not None and last.snapshot is not None else 0
    newly = studies_newly_reviewed_count(after_review_id=after)
    if newly >= threshold:
        return f"{newly} studies newly reviewed since the last successful run (threshold {threshold})."
    window, rate = settings.RETRAIN_CORRECTION_WINDOW, settings.RETRAIN_CORRECTION_RATE
    for source, (corrected, reviewed) in sorted(
        review_corrections_by_source(after_review_id=after, last=window).items()
    ):
        if reviewed >= window and corrected >= rate * reviewed:
            return f"Reviewers corrected {corrected} of the latest {reviewed} predictions for {source}."
    return None


def retrain_if_due(*, min_new_reviews: int | None = None) -> TrainingRun | None:
    """The scheduled job: start a run (fine-tuning the active model by default) when one is due."""
    training_runs_release_stale()
    if training_run_in_progress() is not None:
        return None
    reason = retrain_due_reason(min_new_reviews=min_new_reviews)
    if reason is None:
        return None
    return training_run_create(user=None, trigger="schedule", note=f"Scheduled: {reason}")
