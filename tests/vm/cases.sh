#!/bin/bash
# The VM tier's cases, run as root inside a guest (tests/vm.rs boots it through scripts/vm-run): woesafe on a
# Debian kernel with real USB sticks, real sysfs, kernel filesystem drivers and (with udev=1) systemd-udevd.
#
#   [UDEV=1] [NSTICKS=N] [WIN_ISO=ISO] [HOST_TESTS="BIN::TEST..."] cases.sh WOESAFE ISO CASE...
#
# Sticks are told apart by size (the host gives each case its own): `stick MiB` names the disk. Each case
# appends one line to $VM_OUT/results: "CASE NAME ok|FAILED SECONDS [what failed]", and its transcript to
# $VM_OUT/NAME.log. The host checks the written sticks afterwards (tests/vm.rs).
set -u
self=$(realpath "$0")
W=$1 ISO=$2
shift 2
out=$VM_OUT
up() { cut -d' ' -f1 /proc/uptime; }

# The disk of a given size in MiB (sdX), or nothing.
stick() {
  local s
  for s in /sys/block/sd*; do
    [ -e "$s/size" ] || continue
    if [ $(($(cat "$s/size") * 512 / 1048576)) = "$1" ]; then
      echo "${s##*/}"
      return
    fi
  done
}

# A case's checks: `fail what` records a failure (in $out/NAME.fail) and goes on; the case's result is FAILED if
# any failed.
fail() {
  echo "FAILED: $*"
  echo "$*" >>"$out/$CASE.fail"
}
expect_rc() { # WANT GOT WHAT
  [ "$1" = "$2" ] || fail "$3: exit code $2, expected $1"
}
expect_in() { # FILE TEXT WHAT
  grep -qF -- "$2" "$1" || fail "$3: no \"$2\" in its output"
}
untouched() { # DISK: the first 4 KiB still hold the host's marker
  head -c 12 "/dev/$1" | grep -q WOESAFE-KEEP || fail "/dev/$1 was written to"
}
# Nothing of woesafe is left in the guest: no process, no mount of the disk (or of a loop device) in any
# mount namespace, no loop device.
nothing_left() { # DISK
  local i
  for i in $(seq 50); do pgrep -x woesafe >/dev/null || break; sleep 0.1; done
  pgrep -a -x woesafe && fail "woesafe processes left: $(pgrep -x woesafe | tr '\n' ' ')"
  cat /proc/[0-9]*/mountinfo 2>/dev/null | grep -E " /dev/($1|loop)" && fail "mounts of /dev/$1 or a loop device left"
  for f in /sys/block/loop*/loop/backing_file; do
    [ -e "$f" ] && fail "loop device left: $f: $(cat "$f")"
  done
  return 0
}
# run NAME: the case's function in its own process, timed and bounded (CASE_TIMEOUT seconds, default 300:
# a case that hangs fails alone), its output in NAME.log.
run() {
  local name=$1 t0 t1 rc
  t0=$(up)
  echo "== case $name"
  rm -f "$out/$name.fail"
  local limit=${CASE_TIMEOUT:-300}
  [ "$name" = host_tests ] && limit=2400
  CASE=$name timeout -k 5 "$limit" bash "$self" "$W" "$ISO" --one "$name" >"$out/$name.log" 2>&1
  rc=$?
  t1=$(up)
  [ $rc = 124 ] || [ $rc = 137 ] && echo "timed out after $limit s" >>"$out/$name.fail"
  cat "$out/$name.log"
  if [ ! -s "$out/$name.fail" ]; then
    echo "CASE $name ok $(awk "BEGIN { print $t1 - $t0 }")" >>"$out/results"
  else
    echo "CASE $name FAILED $(awk "BEGIN { print $t1 - $t0 }") $(paste -sd ';' "$out/$name.fail")" >>"$out/results"
  fi
}
write() { # DISK ARGS...: woesafe write, its output on stdout, its exit code in $rc
  local d=$1
  shift
  "$W" write "$ISO" "/dev/$d" --yes "$@" 2>&1
  rc=$?
  echo "(exit $rc)"
  return $rc
}

