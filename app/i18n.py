"""The language and the time zone of each request.

Language: the user's own choice, else the browser's Accept-Language, else the facility's default. Time zone: the
user's own, else their facility's, else UTC. Storage stays UTC; these only decide how text and times are shown.
Catalogues live in ``app/translations/<locale>/LC_MESSAGES/messages.po``; adding a language is adding a catalogue.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from babel import Locale
from babel import dates as babel_dates
from flask import Blueprint, Flask, g, has_request_context, redirect, request, session
from flask_babel import Babel, get_locale, get_timezone, gettext
from flask_login import current_user
from werkzeug.wrappers import Response

from app import db
from app.catalogue import N_
from app.transactions import commit_at_request_end

# Catalogue name -> the BCP 47 tag used in <html lang> and HTTP; English is the source language.
LANGUAGES: dict[str, str] = {"en": "en", "zh_Hans": "zh-Hans"}
# Accept-Language tags a browser sends for each catalogue (Chinese browsers usually send zh-CN).
_BROWSER_TAGS: dict[str, str] = {"en": "en", "zh": "zh_Hans", "zh-cn": "zh_Hans", "zh-hans": "zh_Hans",
                                 "zh-sg": "zh_Hans", "zh-hans-cn": "zh_Hans"}
# The name of each language in itself, for the switcher.
LANGUAGE_NAMES: dict[str, str] = {"en": "English", "zh_Hans": "简体中文"}
DEFAULT_TIMEZONE = "UTC"

babel = Babel()
bp = Blueprint("i18n", __name__)


# Words that reach pages from data (enum labels, status values, HTTP reason phrases): marked here so the catalogue
# has them, translated where they are shown (``gettext(label)``).
DYNAMIC_WORDS = (
    N_("Patient"), N_("Doctor"), N_("Clinic staff"), N_("Pharmacist"), N_("Admin"), N_("Consult guest"),
    N_("Proposed"), N_("Booked"), N_("Checked in"), N_("Fulfilled"), N_("Cancelled"), N_("No-show"),
    N_("Ready for pickup"), N_("Handed over"), N_("Being prepared"), N_("On hold"), N_("Declined"),
    N_("Routine"), N_("Urgent"), N_("Waiting"), N_("Being read"), N_("Preliminary"), N_("Final"), N_("Amended"),
    N_("Requested"), N_("Female"), N_("Male"), N_("Other"), N_("Unknown"), N_("Mild"), N_("Moderate"), N_("Severe"),
    N_("Resolved"), N_("Inactive"), N_("Success"), N_("Denied"), N_("Failure"), N_("Hospital"), N_("Clinic"),
    N_("Addendum"),
    N_("Allergy"), N_("Condition"), N_("Medication"),
    N_("draft"), N_("active"), N_("on-hold"), N_("cancelled"), N_("completed"), N_("stopped"),
    N_("Bad Request"), N_("Not Found"), N_("Method Not Allowed"), N_("Unauthorized"), N_("Forbidden"),
    N_("Request Entity Too Large"), N_("Too Many Requests"), N_("Unsupported Media Type"), N_("Conflict"),
    N_("Gone"), N_("Not Acceptable"), N_("Internal Server Error"), N_("Service Unavailable"),
    N_("The requested URL was not found on the server. If you entered the URL manually please check your spelling "
       "and try again."),
)


def select_locale() -> str:
    """User setting, then the language chosen in this browser, then Accept-Language, then the facility default.

    Outside a request (CLI, background jobs) there is no browser: callers pick the recipient's language with
    ``flask_babel.force_locale``, else English.
    """
    if not has_request_context():
        return "en"
    user = current_user if current_user and current_user.is_authenticated else None
    if user is not None and getattr(user, "locale", None) in LANGUAGES:
        return user.locale
    chosen = session.get("locale")
    if chosen in LANGUAGES:
        return chosen
    best = request.accept_languages.best_match(list(_BROWSER_TAGS))
    if best:
        return _BROWSER_TAGS[best.lower()]
    facility = getattr(user, "facility", None) if user is not None else None
    if facility is not None and facility.default_locale in LANGUAGES:
        return facility.default_locale
    return "en"


def select_timezone() -> str:
    """The user's zone, else their facility's (a patient: their clinic's), else UTC."""
    if not has_request_context():
        return DEFAULT_TIMEZONE
    user = current_user if current_user and current_user.is_authenticated else None
    if user is not None:
        if valid_zone(getattr(user, "timezone", None)):
            return user.timezone
        inherited = inherited_zone(user)
        if valid_zone(inherited):
            return inherited
    hint = g.get("timezone_hint")
    return hint if valid_zone(hint) else DEFAULT_TIMEZONE


def html_lang(locale: str) -> str:
    """The BCP 47 tag for ``<html lang>``."""
    return LANGUAGES.get(locale, "en")


def translated(word: str) -> str:
    """A word that comes from data (an enum label, a field name), marked where it is defined, in today's language."""
    return gettext(word)


def _safe_next(target: str | None) -> str:
    """Back to the page the switcher was on: a path on this site only, never another host."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@bp.post("/language")
def choose_language() -> Response:
    """The switcher in the header: this browser keeps the choice, and a signed-in user's account too."""
    locale = request.form.get("locale", "")
    if locale in LANGUAGES:
        session["locale"] = locale
        if current_user and current_user.is_authenticated and hasattr(current_user, "locale"):
            current_user.locale = locale
    return redirect(_safe_next(request.form.get("next")), code=303)


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "en")
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", DEFAULT_TIMEZONE)
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
    init_time_filters(app)
    app.jinja_env.policies["ext.i18n.trimmed"] = True
    app.jinja_env.filters["translated"] = translated
    app.register_blueprint(commit_at_request_end(bp))

    @app.context_processor
    def _language() -> dict[str, object]:
        locale = str(get_locale() or "en")
        return {"current_locale": locale, "html_lang": html_lang(locale), "language_names": LANGUAGE_NAMES}


