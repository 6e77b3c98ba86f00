#!/usr/bin/env bash
# Refreshes the vendored JavaScript libraries of the web page (tools/serve/web/vendor/) from the
# npm registry, at the pinned versions below. The build never runs this: the vendored files are
# committed, so building needs no network. After changing a version, run it and commit vendor/.
set -euo pipefail
MARKED_VERSION=18.3.0     # Markdown -> HTML (MIT)
DOMPURIFY_VERSION=3.5.0   # HTML sanitiser (Apache-2.0 or MPL-2.0)

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "marked@${MARKED_VERSION}" "dompurify@${DOMPURIFY_VERSION}" >/dev/null
mkdir marked dompurify
tar xzf "marked-${MARKED_VERSION}.tgz" -C marked
tar xzf "dompurify-${DOMPURIFY_VERSION}.tgz" -C dompurify

mkdir -p "$here/vendor"
# The minified UMD builds, which carry their licence headers.
cp marked/package/lib/marked.umd.js "$here/vendor/marked.umd.js"
cp marked/package/LICENSE "$here/vendor/LICENSE.marked"
cp dompurify/package/dist/purify.min.js "$here/vendor/purify.min.js"
cp dompurify/package/LICENSE "$here/vendor/LICENSE.dompurify"
cat >"$here/vendor/VERSIONS" <<VERSIONS
marked ${MARKED_VERSION} (lib/marked.umd.js)
dompurify ${DOMPURIFY_VERSION} (dist/purify.min.js)
VERSIONS
echo "vendored marked ${MARKED_VERSION} and dompurify ${DOMPURIFY_VERSION} into $here/vendor"