case_defaults() {
  local d
  d=$(stick 1000)
  write "$d"
  expect_rc 0 "$rc" "write with the defaults"
}

case_kernel() {
  local d
  d=$(stick 1010)
  write "$d" --source-driver kernel --target-driver kernel | tee /tmp/k.log
  expect_rc 0 "${PIPESTATUS[0]}" "write with kernel udf and vfat"
  expect_in /tmp/k.log "udf (kernel mount)" "the ISO read by the kernel's udf"
  nothing_left "$d"
}

case_ntfs3g() {
  local d
  d=$(stick 1020)
  write "$d" --fs ntfs | tee /tmp/n.log
  expect_rc 0 "${PIPESTATUS[0]}" "write --fs ntfs"
  expect_in /tmp/n.log "ntfs-3g" "NTFS through ntfs-3g"
}

case_ntfs3() {
  local d
  d=$(stick 1030)
  write "$d" --fs ntfs --target-driver kernel | tee /tmp/n3.log
  expect_rc 0 "${PIPESTATUS[0]}" "write --fs ntfs --target-driver kernel"
  expect_in /tmp/n3.log "ntfs3 (kernel mount)" "NTFS through the kernel's ntfs3"
}

# A fixed (removable=0) USB disk needs --force; its partition and its mounted partition are refused, naming
# the disk and the mount.
case_fixed() {
  local d
  d=$(stick 1040)
  echo "removable=$(cat /sys/block/$d/removable) transport: $(readlink -f /sys/block/$d)"
  write "$d" | tee /tmp/f.log
  expect_rc 3 "${PIPESTATUS[0]}" "a fixed USB disk without --force"
  expect_in /tmp/f.log "is not removable: a fixed disk" "the refusal"
  untouched "$d"
  write "$d" --force
  expect_rc 0 "$rc" "the fixed USB disk with --force"
  [ -e "/dev/${d}1" ] || fail "/dev/${d}1 did not appear after the write"
  "$W" write "$ISO" "/dev/${d}1" --yes >/tmp/p.log 2>&1
  expect_rc 3 $? "a partition as the target"
  expect_in /tmp/p.log "/dev/${d}1 is a partition; woesafe writes whole disks: use /dev/$d" "the partition refusal"
  mkdir -p /tmp/m
  mount -t vfat "/dev/${d}1" /tmp/m || fail "mounting /dev/${d}1"
  "$W" write "$ISO" "/dev/$d" --yes --force >/tmp/mo.log 2>&1
  expect_rc 3 $? "a disk with a mounted partition"
  expect_in /tmp/mo.log "/dev/$d has mounted filesystems: /tmp/m" "the mount refusal"
  umount /tmp/m
  cat /tmp/p.log /tmp/mo.log
}

# A virtio disk is no stick.
case_virtio() {
  "$W" write "$ISO" /dev/vda --yes >/tmp/v.log 2>&1
  expect_rc 3 $? "a virtio disk"
  expect_in /tmp/v.log "/dev/vda (unknown, virtio) is not removable" "the refusal"
  untouched vda
  cat /tmp/v.log
}

