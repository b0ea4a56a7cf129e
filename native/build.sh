#!/bin/sh
# `npm run build:native`: builds native/build/Release/cowdisk_native.node with node-gyp.
#
# node-gyp normally downloads Node's headers from nodejs.org, which an offline machine cannot
# reach; the node running this script ships its own headers under <prefix>/include/node, so point
# node-gyp there when they exist. node-gyp itself comes with npm: npm puts it on PATH for its
# scripts, and outside npm we call npm's bundled copy.
set -eu
cd "$(dirname "$0")"

prefix=$(node -p 'require("path").resolve(process.execPath, "..", "..")')
if [ -f "$prefix/include/node/node_api.h" ]; then
  set -- --nodedir="$prefix" "$@"
fi

if command -v node-gyp >/dev/null 2>&1; then
  exec node-gyp rebuild "$@"
fi
npm_root=$(npm root -g)
exec node "$npm_root/npm/node_modules/node-gyp/bin/node-gyp.js" rebuild "$@"