# ---------------------------------------------------------------- time zones and the times shown in them


def valid_zone(name: str | None) -> bool:
    """True for an IANA zone name this machine knows (``zoneinfo.available_timezones``)."""
    return bool(name) and name in available_zones()


@functools.cache
def available_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() | {"UTC"})


def zone_groups() -> list[tuple[str, list[str]]]:
    """Every IANA zone grouped by its region ("Asia", "Europe", ...), for a searchable choice list."""
    groups: dict[str, list[str]] = {}
    for name in sorted(available_zones()):
        if "/" not in name and name != "UTC":
            continue  # legacy aliases such as "PRC" or "EST5EDT"; their canonical names are listed
        region = name.split("/", 1)[0] if "/" in name else "UTC"
        if region in ("Etc", "SystemV", "US", "Brazil", "Canada", "Chile", "Mexico"):
            continue
        groups.setdefault(region, []).append(name)
    return sorted(groups.items())


def _patient_facility_zone(user: Any) -> str | None:
    """A patient account has no facility of its own: the zone of the clinic that registered them."""
    from app.facilities.models import Facility
    from app.patients.models import Patient

    return db.session.scalar(sa.select(Facility.timezone).join(Patient, Patient.facility_id == Facility.id)
                             .where(Patient.user_id == user.id))


def inherited_zone(user: Any) -> str | None:
    """The zone a user gets when they choose none: their facility's, or for a patient their clinic's."""
    facility = getattr(user, "facility", None)
    if facility is not None and facility.timezone:
        return facility.timezone
    if getattr(user, "id", None) is not None and getattr(user, "role", None) is not None \
            and user.role.value == "patient":
        return _patient_facility_zone(user)
    return None


def zone_of(user: Any) -> str:
    """The zone ``user`` reads times in: their own, else their facility's (a patient: their clinic's), else UTC."""
    own = getattr(user, "timezone", None)
    if valid_zone(own):
        return own
    inherited = inherited_zone(user)
    return inherited if valid_zone(inherited) else DEFAULT_TIMEZONE