# / on device-mapper (an LVM-like linear map on a dm-crypt map, as LUKS makes it, on a USB stick): the stick
# is the root disk, found through slaves/.
case_root_dm() {
  local d sectors key crypt root r=/tmp/dmroot
  d=$(stick 1050)
  sectors=$(blockdev --getsz "/dev/$d")
  key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # (no udev sync and no /dev/mapper names: the devices by number, their nodes from devtmpfs)
  dmsetup --noudevsync create vmcrypt --table "0 $sectors crypt aes-xts-plain64 $key 0 /dev/$d 0" || fail "dm-crypt"
  crypt=$(dmsetup info -c --noheadings -o major,minor vmcrypt | tr -d ' ')
  dmsetup --noudevsync create vmroot --table "0 $sectors linear $crypt 0" || fail "dm-linear"
  root=/dev/$(basename "$(readlink -f "/sys/dev/block/$(dmsetup info -c --noheadings -o major,minor vmroot | tr -d ' ')")")
  mkfs.ext4 -q "$root" || fail "mkfs.ext4 $root"
  mkdir -p $r
  mount "$root" $r || fail "mount $root"
  # the system, and the top directories holding woesafe and the ISO
  for p in $(printf '%s\n' usr bin sbin lib lib64 etc proc sys dev "$(echo "$W" | cut -d/ -f2)" "$(echo "$ISO" | cut -d/ -f2)" | sort -u); do
    [ -e "/$p" ] || continue
    if [ -L "/$p" ]; then cp -a "/$p" "$r/$p"; else mkdir -p "$r/$p" && mount --rbind "/$p" "$r/$p"; fi
  done
  echo "/ in the chroot: $root, slaves $(ls "/sys/block/${root#/dev/}/slaves"), whose slaves $(ls /sys/block/dm-*/slaves | tr '\n' ' ')"
  chroot $r "$W" write "$ISO" "/dev/$d" --yes >/tmp/r.log 2>&1
  expect_rc 3 $? "the disk under / (dm-linear on dm-crypt)"
  expect_in /tmp/r.log "/dev/$d holds the running system's root filesystem (/)" "the root-disk refusal"
  cat /tmp/r.log
  umount -R $r
  dmsetup --noudevsync remove vmroot
  dmsetup --noudevsync remove vmcrypt
}

# udev's flock convention with the real systemd-udevd: while woesafe holds the disk (paused in the Copy step),
# a change event on it probes nothing; once the write is done, udev finds the partition and its filesystem.
case_udev() {
  local d pid i
  d=$(stick 1060)
  pidof systemd-udevd >/dev/null || fail "systemd-udevd is not running"
  WOESAFE_TEST_PAUSE_AT=copy:6000 "$W" write "$ISO" "/dev/$d" --yes --label UDEVCASE >/tmp/u.log 2>&1 &
  pid=$!
  for i in $(seq 300); do grep -q "Copying files" /tmp/u.log && break; sleep 0.1; done
  grep -q "Copying files" /tmp/u.log || fail "the write never reached the copy"
  udevadm trigger --action=change "/dev/$d"
  udevadm settle -t 3 || true
  [ -e "/dev/${d}1" ] && fail "/dev/${d}1 appeared while woesafe held the disk"
  udevadm info -q property "/dev/$d" | grep -q '^ID_PART_TABLE_TYPE=' && fail "udev probed the disk while woesafe held it"
  wait $pid
  expect_rc 0 $? "the write with udevd running"
  udevadm settle -t 30 || true
  udevadm info -q property "/dev/${d}1" | grep -q '^ID_FS_TYPE=vfat' || fail "udev did not find the vfat partition after the write"
  [ -e /dev/disk/by-label/UDEVCASE ] || fail "no /dev/disk/by-label/UDEVCASE after the write"
  cat /tmp/u.log
}

case_4k() {
  local d
  d=$(stick 1070)
  echo "logical_block_size=$(cat /sys/block/$d/queue/logical_block_size)"
  write "$d" --boot both | tee /tmp/4b.log
  expect_rc 3 "${PIPESTATUS[0]}" "--boot both on a 4096-byte-sector disk"
  untouched "$d"
  write "$d" | tee /tmp/4.log
  expect_rc 0 "${PIPESTATUS[0]}" "write to a 4096-byte-sector stick"
  expect_in /tmp/4.log "4096-byte sectors, which BIOS firmware cannot boot from" "the UEFI-only note"
  sfdisk --json "/dev/$d" | tee /tmp/4s.json
  grep -q '"sectorsize": 4096' /tmp/4s.json || fail "sfdisk does not read 4096-byte sectors"
  grep -q '"start": 256' /tmp/4s.json || fail "partition 1 is not at sector 256"
  fsck.fat -n "/dev/${d}1" || fail "fsck.fat -n /dev/${d}1"
  mkdir -p /tmp/4m
  if mount -t vfat -o ro "/dev/${d}1" /tmp/4m; then
    (cd /tmp/4m && sha256sum --quiet -c "${ISO%.iso}.sha256") || fail "files differ on the 4K stick"
    umount /tmp/4m
  else
    fail "the kernel's vfat cannot mount the 4K stick"
  fi
}

# The kill matrix, a subset, with kernel drivers: SIGINT and SIGKILL of the supervisor, SIGKILL of the worker,
# while copying. Nothing may be left: no process, no mount in any namespace, no loop device.
case_kill() {
  local d how sup worker i
  d=$(stick 1080)
  for how in int kill-supervisor kill-worker; do
    echo "-- $how"
    : >/tmp/kill.log
    WOESAFE_TEST_PAUSE_AT=copy:30000 "$W" write "$ISO" "/dev/$d" --yes --source-driver kernel --target-driver kernel >/tmp/kill.log 2>&1 &
    sup=$!
    for i in $(seq 300); do grep -q "Copying files" /tmp/kill.log && break; sleep 0.1; done
    grep -q "Copying files" /tmp/kill.log || fail "$how: the write never reached the copy"
    grep -E " /dev/($d|loop)" /proc/[0-9]*/mountinfo >/dev/null || fail "$how: no kernel mount while copying"
    worker=$(pgrep -P $sup -x woesafe | head -n 1)
    case $how in
      int) kill -INT $sup ;;
      kill-supervisor) kill -KILL $sup ;;
      kill-worker) [ -n "$worker" ] && kill -KILL "$worker" || fail "no worker to kill" ;;
    esac
    wait $sup
    echo "exit $?"
    cat /tmp/kill.log
    nothing_left "$d"
    # a SIGKILLed supervisor leaves at most its empty directory, which recover removes
    "$W" recover --yes >/dev/null 2>&1
  done
}

