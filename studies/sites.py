"""Sites and roles: who may do what, and where. The access rules of studies/selectors.py build on these.

A user's roles come from ``SiteMembership`` rows (uploader, reviewer, site lead at one site each).
Model-level powers (train, promote, override the gate, export) are Django permissions on the training
models, granted through groups (``ml-lead``); ``is_staff`` only opens the admin. Superusers may do
everything everywhere.
"""

import hashlib

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Exists, OuterRef, QuerySet
from django.utils.text import slugify

from studies.models import Site, SiteMembership, Study

Role = SiteMembership.Role
REVIEW_ROLES = (Role.REVIEWER, Role.LEAD)
UPLOAD_ROLES = (Role.UPLOADER, Role.REVIEWER, Role.LEAD)
# Permissions that also let a user read models, runs and datasets (they manage them).
TRAINING_PERMISSIONS = (
    "training.promote_modelversion",
    "training.override_modelversion",
    "training.start_trainingrun",
    "training.export_datasetsnapshot",
)
DEFAULT_SITE = "default"
ADJUDICATOR_GROUP = "adjudicator"


def user_site_ids(user: AbstractBaseUser, *, roles: tuple[str, ...] = UPLOAD_ROLES) -> list[int]:
    """Ids of the sites where the user holds one of ``roles``."""
    return [site_id for site_id, role in _memberships(user)[0] if role in roles]


def _roles(user: AbstractBaseUser) -> frozenset[str]:
    """The roles a user holds at any site (plus "adjudicator" for the group)."""
    return _memberships(user)[1]


def _memberships(user: AbstractBaseUser) -> tuple[tuple[tuple[int, str], ...], frozenset[str]]:
    """((site id, role) of each membership, the roles held anywhere plus "adjudicator" for the group), read
    in one query once per user object (one request): permissions, the access rules and the serializers
    all ask, for every row. The site ids go into the lists' queries as values (a subquery there kept
    PostgreSQL from reading a page from the lists' index). memberships_changed() forgets them."""
    if "_site_memberships" not in user.__dict__:
        in_group = user.groups.through.objects.filter(user_id=OuterRef("user_id"), group__name=ADJUDICATOR_GROUP)
        rows = SiteMembership.objects.filter(user_id=user.pk).annotate(adjudicator=Exists(in_group)).order_by()
        memberships, roles = [], set()
        for site_id, role, adjudicator in rows.values_list("site_id", "role", "adjudicator"):
            memberships.append((site_id, role))
            roles.add(role)
            if adjudicator:
                roles.add(ADJUDICATOR_GROUP)
        user.__dict__["_site_memberships"] = (tuple(memberships), frozenset(roles))
    return user.__dict__["_site_memberships"]


def memberships_changed(user: AbstractBaseUser) -> None:
    """The user's memberships changed in this request: the next check reads them again."""
    user.__dict__.pop("_site_memberships", None)


def user_is_reviewer(user: AbstractBaseUser) -> bool:
    """Reviews somewhere: a reviewer or site lead at some site, or a superuser."""
    if not user.is_authenticated:
        return False
    return user.is_superuser or bool(_roles(user) & set(REVIEW_ROLES))


def user_can_upload(user: AbstractBaseUser) -> bool:
    if not user.is_authenticated:
        return False
    return user.is_superuser or bool(_roles(user))


def user_has_role(user: AbstractBaseUser) -> bool:
    """Any role at all: a site membership, a training permission, or superuser. Reading models,
    runs, plots and datasets needs one; a bare login does not."""
    if not user.is_authenticated:
        return False
    return user_can_upload(user) or any(user.has_perm(perm) for perm in TRAINING_PERMISSIONS)


def role_required(user: AbstractBaseUser) -> None:
    """Pages that need a role (any, see user_has_role) refuse a bare login with this."""
    if not user_has_role(user):
        raise PermissionDenied("Your account has no role: an administrator must add you to a site.")


def user_is_adjudicator(user: AbstractBaseUser) -> bool:
    """Settles readers' disagreements: a site lead, a reviewer in the ``adjudicator`` group, or a
    superuser. Which studies they see still follows their sites."""
    if not user.is_authenticated:
        return False
    if user.is_superuser or Role.LEAD in _roles(user):
        return True
    return Role.REVIEWER in _roles(user) and ADJUDICATOR_GROUP in _roles(user)


def user_is_site_lead(user: AbstractBaseUser) -> bool:
    """Leads a site (or is a superuser): reads the audit trail of the sites they lead."""
    if not user.is_authenticated:
        return False
    return user.is_superuser or Role.LEAD in _roles(user)


def _holds_role_at(user: AbstractBaseUser, site_id: int, roles: tuple[str, ...]) -> bool:
    return user.is_superuser or site_id in user_site_ids(user, roles=roles)


def user_reviews_site(user: AbstractBaseUser, site_id: int) -> bool:
    """A superuser, or a reviewer or site lead of that site: who may read, adjudicate or be assigned its studies."""
    return _holds_role_at(user, site_id, REVIEW_ROLES)


