# Sourced by scripts/demo.sh and scripts/test.sh (not run on its own): moves to the repository root (ROOT)
# and defines as_root, apt_install, ensure_venv and ensure_pdf_tools.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "need root for: $*" >&2; return 1
    fi
}
apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# ensure_venv base|test: .venv (Debian's python3-venv installed first if missing) holding puqpanel, with the
# test extras for "test". Reinstalls when pyproject.toml changed; a test install also serves "base".
ensure_venv() {
    local kind=$1 stamp=.venv/.puqpanel-install hash installed
    if [ ! -x .venv/bin/python ]; then
        if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            echo "==> installing python3-venv (Debian)"
            local pyver
            pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
            apt_install python3-venv "python${pyver}-venv" || apt_install python3-venv
        fi
        echo "==> creating .venv"
        rm -rf .venv
        python3 -m venv .venv
    fi
    hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
    installed=$(cat "$stamp" 2>/dev/null || true)
    if [ "$installed" = "$hash test" ] || [ "$installed" = "$hash $kind" ]; then
        return 0
    fi
    if [ "$kind" = test ]; then
        echo "==> installing puqpanel[test] into .venv"
        .venv/bin/python -m pip install -q -e '.[test]'
    else
        echo "==> installing puqpanel into .venv"
        .venv/bin/python -m pip install -q -e .
    fi
    echo "$hash $kind" >"$stamp"
}

# ensure_pdf_tools base|test: Debian's wkhtmltopdf (invoice PDFs, renders headless) when missing; for
# "test" also poppler-utils (pdftotext, which the PDF tests read the rendered documents with).
ensure_pdf_tools() {
    local kind=$1
    if ! command -v wkhtmltopdf >/dev/null; then
        echo "==> installing Debian's wkhtmltopdf"
        apt_install wkhtmltopdf fonts-liberation
    fi
    if [ "$kind" = test ] && ! command -v pdftotext >/dev/null; then
        echo "==> installing Debian's poppler-utils (pdftotext)"
        apt_install poppler-utils
    fi
}