# WoeUSB-ng 0.2.12 (installed by name from the sdist scripts/install-vm-deps fetched from PyPI, into its venv,
# inside this guest only: its setup.py's copies into /usr/share and /usr/local/bin land in the guest's overlay).
woeusb_venv=$VM_TOOLS/../woeusb-venv
woeusb_install() {
  [ -x "$woeusb_venv/bin/woeusb" ] && return 0
  mkdir -p /usr/share/polkit-1/actions /usr/share/applications /usr/local/bin
  "$woeusb_venv/bin/pip" install -q --no-index --find-links "$VM_TOOLS/../pip" termcolor || fail "pip install termcolor"
  "$woeusb_venv/bin/pip" install -q --no-index --find-links "$VM_TOOLS/../pip" --no-deps woeusb-ng==0.2.12 \
    || fail "pip install woeusb-ng==0.2.12"
}

# recover after a real WoeUSB-ng crash: WoeUSB-ng writes the 3031-file test ISO (WIN_ISO) to a stick and is
# SIGKILLed while it copies (with HOLD=1 a shell sits in its target mount, keeping a deleted file open).
# recover must name its mounts, loop device and temp directory, clean them with --yes, touch none of the
# decoys, find the held filesystem after its lazy unmount, and leave the stick writable again.
woeusb_crash() { # MIB FS HOLD
  local d fs=$2 hold=$3 wp m i hp="" n
  d=$(stick "$1")
  woeusb_install
  mkdir -p /media/decoy-dir /tmp/WoeUSB-notes /mnt/decoy
  echo keep >/tmp/WoeUSB-notes/x
  truncate -s 64M /tmp/decoy.img
  mkfs.ext4 -q /tmp/decoy.img
  mount -o loop /tmp/decoy.img /mnt/decoy
  PYTHONUNBUFFERED=1 "$woeusb_venv/bin/woeusb" --device "$WIN_ISO" "/dev/$d" --target-filesystem "$fs" --no-color \
    >/tmp/woeusb.log 2>&1 &
  wp=$!
  for i in $(seq 1800); do grep -q woeusb_target /proc/self/mountinfo && break; kill -0 $wp 2>/dev/null || break; sleep 0.1; done
  m=$(awk '$5 ~ /woeusb_target/ { print $5 }' /proc/self/mountinfo | head -n 1)
  [ -n "$m" ] || fail "WoeUSB-ng never mounted its target"
  for i in $(seq 1200); do
    n=$(find "$m" -type f 2>/dev/null | wc -l)
    [ "$n" -ge 100 ] && break
    kill -0 $wp 2>/dev/null || break
    sleep 0.1
  done
  if [ "$hold" = 1 ]; then
    (cd "$m" && exec 3>"$m/open-deleted.bin" && head -c 1048576 /dev/urandom >&3 && rm "$m/open-deleted.bin" && exec sleep 100000) &
    hp=$!
    sleep 0.5
  fi
  kill -0 $wp 2>/dev/null || fail "WoeUSB-ng ended before it could be killed"
  echo "SIGKILL WoeUSB-ng ($wp) with $(find "$m" -type f | wc -l) files on its target $m"
  kill -KILL $wp
  wait $wp
  tr -d '\033' </tmp/woeusb.log | grep -Ev '%|^ *$' | tail -n 12
  echo "-- left: $(grep -E 'woeusb|/dev/loop' /proc/self/mountinfo | awk '{ print $5 }' | tr '\n' ' ')$(ls -d /tmp/WoeUSB.* 2>/dev/null | tr '\n' ' ')"

  "$W" recover >/tmp/r1.log 2>&1
  expect_rc 0 $? "recover"
  cat /tmp/r1.log
  for what in "unmount $m (" "unmount /media/woeusb_source_" "detach /dev/loop" "remove the empty directory /tmp/WoeUSB."; do
    expect_in /tmp/r1.log "$what" "recover's plan"
  done
  "$W" recover --yes >/tmp/r2.log 2>&1
  rc=$?
  cat /tmp/r2.log
  grep -q "FAILED" /tmp/r2.log && fail "an action of recover --yes FAILED"
  if [ "$hold" = 1 ]; then
    expect_rc 1 $rc "recover --yes with the target still held"
    expect_in /tmp/r2.log "still alive: /dev/${d}1 " "the held filesystem after --yes"
  else
    expect_rc 0 $rc "recover --yes"
  fi
  grep -E " (/dev/${d}1|/dev/loop[0-9]+) " /proc/self/mountinfo | grep -v /mnt/decoy && fail "a mount of WoeUSB-ng is left"
  ls -d /media/woeusb_* /tmp/WoeUSB.* 2>/dev/null && fail "a directory of WoeUSB-ng is left"
  grep -l "$WIN_ISO" /sys/block/loop*/loop/backing_file 2>/dev/null && fail "the ISO's loop device is left"
  [ -d /media/decoy-dir ] && [ -f /tmp/WoeUSB-notes/x ] && grep -q " /mnt/decoy " /proc/self/mountinfo \
    || fail "recover touched a decoy"
  if [ -n "$hp" ]; then
    "$W" recover >/tmp/r3.log 2>&1
    expect_rc 0 $? "recover after --yes"
    cat /tmp/r3.log
    expect_in /tmp/r3.log "unmounted but alive: /dev/${d}1 " "the held filesystem found again"
    expect_in /tmp/r3.log "held by process $hp (sleep) through its working directory, 1 open file" "its holder"
    expect_in /tmp/r3.log "1 deleted file(s) of 1.0 MiB" "the space it keeps"
    "$W" write "$ISO" "/dev/$d" --yes >/tmp/w1.log 2>&1
    expect_rc 3 $? "write to the held stick"
    cat /tmp/w1.log
    expect_in /tmp/w1.log "busy: /dev/$d is in use: " "the refusal"
    expect_in /tmp/w1.log "process $hp (sleep) has its working directory and open files on the filesystem of /dev/${d}1" "the holder named"
    kill $hp
    wait $hp 2>/dev/null
    for i in $(seq 100); do pgrep -f "mount.ntfs.*/dev/${d}1" >/dev/null || break; sleep 0.1; done
    "$W" recover >/tmp/r4.log 2>&1
    expect_in /tmp/r4.log "Nothing to recover" "recover once the holder is gone"
  fi
  write "$d"
  expect_rc 0 "$rc" "woesafe write to the stick WoeUSB-ng left"
  umount /mnt/decoy
  rm -rf /media/decoy-dir /tmp/WoeUSB-notes /tmp/decoy.img
}

