"""Keep the translation catalogues in step with the code.

    python scripts/i18n.py          # extract texts, update every .po, compile the .mo files
    python scripts/i18n.py --check  # exit 1 if a .po lacks a text or a .mo is stale

Message ids are the English texts in `services/texts/`; the English catalogue is therefore
empty and Chinese (`zh`) must translate every message.
"""

from __future__ import annotations

import argparse
import gettext
import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALES = ROOT / "services" / "locales"
DOMAIN = "pondbot"
SOURCES = [ROOT / "bot", ROOT / "handlers", ROOT / "scheduler", ROOT / "services"]
KEYWORDS = {"_": None, "N_": None, "gettext": None}


def extract() -> Catalog:
    template = Catalog(domain=DOMAIN)
    for src in SOURCES:
        for _file, _line, message, _comments, _ctx in extract_from_dir(
            src, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            template.add(message)
    return template


def po_path(lang: str) -> Path:
    return LOCALES / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def load(lang: str) -> Catalog:
    path = po_path(lang)
    if path.exists():
        with path.open("rb") as f:
            return read_po(f, locale=lang, domain=DOMAIN)
    return Catalog(locale=lang, domain=DOMAIN)


def mo_bytes(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    write_mo(buf, catalog)
    return buf.getvalue()


def po_bytes(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    write_po(buf, catalog, omit_header=False, no_location=True, width=100, sort_output=True)
    return buf.getvalue()


def messages_of(catalog: Catalog) -> dict[str, str]:
    """The translations themselves; headers and dates don't count."""
    return {str(m.id): str(m.string or "") for m in catalog if m.id}


def messages_of_po(lang: str) -> dict[str, str]:
    return messages_of(load(lang)) if po_path(lang).exists() else {}


def messages_of_mo(path: Path) -> dict[str, str]:
    with path.open("rb") as f:
        catalog = gettext.GNUTranslations(f)
    raw: dict[str, str] = catalog._catalog  # type: ignore[attr-defined]
    return {k: v for k, v in raw.items() if k}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    template = extract()
    problems: list[str] = []
    for lang in ("zh", "en"):
        catalog = load(lang)
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        untranslated = [m.id for m in catalog if m.id and not m.string]
        if lang == "zh" and untranslated:
            problems += [f"zh: untranslated {mid!r}" for mid in untranslated]
        new_po, new_mo = po_bytes(catalog), mo_bytes(catalog)
        mo_path = po_path(lang).with_suffix(".mo")
        if args.check:
            if messages_of_po(lang) != messages_of(catalog):
                problems.append(f"{lang}: {po_path(lang)} is out of date")
            translated = {k: v for k, v in messages_of(catalog).items() if v}
            if not mo_path.exists() or messages_of_mo(mo_path) != translated:
                problems.append(f"{lang}: {mo_path} is stale")
        else:
            po_path(lang).parent.mkdir(parents=True, exist_ok=True)
            po_path(lang).write_bytes(new_po)
            mo_path.write_bytes(new_mo)
    for p in problems:
        print(p, file=sys.stderr)
    if problems and args.check:
        print("run: python scripts/i18n.py", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
