# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Shell commands for an offline set without stopping the instance: unmount data filesystems, then mount them again.

They run through the provider's agent (SSM AWS-RunShellScript, Cloud Assistant
RunShellScript). ``unmount`` refuses ``/``, ``/boot`` and anything that is not a
mount point, names the processes that hold a busy filesystem, records how each
was mounted in a root-only directory under /run, and arms a detached remount at
a hard deadline before it unmounts anything, so that a lost controller cannot
leave the data offline. ``remount`` mounts them again and disarms it. Each
prints one JSON line.
"""

from __future__ import annotations

import json
import re
import shlex

EXIT_REFUSED = 207
EXIT_BUSY = 3
EXIT_FAILED = 209
EXIT_MESSAGES = {
    EXIT_REFUSED: "a mount was refused (/, /boot, not a mount point, a bind mount, or a filesystem also mounted elsewhere)",
    EXIT_BUSY: "a filesystem is in use, so it was not unmounted",
    EXIT_FAILED: "unmounting or mounting failed",
}

# Seconds before the remount watchdog's deadline after which no snapshot call is started for an unmounted instance.
UNMOUNT_MARGIN = 5


def expired_before_call(instance_id):
    """Why an unmounted instance got no set: its watchdog may fire before the call could return."""
    return (f"the filesystems of {instance_id} may already be mounted again by its watchdog (max(freeze_timeout, 60) "
            "s after the unmount), so no set was taken: raise freeze_timeout")


def returned_late(call, instance_id):
    """Why a set of an unmounted instance is crash: its call returned after the watchdog may have fired."""
    return (f"{call} for {instance_id} returned after its watchdog may have mounted the filesystems again, so the set "
            "is labelled crash, not offline: raise freeze_timeout")


def remounted_by_watchdog(instance_id):
    """Why a set of an unmounted instance is crash: the remount answered that the watchdog had been first (205)."""
    return (f"the watchdog of {instance_id} had already mounted the filesystems again before the remount came, so the "
            "set may have been taken while they were in use: it is labelled crash, not offline; raise freeze_timeout")


_MOUNT = re.compile(r"/[A-Za-z0-9_./@+:\-]*")

_COMMON = r"""
set -u
state=/run/appconsistent/offline
umask 077
mkdir -p "$state"
rec="$state/$run_id.mounts"
json_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\n\r\t'; }
report() {
  printf '{"action":"%s","run_id":"%s","exit_code":%s,"message":"%s","t":%s}\n' \
    "$1" "$run_id" "$2" "$(json_escape "$3")" "$(date +%s.%N)"
  exit "$2"
}
# The watchdog leads its own session and process group: its sleep goes with it.
disarm() { kill -- "-$1" 2>/dev/null || kill "$1" 2>/dev/null; }
remount_all() {
  local target source fstype options failed=0
  [ -f "$rec" ] || return 0
  while IFS="$(printf '\t')" read -r target source fstype options; do
    mountpoint -q -- "$target" && continue
    mount -t "$fstype" -o "$options" -- "$source" "$target" || failed=1
  done < <(awk -F'\t' '{ print length($1) "\t" $0 }' "$rec" | sort -n | cut -f2-)
  return $failed
}
"""

_UNMOUNT = r"""
mounts=(%(mounts)s)
deadline=%(deadline)s
[ -f "$rec" ] && report unmount 204 "a previous unmount of this run is still recorded: run the remount first"
for m in "${mounts[@]}"; do
  case "$m" in /|/boot|/boot/*) report unmount 207 "$m is never unmounted" ;; esac
  mountpoint -q -- "$m" || report unmount 207 "$m is not a mount point"
  real=$(readlink -f -- "$m")
  case "$real" in /|/boot|/boot/*) report unmount 207 "$m resolves to $real, which is never unmounted" ;; esac
done
# What mounting again needs, checked before anything is unmounted: the device without
# findmnt's [/fsroot] (-v), and a directory of the filesystem that the options can name
# again. A btrfs subvolume is named by its subvol= option; any other filesystem must be
# mounted from its root: a bind mount of a directory cannot be mounted from the device.
# A filesystem also mounted elsewhere (another btrfs subvolume, a bind mount) stays
# mounted, so it is not offline unless every mount point of it is given.
for m in "${mounts[@]}"; do
  IFS=' ' read -r _ source fstype options fsroot majmin < <(findmnt -n -r -v -o TARGET,SOURCE,FSTYPE,OPTIONS,FSROOT,MAJ:MIN --mountpoint "$m" | tail -n 1)
  named=/
  if [ "$fstype" = btrfs ]; then
    named=$(printf '%%s\n' "${options//,/$'\n'}" | sed -n 's/^subvol=//p' | tail -n 1)
  fi
  if [ "$fsroot" != "$named" ]; then
    report unmount 207 "$m is a bind mount of $fsroot on $source, which could not be mounted again from the device:"\
" give the mount point of the filesystem itself, or take the set with the instance stopped"
  fi
  others=""
  while IFS=' ' read -r target id; do
    [ "$id" = "$majmin" ] || continue
    target=$(printf '%%b' "$target")  # findmnt -r writes a space as \x20
    given=0
    for g in "${mounts[@]}"; do [ "$(readlink -f -- "$g")" = "$target" ] && given=1; done
    [ "$given" = 1 ] || others="$others $target"
  done < <(findmnt -n -r -o TARGET,MAJ:MIN)
  if [ -n "$others" ]; then
    report unmount 207 "the filesystem of $m ($source) is also mounted at$others, so unmounting $m would not take it"\
" offline: give all of its mount points, or take the set with the instance stopped"
  fi
done
busy=""
for m in "${mounts[@]}"; do
  pids=$(fuser -m "$m" 2>/dev/null | tr -cs '0-9' ' ')
  for p in $pids; do
    [ "$p" = "$$" ] && continue
    busy="$busy $m: $(cat "/proc/$p/comm" 2>/dev/null || echo '?') (pid $p);"
  done
done
[ -n "$busy" ] && report unmount 3 "in use, not unmounted:$busy stop these processes or take the set with the instance stopped"
: > "$rec"
for m in "${mounts[@]}"; do
  findmnt -n -r -v -o TARGET,SOURCE,FSTYPE,OPTIONS --mountpoint "$m" | tail -n 1 | awk '{ printf "%%s\t%%s\t%%s\t%%s\n", $1, $2, $3, $4 }' >> "$rec"
done
# The remount is armed before anything is unmounted.
setsid bash -c 'sleep "$1"; exec bash "$2"' _ "$deadline" "$state/$run_id.remount" </dev/null >/dev/null 2>&1 &
echo $! > "$state/$run_id.watchdog"
sync
for m in $(printf '%%s\n' "${mounts[@]}" | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-); do
  if ! umount -- "$m"; then
    disarm "$(cat "$state/$run_id.watchdog")"
    rm -f "$state/$run_id.watchdog"
    if remount_all; then
      rm -f "$rec"
      report unmount 209 "could not unmount $m; everything was mounted again"
    fi
    report unmount 209 "could not unmount $m, and mounting again failed: check the instance now (the record is $rec)"
  fi
done
report unmount 0 "unmounted: ${mounts[*]}"
"""

_REMOUNT = r"""
[ -f "$rec" ] || report remount 205 "nothing of this run is unmounted"
if [ -f "$state/$run_id.watchdog" ]; then
  watchdog=$(cat "$state/$run_id.watchdog")
  # The watchdog runs this same script: it must not kill itself.
  [ "$watchdog" != "$$" ] && disarm "$watchdog"
  rm -f "$state/$run_id.watchdog"
fi
if remount_all; then
  rm -f "$rec"
  report remount 0 "mounted again"
fi
report remount 209 "some filesystems could not be mounted again: check the instance now"
"""


def _script(body, run_id, **values):
    return "run_id=" + shlex.quote(run_id) + "\n" + _COMMON + body % values


def unmount_command(run_id, mounts, deadline):
    """The agent command that unmounts ``mounts`` (already validated absolute paths).

    The remount script is written to the state directory first: the watchdog and
    the later remount command both run it. Everything runs in bash, whatever the
    agent's shell is.
    """
    body = _script(_UNMOUNT, run_id, mounts=" ".join(shlex.quote(m) for m in mounts), deadline=int(deadline))
    remount = _script(_REMOUNT, run_id)
    return ("umask 077 && mkdir -p /run/appconsistent/offline\n"
            f"cat > /run/appconsistent/offline/{shlex.quote(run_id)}.remount <<'APPCONSISTENT_EOF'\n{remount}\n"
            "APPCONSISTENT_EOF\n"
            f"exec bash -c {shlex.quote(body)}")


def remount_command(run_id):
    return f"exec bash /run/appconsistent/offline/{shlex.quote(run_id)}.remount"


def refused_mount(mount):
    """Why ``mount`` may not be given to ``unmount_command``, or None."""
    if not mount or not _MOUNT.fullmatch(mount) or "/../" in mount + "/" or "/./" in mount + "/":
        return (f"{mount!r} is refused: give an absolute path of letters, digits and _ . / @ + : -, without spaces, "
                "quotes or '..'")
    if mount.rstrip("/") in ("", "/boot") or mount.startswith("/boot/"):
        return f"{mount} is never unmounted: take the set with the instance stopped for the system disk"
    return None


def parse_report(output):
    """The JSON report of an agent command (unmount, remount, the freeze helper): the last line that parses as an object."""
    for line in reversed((output or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict):
                return report
    return None