case_woeusb_ntfs_held() {
  woeusb_crash 1090 NTFS 1
}

case_woeusb_fat() {
  woeusb_crash 1100 FAT 0
}

# The host's tests of the kernel drivers, which this machine's kernel cannot run (no vfat, udf or ntfs3): the
# very test binaries cargo built (HOST_TESTS: "BINARY::TEST ..."), run here with the modules loaded.
case_host_tests() {
  local t bin name rc
  modprobe -a vfat udf ntfs3 loop || fail "modprobe vfat udf ntfs3 loop"
  for t in $HOST_TESTS; do
    bin=${t%%::*} name=${t#*::}
    WOESAFE_IN_VM=1 "$bin" --exact "$name" --test-threads 1 --nocapture >/tmp/ht.log 2>&1
    rc=$?
    cat /tmp/ht.log
    expect_rc 0 $rc "$name"
    expect_in /tmp/ht.log "test result: ok. 1 passed" "$name ran"
    grep -q "SKIPPED" /tmp/ht.log && fail "$name was skipped in the guest"
  done
}

case_udev_start() {
  mount --bind "$VM_TOOLS/lib/udev" /usr/lib/udev
  "$VM_TOOLS/lib/systemd/systemd-udevd" --daemon || fail "systemd-udevd did not start"
  # the block devices only: the modules are loaded already, and the rest of the guest's devices would only
  # slow the settle down
  udevadm trigger --action=add --subsystem-match=block
  udevadm settle -t 20 || fail "udevadm settle"
}

# One case, in the process `run` started.
if [ "${1:-}" = --one ]; then
  "case_$2"
  exit 0
fi

: >"$out/results"
# Bring the sticks and the virtio disk up: xhci, usb-storage, virtio-blk (udev, when it runs, loads them by
# itself).
modprobe -a xhci_pci usb_storage sd_mod virtio_blk loop
# With UDEV=1, systemd-udevd runs (started here, in this process) while every case writes.
if [ "${UDEV:-0}" = 1 ]; then
  t0=$(up)
  CASE=udev_start
  rm -f "$out/udev_start.fail"
  case_udev_start >"$out/udev_start.log" 2>&1
  t1=$(up)
  cat "$out/udev_start.log"
  if [ -s "$out/udev_start.fail" ]; then
    echo "CASE udev_start FAILED $(awk "BEGIN { print $t1 - $t0 }") $(paste -sd ';' "$out/udev_start.fail")" >>"$out/results"
  else
    echo "CASE udev_start ok $(awk "BEGIN { print $t1 - $t0 }")" >>"$out/results"
  fi
fi
want=${NSTICKS:-0}
for i in $(seq 100); do
  [ "$(ls /sys/block | grep -c '^sd')" -ge "$want" ] && break
  sleep 0.1
done
echo "kernel $(uname -r); disks: $(for s in /sys/block/*; do printf '%s ' "${s##*/}:$(($(cat $s/size) * 512 / 1048576))M:rm=$(cat $s/removable)"; done)"
for c in "$@"; do
  run "$c"
done
