"""Reader agreement and the dashboard's figures: reads only, no writes.

Cohen's kappa between two readers over the studies both read; Fleiss' kappa across readers
(Fleiss 1971, generalised to a varying number of reads per study); each reader against the final
label and against the model. A reader's read is their latest read of a study's current round."""

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import timedelta
from itertools import combinations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from studies.models import Label, Review, Study
from studies.selectors import studies_visible, study_annotate_labels

CATEGORIES = list(Label.values)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when undefined (no items)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b[c] for c in set(a) | set(b)) / (n * n)
    if expected == 1:
        return 1.0 if observed == 1 else None  # both raters used one same category throughout
    return (observed - expected) / (1 - expected)


def fleiss_kappa(items: Iterable[Sequence[str]]) -> float | None:
    """Fleiss' kappa over items, each the labels its raters gave (at least two per item)."""
    rows = [Counter(labels) for labels in items if len(labels) >= 2]
    if not rows:
        return None
    agreement = [
        (sum(k * k for k in row.values()) - sum(row.values())) / (sum(row.values()) * (sum(row.values()) - 1))
        for row in rows
    ]
    observed = sum(agreement) / len(rows)
    totals = Counter()
    for row in rows:
        totals.update(row)
    all_ratings = sum(totals.values())
    expected = sum((k / all_ratings) ** 2 for k in totals.values())
    if expected == 1:
        return 1.0 if observed == 1 else None
    return (observed - expected) / (1 - expected)


def _reads(studies) -> dict[int, dict[str, str]]:
    """Per study id: reader -> their latest read label in the study's current round."""
    reads: dict[int, dict[str, str]] = defaultdict(dict)
    rounds = {s.pk: s.reading_round for s in studies}
    queryset = (
        Review.objects.filter(study_id__in=list(rounds), kind=Review.Kind.READ)
        .select_related("reviewer")
        .order_by("created_at", "id")
    )
    for review in queryset:
        if review.round == rounds[review.study_id]:
            reads[review.study_id][review.reviewer.get_username()] = review.label
    return reads


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _agreement(studies: list[Study], reads: dict[int, dict[str, str]]) -> dict:
    readers = sorted({reader for study_reads in reads.values() for reader in study_reads})
    pairs = []
    for a, b in combinations(readers, 2):
        both = [r for r in reads.values() if a in r and b in r]
        pairs.append(
            {
                "readers": [a, b],
                "n": len(both),
                "kappa": _rounded(cohen_kappa([r[a] for r in both], [r[b] for r in both])),
            }
        )
    per_reader = []
    for reader in readers:
        entry = {"reader": reader, "n": sum(reader in r for r in reads.values())}
        for key, attribute in (("final", "final_label"), ("model", "predicted_label")):
            mine = [(reads[s.pk][reader], getattr(s, attribute)) for s in studies if reader in reads.get(s.pk, {})]
            mine = [(x, y) for x, y in mine if y]
            entry[f"vs_{key}"] = {
                "n": len(mine),
                "agreement": _rounded(sum(x == y for x, y in mine) / len(mine)) if mine else None,
                "kappa": _rounded(cohen_kappa([x for x, _ in mine], [y for _, y in mine])),
            }
        per_reader.append(entry)
    multi = [list(r.values()) for r in reads.values() if len(r) >= 2]
    return {
        "readers": readers,
        "pairs": pairs,
        "fleiss": {"kappa": _rounded(fleiss_kappa(multi)), "n": len(multi)},
        "per_reader": per_reader,
    }


def _agreement_of(studies: list[Study], reads: dict[int, dict[str, str]]) -> dict:
    """_agreement over some of the studies, with only their reads."""
    return _agreement(studies, {s.pk: reads[s.pk] for s in studies if s.pk in reads})


def _studies(user: AbstractBaseUser | None) -> QuerySet[Study]:
    """The studies the figures count: those ``user`` may see (their sites), or all when None."""
    if user is None:
        return Study.objects.all()
    return studies_visible(user=user)


def agreement_stats(*, user: AbstractBaseUser | None = None, weeks: int = 12) -> dict:
    """Agreement overall, per source, and per ISO week of the study's upload (Fleiss' kappa and each
    reader against the final label and the model), over the studies ``user`` may see (all studies when None)."""
    studies = list(study_annotate_labels(_studies(user).filter(reviews__kind=Review.Kind.READ).distinct()))
    reads = _reads(studies)
    by_source: dict[str, list[Study]] = defaultdict(list)
    for study in studies:
        by_source[study.source or "unknown"].append(study)
    since = timezone.now() - timedelta(weeks=weeks)
    by_week: dict[str, list[Study]] = defaultdict(list)
    for study in studies:
        if study.uploaded_at >= since:
            year, week, _ = study.uploaded_at.isocalendar()
            by_week[f"{year}-W{week:02d}"].append(study)
    weekly = {week: _agreement_of(items, reads) for week, items in sorted(by_week.items())}
    return {
        **_agreement(studies, reads),
        "by_source": {source: _agreement_of(items, reads) for source, items in sorted(by_source.items())},
        "by_week": [
            # n: the week's studies with two or more reads, the ones Fleiss' kappa counts
            {"week": week, "n": f["fleiss"]["n"], "fleiss": f["fleiss"]["kappa"], "per_reader": f["per_reader"]}
            for week, f in weekly.items()
        ],
    }


def dashboard_stats(*, user: AbstractBaseUser | None = None, days: int = 30) -> dict:
    """Studies per day and source, the backlog by state, and final labels per source, over the
    studies ``user`` may see (all studies when None)."""
    since = timezone.now() - timedelta(days=days)
    studies = _studies(user)
    per_day = (
        studies.filter(uploaded_at__gte=since)
        .annotate(day=TruncDate("uploaded_at"))
        .values("day", "source")
        .annotate(n=Count("id"))
        .order_by("day", "source")
    )
    backlog = studies.aggregate(
        queued=Count("id", filter=Q(status__in=[Study.Status.QUEUED, Study.Status.PROCESSING])),
        failed=Count("id", filter=Q(status=Study.Status.FAILED)),
        unread=Count("id", filter=Q(status=Study.Status.PREDICTED, reading_state=Study.Reading.UNREAD)),
        reading=Count("id", filter=Q(reading_state=Study.Reading.READING)),
        disagreement=Count("id", filter=Q(reading_state=Study.Reading.DISAGREEMENT)),
    )
    labels = (
        studies.filter(reading_state=Study.Reading.FINAL)
        .values("source", "label_final")
        .annotate(n=Count("id"))
        .order_by("source")
    )
    label_table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CATEGORIES, 0))
    for row in labels:
        label_table[row["source"] or "unknown"][row["label_final"]] = row["n"]
    rejected = studies.filter(reading_state=Study.Reading.REJECTED).values("source").annotate(n=Count("id"))
    return {
        "studies_per_day": [
            {"date": row["day"].isoformat(), "source": row["source"] or "unknown", "count": row["n"]} for row in per_day
        ],
        "backlog": backlog,
        "labels_by_source": dict(label_table),
        "rejected_by_source": {row["source"] or "unknown": row["n"] for row in rejected},
    }
