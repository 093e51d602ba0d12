#!/usr/bin/env bash
# Fetch the console's third-party browser files from the npm registry into collector/static/vendor/
# and (re)write vendor/MANIFEST.json: package, pinned version, the registry's sha512 integrity of
# the tarball, and the sha256 of every file copied. The collector serves exactly the files the
# manifest lists (no CDN); tests/unit/test_console_vendor.py checks the files against it.
#   scripts/vendor-console.sh           fetch the pinned versions below, verify, copy, write the manifest
# Needs npm (scripts/setup.sh --tests installs it) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

# package@version  target folder  files to copy (relative to the package root)
PINS=(
  "swagger-ui-dist@5.35.0 swagger-ui LICENSE NOTICE swagger-ui.css swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt"
  "leaflet@1.9.4 leaflet LICENSE dist/leaflet.css dist/leaflet.js"
  "uplot@1.6.32 uplot LICENSE dist/uPlot.min.css dist/uPlot.iife.min.js"
  "gcoord@1.0.7 gcoord LICENSE dist/gcoord.global.prod.js"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=collector/static/vendor
entries=()
for pin in "${PINS[@]}"; do
  read -r spec folder files <<<"$pin"
  # npm pack checks the tarball against the registry's integrity before it writes it
  (cd "$work" && npm pack --silent "$spec" >/dev/null)
  name=${spec%@*}
  version=${spec##*@}
  tarball=$(ls "$work"/"${name}"-"${version}".tgz)
  integrity=$(npm view "$spec" dist.integrity)
  got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  [ "$got" = "$integrity" ] || { echo "$spec: tarball sha512 $got != registry $integrity" >&2; exit 1; }
  mkdir -p "$work/$folder" && tar xzf "$tarball" -C "$work/$folder"
  rm -rf "${out:?}/$folder" && mkdir -p "$out/$folder"
  for f in $files; do cp "$work/$folder/package/$f" "$out/$folder/$(basename "$f")"; done
  entries+=("$name" "$version" "$integrity" "$folder")
done

python3 - "$out" "${entries[@]}" <<'PY'
import hashlib, json, sys
from pathlib import Path
out, rest = Path(sys.argv[1]), sys.argv[2:]
packages = []
for i in range(0, len(rest), 4):
    name, version, integrity, folder = rest[i : i + 4]
    files = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / folder).iterdir())
    }
    packages.append({"npm": name, "version": version, "integrity": integrity,
                     "folder": folder, "sha256": files})
(out / "MANIFEST.json").write_text(json.dumps({"packages": packages}, indent=2) + "\n")
PY
echo "vendored into $out: $(printf '%s ' "${PINS[@]%% *}")"
