#!/usr/bin/env bash
# `npm run setup`: everything a fresh Debian machine with Node 20 needs to build cowdisk and run
# its tests. Installs the system tools the tests drive (only those missing), the npm packages,
# then builds the TypeScript and the native addon. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the test suite and benchmarks use, each for a reason:
#   qemu-utils        qemu-img, qemu-io, qemu-nbd (interop tests, the qcow2 peer in bench/compare)
#   libnbd-bin        nbdinfo, nbdcopy, nbdfuse (interop tests, the kernel path through FUSE)
#   python3-libnbd    libnbd from Python (error-code and concurrency tests)
#   fio               the nbd ioengine (verify test, bench/compare)
#   nbdkit            the cow filter and file plugin peers in bench/compare
#   fuse3             fusermount3 for nbdfuse
#   e2fsprogs         mkfs.ext4, e2fsck, debugfs (filesystem tests, diff --files)
#   util-linux        losetup
#   qemu-system-x86   boots a real Linux kernel for the /dev/nbd0 tests
#   linux-image-amd64 that kernel and its nbd module
#   busybox-static    the guest's tiny initramfs
#   nbd-client        the kernel's reference NBD client, run inside the guest
#   kmod              modprobe in the guest
#   gnutls-bin        certtool and psktool: the TLS tests make their certificates and PSK files with them
#   g++ make python3  node-gyp builds the native addon (native/) with them
#   liblz4-dev        the addon's lz4 for sealed layers' frames (native/src/frames.cc)
#   docker-registry   Docker Distribution, the real OCI registry the registry tests push to and pull from
#   apache2-utils     htpasswd -B, the bcrypt password file of the registry's htpasswd auth
#   openssl           the test CA and certificates (registry TLS, the token server's signing key)
PACKAGES=(qemu-utils libnbd-bin python3-libnbd fio nbdkit fuse3 e2fsprogs util-linux
  qemu-system-x86 linux-image-amd64 busybox-static nbd-client kmod gnutls-bin g++ make python3 liblz4-dev
  docker-registry apache2-utils openssl)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: Debian packages present"
fi

echo "setup: npm packages"
if [[ -f package-lock.json ]]; then npm ci --no-fund --no-audit; else npm install --no-fund --no-audit; fi

echo "setup: building TypeScript"
npm run --silent build

echo "setup: building the native addon"
if ! npm run --silent build:native; then
  echo "setup: WARNING: the native addon did not build; everything but 'cowdisk attach' works without it" >&2
fi
echo "setup: done"
