"""factory_boy factories. Studies carry real (generated) PNG files."""

import hashlib

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile

from studies.models import Label, Patient, Prediction, Review, Site, SiteMembership, Study
from studies.sites import site_get_or_create
from tests.images import png_bytes
from training.models import DatasetSnapshot, EvaluationCase, ModelVersion


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "pass-word-123")

    @factory.post_generation
    def groups(self, create: bool, extracted: list[str] | None, **kwargs) -> None:
        for name in extracted or []:
            self.groups.add(Group.objects.get_or_create(name=name)[0])  # a transactional test flushes them
        if create:
            self.save()


TEST_SITE = "test-site"


def site_named(name: str = TEST_SITE) -> Site:
    return site_get_or_create(name=name)


def member(role: str, *, site_name: str = TEST_SITE, **kwargs) -> object:
    """A user holding ``role`` (uploader, reviewer, lead) at the site ``site_name``."""
    user = UserFactory(**kwargs)
    SiteMembership.objects.update_or_create(user=user, site=site_named(site_name), defaults={"role": role})
    return user


def reviewer(**kwargs) -> object:
    return member(SiteMembership.Role.REVIEWER, **kwargs)


def uploader(**kwargs) -> object:
    return member(SiteMembership.Role.UPLOADER, **kwargs)


def site_lead(**kwargs) -> object:
    return member(SiteMembership.Role.LEAD, **kwargs)


def ml_lead(**kwargs) -> object:
    """Staff in the ml-lead group: may train, promote, override the gate and export."""
    return UserFactory(groups=["ml-lead"], is_staff=True, **kwargs)


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    site = factory.LazyFunction(site_named)
    ref = factory.Sequence(lambda n: f"test:{n}")


class StudyFactory(factory.django.DjangoModelFactory):
    """A study with a real PNG; pass ``label`` to draw that class into the image."""

    class Meta:
        model = Study
        exclude = ("data", "label", "seed")

    label = "normal"
    seed = factory.Sequence(lambda n: n)
    data = factory.LazyAttribute(lambda o: png_bytes(label=o.label, seed=o.seed))
    source = TEST_SITE
    site = factory.LazyAttribute(lambda o: site_named(o.source))
    patient = factory.SubFactory(PatientFactory, site=factory.SelfAttribute("..site"))
    sha256 = factory.LazyAttribute(lambda o: hashlib.sha256(o.data).hexdigest())
    image = factory.LazyAttribute(lambda o: ContentFile(o.data, name="upload.png"))
    width = 96
    height = 96
    status = Study.Status.QUEUED


class ModelVersionFactory(factory.django.DjangoModelFactory):
    """Pass ``artifact`` (a django File) of a real model when prediction matters."""

    class Meta:
        model = ModelVersion

    name = factory.Sequence(lambda n: f"model-{n}")
    artifact = factory.LazyFunction(lambda: ContentFile(b"not a model", name="model.keras"))
    architecture = "small_cnn"
    class_names = factory.LazyFunction(lambda: list(Label.values))
    input_size = 32


class PredictionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prediction

    study = factory.SubFactory(StudyFactory, status=Study.Status.PREDICTED)
    model_version = factory.SubFactory(ModelVersionFactory)
    probabilities = factory.LazyFunction(lambda: {"covid": 0.7, "normal": 0.2, "pneumonia": 0.1})
    label = "covid"
    confidence = 0.7
    inference_ms = 12.5


class ReviewFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Review

    study = factory.SubFactory(StudyFactory)
    reviewer = factory.LazyFunction(reviewer)
    label = "normal"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        """Saved like review_submit saves it: in the study's current round, which then settles its label."""
        from studies.services import study_reading_resolve

        kwargs.setdefault("round", kwargs["study"].reading_round)
        review = super()._create(model_class, *args, **kwargs)
        study_reading_resolve(study=review.study)
        return review


def score_cases(version: ModelVersion, snapshot: DatasetSnapshot, *, correct: int, total: int = 30) -> None:
    """Store a version's answers on ``total`` test cases of a snapshot: the first ``correct`` right."""
    names = list(Label.values)
    for i in range(total):
        label = names[i % 3]
        decided = label if i < correct else names[(i + 1) % 3]
        EvaluationCase.objects.create(
            model_version=version,
            snapshot=snapshot,
            study_key=i,
            patient=f"p{i}",
            source="site-a",
            label=label,
            probabilities=[0.8 if name == decided else 0.1 for name in names],
            decided=decided,
        )
