#!/usr/bin/env bash
# Translation workflow for puqpanel (catalogs in translations/<lang>/LC_MESSAGES/messages.po).
#
#   scripts/translations.sh extract   # scan puqpanel/ into translations/messages.pot
#   scripts/translations.sh update    # create missing catalogs, merge the .pot into every catalog
#   scripts/translations.sh missing   # list the msgids still untranslated, per language (exit 1 if any)
#   scripts/translations.sh compile   # build the .mo files (not committed; demo.sh, test.sh and CI run this)
#
# Several steps at once: scripts/translations.sh extract update missing
# After `update`, translate the empty msgstr "" entries in each .po, then `compile`.
set -euo pipefail

cd "$(dirname "$0")/.."
LANGS=(en de fr pl uk)
POT=translations/messages.pot

if [ -x .venv/bin/pybabel ]; then
    PYBABEL=.venv/bin/pybabel
    PYTHON=.venv/bin/python
else
    PYBABEL=pybabel
    PYTHON=python3
fi

# Small catalog tool on Babel's own reader/writer.
#   refill:  an empty msgstr takes the translation of the same msgid from the obsolete (#~) entries;
#            the English catalog gets msgstr = msgid.
#   missing: print the untranslated msgids of each non-English catalog; exit 1 if there are any.
po_tool() {
    "$PYTHON" - "$1" "${LANGS[@]}" <<'PY'
import sys
from babel.messages.pofile import read_po, write_po

action, langs = sys.argv[1], sys.argv[2:]
untranslated = 0
for lang in langs:
    path = f"translations/{lang}/LC_MESSAGES/messages.po"
    with open(path, "rb") as fh:
        catalog = read_po(fh, locale=lang)
    if action == "missing":
        if lang == "en":
            continue
        empty = [m for m in catalog if m.id and (not m.string or (isinstance(m.string, tuple) and not all(m.string)))]
        fuzzy = [m for m in catalog if m.id and m.fuzzy]
        for m in empty + fuzzy:
            msgid = m.id if isinstance(m.id, str) else m.id[0]
            print(f"{lang}: {'fuzzy' if m in fuzzy else 'missing'}: {msgid!r}  ({', '.join(f'{f}:{l}' for f, l in m.locations[:2])})")
        untranslated += len(empty) + len(fuzzy)
        print(f"{lang}: {len(catalog) - len(empty)} translated, {len(empty)} missing, {len(fuzzy)} fuzzy", file=sys.stderr)
        continue
    changed = 0
    for m in catalog:
        if not m.id or (m.string and (not isinstance(m.string, tuple) or all(m.string))):
            continue
        if lang == "en":
            m.string = m.id if isinstance(m.id, str) else tuple(m.id[min(i, 1)] for i in range(catalog.num_plurals))
            changed += 1
            continue
        old = catalog.obsolete.get(catalog._key_for(m.id, m.context))
        if old is not None and old.string and not old.fuzzy:
            m.string = old.string
            del catalog.obsolete[catalog._key_for(m.id, m.context)]
            changed += 1
    if changed:
        catalog.fuzzy = False
        with open(path, "wb") as fh:
            write_po(fh, catalog)
        print(f"{lang}: filled {changed} entries", file=sys.stderr)
sys.exit(1 if untranslated else 0)
PY
}

extract() {
    "$PYBABEL" -q extract -F babel.cfg -k _l -k lazy_gettext -k lazy_pgettext:1c,2 \
        --sort-by-file --add-comments=Translators: \
        --project=puqpanel --copyright-holder="puqpanel contributors" \
        -o "$POT" puqpanel
}

update() {
    [ -f "$POT" ] || extract
    for lang in "${LANGS[@]}"; do
        po="translations/$lang/LC_MESSAGES/messages.po"
        if [ ! -f "$po" ]; then
            "$PYBABEL" init -i "$POT" -d translations -l "$lang"
        else
            # No fuzzy matching: a guessed translation of a similar string is worse than none.
            "$PYBABEL" update -i "$POT" -d translations -l "$lang" --no-fuzzy-matching
        fi
    done
    # Give back translations of strings that came back (pybabel keeps them only as obsolete #~ entries)
    # and make the English catalog complete (msgstr = msgid).
    po_tool refill
}

missing() {
    po_tool missing
}

compile() {
    # -f: a catalog whose header is still marked fuzzy compiles too; empty msgstr entries simply fall
    # back to English at run time.
    "$PYBABEL" -q compile -f -d translations -D messages
    echo "compiled: $(ls translations/*/LC_MESSAGES/messages.mo | wc -l) catalogs (translations/*/LC_MESSAGES/messages.mo)"
}

if [ $# -eq 0 ]; then
    sed -n '2,10p' "$0"
    exit 2
fi
for step in "$@"; do
    case "$step" in
        extract|update|missing|compile) "$step" ;;
        *) echo "unknown step: $step (extract, update, missing, compile)" >&2; exit 2 ;;
    esac
done
