#!/usr/bin/env bash
# Re-vendor Leaflet (the console's map) from npm into pipeline/console/static/leaflet/: no CDN, the
# workers serve it themselves. The version and the tarball's npm integrity are pinned here; change
# both together to upgrade (`npm view leaflet@X.Y.Z dist.integrity`).
#
#   scripts/vendor-leaflet.sh    npm pack leaflet@1.9.4, check its integrity, copy dist/leaflet.js,
#                                dist/leaflet.css, dist/images/ and LICENSE (BSD-2-Clause)
set -euo pipefail
VERSION=1.9.4
INTEGRITY="sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA=="
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="$ROOT/pipeline/console/static/leaflet"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm pack --silent "leaflet@$VERSION" >/dev/null
TARBALL="leaflet-$VERSION.tgz"
GOT="sha512-$(openssl dgst -sha512 -binary "$TARBALL" | base64 -w0)"
if [ "$GOT" != "$INTEGRITY" ]; then
    echo "vendor-leaflet: $TARBALL has integrity $GOT, expected $INTEGRITY: not copied" >&2
    exit 1
fi
tar xzf "$TARBALL"
rm -rf "$TARGET"
mkdir -p "$TARGET/images"
cp package/dist/leaflet.js package/dist/leaflet.css package/LICENSE "$TARGET/"
cp package/dist/images/*.png "$TARGET/images/"
echo "$VERSION" > "$TARGET/VERSION"
echo "vendor-leaflet: Leaflet $VERSION in ${TARGET#"$ROOT"/}"
