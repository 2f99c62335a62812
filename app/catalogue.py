"""The mark for strings that go into the translation catalogue where they are defined (``N_``, as gettext calls
it) and are translated where they are shown. A module of its own so that anything may import it, including the
error classes that :mod:`app.i18n` itself depends on."""

from __future__ import annotations


def N_(message: str) -> str:  # noqa: N802 - the usual gettext name for "mark only"
    """Mark a string for the catalogue where it is defined; it is translated where it is shown."""
    return message