def user_leads_site(user: AbstractBaseUser, site_id: int) -> bool:
    """A superuser, or a site lead of that site: who may delete (erase) its studies."""
    return _holds_role_at(user, site_id, (Role.LEAD,))


def study_delete_check_allowed(*, study: Study, user: AbstractBaseUser) -> None:
    """Only a site lead of the study's site, or a superuser, deletes it; PermissionDenied (a 403) says so."""
    if not user_leads_site(user, study.site_id):
        raise PermissionDenied(f"Only site leads of {study.site} (or a superuser) may delete this study.")


def review_check_allowed(*, study: Study, reviewer: AbstractBaseUser) -> None:
    """A reviewer or site lead of the study's site may review it, never their own upload unless
    ALLOW_SELF_REVIEW is on. PermissionDenied (a 403) says which rule refused."""
    if not user_reviews_site(reviewer, study.site_id):
        raise PermissionDenied(f"Only reviewers or site leads of {study.site} may review this study.")
    if study.uploaded_by_id == reviewer.pk and not settings.ALLOW_SELF_REVIEW:
        raise PermissionDenied("You uploaded this study; another reviewer must review it.")


def site_list_for_upload(*, user: AbstractBaseUser) -> QuerySet[Site]:
    if user.is_superuser:
        return Site.objects.all()
    return Site.objects.filter(pk__in=user_site_ids(user, roles=UPLOAD_ROLES))


def site_for_upload(*, user: AbstractBaseUser, source: str = "") -> Site | None:
    """The existing site an upload names (``source``: slug or name), or the uploader's only site when
    blank; None when ``source`` names a site that does not exist yet and OPEN_SITES lets the upload
    open it (site_open_for_upload, in the upload's transaction). ValidationError on ``source`` otherwise."""
    sites = site_list_for_upload(user=user)
    source = source.strip()
    if source:
        site = sites.filter(slug=source).first() or sites.filter(name=source).first()
        if site is None and settings.OPEN_SITES and not _site_exists(source):
            return None
        if site is None:
            allowed = ", ".join(sites.values_list("slug", flat=True)) or "none"
            raise ValidationError({"source": f"You cannot upload to site {source!r}; your sites: {allowed}."})
        return site
    choices = list(sites[:2])
    if len(choices) == 1:
        return choices[0]
    if not choices:
        raise ValidationError({"source": "Your account belongs to no site; an administrator must add you to one."})
    raise ValidationError({"source": f"Name the site: one of {', '.join(sites.values_list('slug', flat=True))}."})


def site_slug_for_upload(*, site: Site | None, source: str = "") -> str:
    """The slug of the site an upload will belong to (the key of its pseudonyms), before it is opened."""
    return site.slug if site is not None else _slug(source.strip())


def _slug(name: str) -> str:
    """The site's slug: its name in ASCII letters; a name with none (北京医院, Αθήνα) gets one from a hash
    of it, so that two such hospitals never share one site."""
    name = name.strip()
    if not name:
        return DEFAULT_SITE
    return slugify(name)[:100] or f"site-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def _site_exists(name: str) -> bool:
    return Site.objects.filter(slug=_slug(name)).exists() or Site.objects.filter(name=name).exists()


ROLE_RANK = {Role.UPLOADER.value: 0, Role.REVIEWER.value: 1, Role.LEAD.value: 2}


def site_open_for_upload(*, user: AbstractBaseUser, name: str) -> Site:
    """OPEN_SITES (the embedded demo's default, off in production): an upload naming a new source
    opens that site, and the people who work with the uploader (every role holder at the uploader's
    sites, each with their highest role there) may read it at once; the uploader uploads there."""
    team: dict[int, str] = {}
    memberships = SiteMembership.objects.filter(site__in=site_list_for_upload(user=user))
    for member_id, role in memberships.values_list("user_id", "role"):
        if member_id not in team or ROLE_RANK[role] > ROLE_RANK[team[member_id]]:
            team[member_id] = role
    if not user.is_superuser:
        team.setdefault(user.pk, Role.UPLOADER)
    site = site_get_or_create(name=name)
    for member_id, role in team.items():
        SiteMembership.objects.get_or_create(user_id=member_id, site=site, defaults={"role": role})
    memberships_changed(user)
    return site


def site_get_or_create(*, name: str = "") -> Site:
    """The site named ``name`` (by slug or name), created if missing: for imports and the admin's
    commands, never from an uploader's free text."""
    name = name.strip() or DEFAULT_SITE
    slug = _slug(name)
    site = Site.objects.filter(slug=slug).first() or Site.objects.filter(name=name).first()
    if site is None:
        site = Site(name=name[:100], slug=slug)
        site.full_clean()
        site.save()
    return site


def membership_set(*, user: AbstractBaseUser, site: Site, role: str) -> SiteMembership:
    """Give ``user`` the role ``role`` at ``site`` (replacing the role held there)."""
    membership, _ = SiteMembership.objects.update_or_create(user=user, site=site, defaults={"role": role})
    memberships_changed(user)
    return membership
