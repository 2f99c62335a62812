"""The catalogue is complete: every string marked in the code is in each language's catalogue, translated and not
fuzzy, and no template shows English text that bypasses the catalogue."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from tests.i18n.scan import untranslated

ROOT = Path(__file__).resolve().parents[2]
CATALOGUES = sorted((ROOT / "app" / "translations").glob("*/LC_MESSAGES/messages.po"))
# Text that is the same in every language: product and standard names, file types, commands.
ALLOWED = frozenset({
    "client_id", "REC", "hospital run", "ID", "SHA-256", "PDF", "STAT", "/api/v1/prescriptions/signing-key",
    "python -m app.prescriptions.signing --public-key key.pem PAYLOAD",
})


def _keywords() -> list[str]:
    """The extraction keywords `make translations` uses, read from the Makefile so both stay one list."""
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("BABEL_KEYWORDS"))
    return line.split(":=", 1)[1].split()


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> set[str | tuple[str, ...]]:
    pot = tmp_path_factory.mktemp("i18n") / "messages.pot"
    pybabel = Path(sys.executable).with_name("pybabel")
    subprocess.run([str(pybabel), "-q", "extract", "-F", "babel.cfg", *_keywords(), "-o", str(pot), "."],  # noqa: S603
                   cwd=ROOT, check=True)
    with pot.open("rb") as fh:
        return {m.id for m in read_po(fh) if m.id}


def test_there_is_a_chinese_catalogue() -> None:
    assert [p.parts[-3] for p in CATALOGUES] == ["zh_Hans"]


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: p.parts[-3])
def test_every_marked_string_is_in_the_catalogue_translated_and_not_fuzzy(po: Path, extracted: set) -> None:
    with po.open("rb") as fh:
        catalog = read_po(fh)
    have = {m.id: m for m in catalog if m.id}
    missing = sorted(str(i) for i in extracted - set(have))
    assert not missing, f"{len(missing)} marked strings not in {po.parts[-3]} (make translations): {missing[:10]}"
    empty = sorted(str(i) for i, m in have.items()
                   if not (m.string if isinstance(m.string, str) else all(m.string)))
    assert not empty, f"{len(empty)} untranslated entries in {po.parts[-3]}: {empty[:10]}"
    fuzzy = sorted(str(i) for i, m in have.items() if m.fuzzy)
    assert not fuzzy, f"fuzzy entries in {po.parts[-3]}: {fuzzy[:10]}"


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: p.parts[-3])
def test_translations_keep_every_placeholder(po: Path) -> None:
    """A translation that drops or renames %(name)s fails at run time; catch it here."""
    placeholder = re.compile(r"%\(\w+\)s|\{\w+\}")
    with po.open("rb") as fh:
        catalog = read_po(fh)
    wrong = []
    for m in catalog:
        if not m.id:
            continue
        source = m.id if isinstance(m.id, str) else m.id[1]
        target = m.string if isinstance(m.string, str) else m.string[0]
        want, got = set(placeholder.findall(source)), set(placeholder.findall(target))
        if isinstance(m.id, tuple):  # one plural form in Chinese: the count may be left out
            want.discard("%(num)s")
            got.discard("%(num)s")
        if want != got:
            wrong.append((source, target))
    assert not wrong, wrong[:5]


def test_no_template_text_bypasses_the_catalogue() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}: {text}"
             for path in sorted((ROOT / "app").rglob("templates/**/*.html"))
             for line, text in untranslated(path.read_text(), ALLOWED)]
    assert not found, "text not wrapped in _() / {% trans %}:\n" + "\n".join(found[:20])


def test_the_checker_flags_bare_text_and_attributes() -> None:
    """The template check itself: bare words and read-aloud attributes are found, wrapped ones are not."""
    src = ('<h1>Hello</h1><p>{{ _("Wrapped") }}</p><img alt="A picture"><p>{% trans %}Also wrapped{% endtrans %}</p>'
           '<input type="submit" value="Go on"><button type="submit" name="do" value="allow">{{ _("Go") }}</button>'
           '<p title="{{ _(\'Fine\') }}">·</p>')
    # a button's value is what the form sends, not what it shows: it stays the same in every language
    assert [text for _, text in untranslated(src)] == ["Hello", 'alt="A picture"', 'value="Go on"']
