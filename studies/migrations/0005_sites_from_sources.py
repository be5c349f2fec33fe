"""Sites and per-site roles. Existing rows: one site per existing ``source`` (blank → "default"),
each study and patient moved to its site (a patient seen at two sources becomes one patient per
site), and members of the old ``reviewer`` / ``uploader`` groups get that role at every site, so
nobody loses what they could see."""

from django.db import migrations
from django.utils.text import slugify

DEFAULT_SITE = "default"


def _site_for(Site, source: str, cache: dict):
    key = source.strip() or DEFAULT_SITE
    if key not in cache:
        slug = slugify(key)[:100] or DEFAULT_SITE
        site = Site.objects.filter(slug=slug).first() or Site.objects.create(name=key[:100], slug=slug)
        cache[key] = site
    return cache[key]


def sites_from_sources(apps, schema_editor):
    Site = apps.get_model("studies", "Site")
    SiteMembership = apps.get_model("studies", "SiteMembership")
    Patient = apps.get_model("studies", "Patient")
    Study = apps.get_model("studies", "Study")
    Group = apps.get_model("auth", "Group")
    cache: dict = {}
    copies: dict = {}  # (patient id, site id) -> patient
    first_site: dict = {}  # patient id -> the site of its first study, which keeps the row
    for study in Study.objects.select_related("patient").order_by("id").iterator():
        site = _site_for(Site, study.source, cache)
        patient = study.patient
        if patient.id not in first_site:
            first_site[patient.id] = site.id
            patient.site = site
            patient.save(update_fields=["site"])
        elif first_site[patient.id] != site.id:
            key = (patient.id, site.id)
            if key not in copies:
                copies[key] = Patient.objects.create(site=site, ref=patient.ref, split=patient.split)
            patient = copies[key]
        study.site, study.patient, study.source = site, patient, site.slug
        study.save(update_fields=["site", "patient", "source"])
    orphans = Patient.objects.filter(site__isnull=True)
    if orphans.exists():
        orphans.update(site=_site_for(Site, "", cache))
    sites = list(Site.objects.all())
    for role in ("reviewer", "uploader"):
        group = Group.objects.filter(name=role).first()
        if group is None:
            continue
        for user in group.user_set.all():
            for site in sites:
                SiteMembership.objects.get_or_create(user=user, site=site, defaults={"role": role})


class Migration(migrations.Migration):
    dependencies = [("studies", "0004_sites_and_memberships")]

    operations = [migrations.RunPython(sites_from_sources, migrations.RunPython.noop)]
