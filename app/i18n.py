"""The language and the time zone of each request.

Language: the user's own choice, else the browser's Accept-Language, else the facility's default. Time zone: the
user's own, else their facility's, else UTC. Storage stays UTC; these only decide how text and times are shown.
Catalogues live in ``app/translations/<locale>/LC_MESSAGES/messages.po``; adding a language is adding a catalogue.
"""

from __future__ import annotations

from flask import Flask, g, has_request_context, request, session
from flask_babel import Babel, get_locale
from flask_login import current_user

# Catalogue name -> the BCP 47 tag used in <html lang> and HTTP; English is the source language.
LANGUAGES: dict[str, str] = {"en": "en", "zh_Hans": "zh-Hans"}
# Accept-Language tags a browser sends for each catalogue (Chinese browsers usually send zh-CN).
_BROWSER_TAGS: dict[str, str] = {"en": "en", "zh": "zh_Hans", "zh-cn": "zh_Hans", "zh-hans": "zh_Hans",
                                 "zh-sg": "zh_Hans", "zh-hans-cn": "zh_Hans"}
DEFAULT_TIMEZONE = "UTC"

babel = Babel()


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
    """The user's zone, else their facility's, else UTC."""
    if not has_request_context():
        return DEFAULT_TIMEZONE
    user = current_user if current_user and current_user.is_authenticated else None
    if user is not None:
        if getattr(user, "timezone", None):
            return user.timezone
        facility = getattr(user, "facility", None)
        if facility is not None and facility.timezone:
            return facility.timezone
    return g.get("timezone_hint") or DEFAULT_TIMEZONE


def html_lang(locale: str) -> str:
    """The BCP 47 tag for ``<html lang>``."""
    return LANGUAGES.get(locale, "en")


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "en")
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", DEFAULT_TIMEZONE)
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)

    @app.context_processor
    def _language() -> dict[str, str]:
        locale = str(get_locale() or "en")
        return {"current_locale": locale, "html_lang": html_lang(locale)}