def locale_of(user: Any) -> str:
    """The language a message to ``user`` is written in outside a request (reminders, the outbox)."""
    own = getattr(user, "locale", None)
    if own in LANGUAGES:
        return own
    facility = getattr(user, "facility", None)
    if facility is not None and facility.default_locale in LANGUAGES:
        return facility.default_locale
    return "en"


STYLES = ("medium", "weekday", "short", "time", "date")


def _pattern(locale: Locale, style: str, zone: bool) -> str:
    """A Babel pattern for ``style`` in ``locale`` (minutes, no seconds), with the zone's localized name."""
    time_part = locale.time_formats["short"].pattern
    if style == "time":
        pattern = time_part
    else:
        skeleton = {"medium": "yMMMd", "weekday": "yMMMEd", "short": "yMd", "date": "yMMMEd"}[style]
        date_part = locale.datetime_skeletons[skeleton].pattern
        if style == "date":
            return date_part
        pattern = str(locale.datetime_formats["medium"]).replace("{1}", date_part).replace("{0}", time_part)
    return f"{pattern} zzzz" if zone else pattern


def _utc_named(pattern: str, tz: str) -> str:
    """UTC is named "UTC" in every language (CLDR's long name, "Coordinated Universal Time", says no more)."""
    return pattern.replace("zzzz", "'UTC'") if tz in ("UTC", "Etc/UTC") else pattern


def format_when(moment: datetime | None, style: str = "medium", *, zone: bool = True, tz: str | None = None,
                locale: str | None = None) -> str:
    """A stored (UTC) time as the reader reads it: in their zone and language, with the zone's name.

    In a request the zone and language are Flask-Babel's (:func:`select_timezone`, :func:`select_locale`); for a
    message to someone else pass theirs (:func:`zone_of`, :func:`locale_of`).
    """
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if tz is None:
        tz = str(get_timezone()) if has_request_context() else DEFAULT_TIMEZONE
    loc = Locale.parse(locale or (str(get_locale() or "en") if has_request_context() else "en"))
    zone_info = zoneinfo.ZoneInfo(tz)
    return babel_dates.format_datetime(moment.astimezone(zone_info), _utc_named(_pattern(loc, style, zone), tz),
                                       tzinfo=zone_info, locale=loc)


def local_date(moment: datetime, tz: str | None = None) -> date:
    """The calendar day ``moment`` falls on for the reader (or in ``tz``)."""
    name = tz or (str(get_timezone()) if has_request_context() else DEFAULT_TIMEZONE)
    return moment.astimezone(zoneinfo.ZoneInfo(name)).date()


def zone_label(tz: str | None = None, locale: str | None = None, *, at: datetime | None = None) -> str:
    """The reader's zone by name, e.g. "China Standard Time (Asia/Shanghai)", for headings over lists of times."""
    name = tz or (str(get_timezone()) if has_request_context() else DEFAULT_TIMEZONE)
    loc = Locale.parse(locale or (str(get_locale() or "en") if has_request_context() else "en"))
    zone_info = zoneinfo.ZoneInfo(name)
    moment = (at or db.utcnow()).astimezone(zone_info)
    if name in ("UTC", "Etc/UTC"):
        return "UTC"
    return f"{babel_dates.format_datetime(moment, 'zzzz', tzinfo=zone_info, locale=loc)} ({name})"


def reader_zone() -> str:
    """The IANA zone of this request's reader, for scripts that write times themselves."""
    return str(get_timezone()) if has_request_context() else DEFAULT_TIMEZONE


def init_time_filters(app: Flask) -> None:
    app.add_template_global(reader_zone, "reader_zone")
    app.add_template_filter(format_when, "when")
    app.add_template_filter(local_date, "local_date")
    app.add_template_global(zone_label, "zone_label")
