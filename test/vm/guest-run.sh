#!/bin/sh
# Stage 2 of the test VM (see test/vm/vm.ts): PID 1 after switch_root, the host's own /bin/sh
# running on the host's root (read-only over 9p). Usage: guest-run.sh RUN_DIR CONTROL_DIR DEADLINE_S.
# It runs CONTROL_DIR/script.sh with bash in RUN_DIR, stores its combined output and then its
# exit code in CONTROL_DIR (exit-code is written last: its presence means the script finished),
# copies the output to the console for the serial log, and powers the machine off.
# After DEADLINE_S seconds it powers off regardless: the harness kills QEMU before that, but if
# the harness itself died, a hung guest must not keep QEMU running forever.
run_dir=$1
ctl=$2
(sleep "$3"; echo "cowdisk-vm: deadline passed, powering off"; /bin/busybox poweroff -f) &
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 VM_RUN_DIR="$run_dir"

cd "$run_dir" || { echo "cowdisk-vm: cannot enter $run_dir"; /bin/busybox poweroff -f; }
read -r uptime _ < /proc/uptime
echo "$uptime" > "$ctl/guest-uptime-at-start"
# The harness times the boot by this line on the serial console.
echo "cowdisk-vm: script start (guest uptime ${uptime}s)"

/bin/bash "$ctl/script.sh" > "$ctl/output" 2>&1 < /dev/null
code=$?
echo "$code" > "$ctl/exit-code.tmp" && mv "$ctl/exit-code.tmp" "$ctl/exit-code"

echo "cowdisk-vm: script exited with $code; its output:"
cat "$ctl/output"
echo "cowdisk-vm: end of output"
sync
/bin/busybox poweroff -f
