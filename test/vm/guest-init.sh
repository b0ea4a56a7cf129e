#!/bin/busybox sh
# Stage 1 of the test VM (see test/vm/vm.ts): PID 1 in the initramfs, run by a static busybox.
# It loads the virtio / 9p / virtio-net modules, brings the network up on QEMU's user-mode
# subnet, mounts the host's root read-only as the new root (with fresh /tmp and /run), the
# repository read-only and the run's writable share at the paths they have on the host, then
# switch_root's into the host's own /bin/sh running stage 2 (test/vm/guest-run.sh). /vm.env,
# written by the harness, sets VM_MODULES (load order), VM_RUN_DIR, VM_REPO_DIR, VM_CONTROL_DIR,
# VM_STAGE2, VM_GUEST_IP and VM_DEADLINE_S.
/bin/busybox mkdir -p /bin
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
  echo "cowdisk-vm: stage 1 failed: $*"
  poweroff -f
}

mount -t devtmpfs devtmpfs /dev || fail "devtmpfs"
mount -t proc proc /proc || fail "proc"
mount -t sysfs sysfs /sys || fail "sysfs"
. /vm.env

for m in $VM_MODULES; do
  insmod "/lib/modules/$m.ko" || fail "insmod $m"
done

ip link set lo up
ip link set eth0 up || fail "no eth0 (virtio-net)"
ip addr add "$VM_GUEST_IP/24" dev eth0
ip route add default via 10.0.2.2

# 9p: a large msize moves whole blocks per round trip; the host's root does not change during a
# run, so the guest may cache it (node starts much faster), while the run's share is uncached
# so every write reaches the host file at once.
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$opts,ro,cache=loose" hostroot /newroot || fail "9p mount of the host's root"
mount --move /dev /newroot/dev || fail "move /dev"
mount --move /proc /newroot/proc || fail "move /proc"
mount --move /sys /newroot/sys || fail "move /sys"
mkdir -p /newroot/dev/shm /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || fail "tmpfs /tmp"
mount -t tmpfs -o mode=755 tmpfs /newroot/run || fail "tmpfs /run"
# The repository again, on its own share: a checkout under /tmp is hidden by the tmpfs above.
mkdir -p "/newroot$VM_REPO_DIR" 2>/dev/null
mount -t 9p -o "$opts,ro,cache=loose" repo "/newroot$VM_REPO_DIR" || fail "9p mount of the repository"
mkdir -p "/newroot$VM_RUN_DIR" || fail "mount point $VM_RUN_DIR"
mount -t 9p -o "$opts,cache=none" run "/newroot$VM_RUN_DIR" || fail "9p mount of the run share"

exec switch_root /newroot /bin/sh "$VM_STAGE2" "$VM_RUN_DIR" "$VM_CONTROL_DIR" "$VM_DEADLINE_S"
