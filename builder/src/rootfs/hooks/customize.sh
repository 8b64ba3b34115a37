#!/bin/sh
# geminik8s rootfs customize hook — run by mmdebstrap on the build host with $1 = the chroot.
# Usage: customize.sh ROOT HOSTNAME EXCLUDE_MODULES_FILE|'' keep-jit|no-jit
# Bump ROOTFS_HOOK_VERSION in rootfs.ts when this file changes (it is part of the rootfs cache key).
set -eu
root="$1"
host="$2"
excludes="${3:-}"
jit="${4:-keep-jit}"

# --- identity: one image is shared by many boxes ---------------------------------
echo "$host" > "$root/etc/hostname"
chmod 0644 "$root/etc/hostname"
cat > "$root/etc/hosts" <<HOSTS
127.0.0.1	localhost
127.0.1.1	$host
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
HOSTS
# Empty machine-id: systemd generates a transient one per boot on a read-only root
# (the agent persists one on the data partition if it wants a stable id).
: > "$root/etc/machine-id"
if [ -f "$root/var/lib/dbus/machine-id" ] && [ ! -L "$root/var/lib/dbus/machine-id" ]; then
  rm -f "$root/var/lib/dbus/machine-id"
  ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
fi
# SSH host keys generated in the chroot would be shared by every box flashed with the image.
rm -f "$root"/etc/ssh/ssh_host_*_key "$root"/etc/ssh/ssh_host_*_key.pub
# So would the TLS "snakeoil" pair ssl-cert makes at install (PostgreSQL pulls it in): nothing on the
# box uses it, PostgreSQL serves the pair CA's certificates (firstboot/src/provision/core/pgconf.ts).
# Its hash link in /etc/ssl/certs goes with it.
rm -f "$root/etc/ssl/private/ssl-cert-snakeoil.key" "$root/etc/ssl/certs/ssl-cert-snakeoil.pem"
if [ -d "$root/etc/ssl/certs" ]; then find "$root/etc/ssl/certs" -maxdepth 1 -type l -lname ssl-cert-snakeoil.pem -delete; fi

# --- PostgreSQL is managed by the appliance agent --------------------------------
if [ -e "$root/lib/systemd/system/postgresql.service" ] || [ -e "$root/usr/lib/systemd/system/postgresql.service" ]; then
  rm -f "$root/etc/systemd/system/multi-user.target.wants/postgresql.service"
  ln -sf /dev/null "$root/etc/systemd/system/postgresql.service"
fi
if [ -d "$root/etc/postgresql" ] && [ -n "$(ls -A "$root/etc/postgresql" 2>/dev/null)" ]; then
  echo "customize.sh: a default PostgreSQL cluster was created despite create_main_cluster = false" >&2
  exit 1
fi
# ucf found createcluster.conf already there (the essential hook writes it) and kept it without
# asking; debconf still records that question's variables, among them ucf's random temporary file
# (NEW = /tmp/postgresql-common.XXXXXX), which would make every build's image differ.
for db in "$root/var/cache/debconf/config.dat" "$root/var/cache/debconf/config.dat-old"; do
  if [ -f "$db" ]; then sed -i 's|^\( NEW = /tmp/[^ ]*\.\)[A-Za-z0-9]\{6\}$|\1XXXXXX|' "$db"; fi
done

# PostgreSQL JIT files were dpkg-excluded: make sure nothing else needs LLVM.
if [ "$jit" = no-jit ]; then
  others="$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${db:Status-Abbrev}\t${Package}\t, ${Depends}, ${Pre-Depends},\n' \
    | awk -F '\t' '$1 ~ /^ii/ && $2 !~ /^(postgresql-[0-9]+|libllvm[0-9]+)$/ && $3 ~ /[ ,|]lib(llvm[0-9]+|z3-[0-9]+)[ ,:(]/ { print $2 }')"
  if [ -n "$others" ]; then
    echo "customize.sh: LLVM was excluded for PostgreSQL but these packages need it: $others (set postgresJit)" >&2
    exit 1
  fi
fi

# --- update-initramfs back (rootfs.ts diverted it to true while packages were installed) ---
if [ -L "$root/usr/sbin/update-initramfs" ]; then
  rm -f "$root/usr/sbin/update-initramfs"
  chroot "$root" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.geminik8s --remove /usr/sbin/update-initramfs
fi

# --- Raspberry Pi firmware: each slot's boot partition is built from the root -----------
# raspi-firmware's hooks copy the firmware, kernel and initrd to /boot/firmware whenever a kernel
# or an initrd changes. The image has no such partition: the builder and the agent build each
# slot's boot partition from the root's recipe (image/src/rpi.ts), and a root never changes on the box.
if [ -d "$root/usr/lib/raspi-firmware" ]; then
  rm -f "$root/etc/kernel/postinst.d/z50-raspi-firmware" "$root/etc/kernel/postrm.d/z50-raspi-firmware" \
    "$root/etc/initramfs/post-update.d/z50-raspi-firmware"
  rm -rf "$root/boot/firmware"
fi

# --- optional kernel module trimming, then the one initrd per kernel -----------------
# EXCLUDE_MODULES_FILE lines: a path prefix under lib/modules/<ver>/kernel/ to delete
# (e.g. "sound", "drivers/gpu"), or "!prefix" to keep (e.g. "!drivers/gpu/drm/virtio").
# Dependencies of every kept module are always kept, then depmod.
for kdir in "$root"/lib/modules/*/; do
  [ -f "$kdir/modules.dep" ] || continue
  ver="$(basename "$kdir")"
  if [ -n "$excludes" ] && [ -s "$excludes" ]; then
    drop="$(mktemp)"
    awk -v exfile="$excludes" '
      BEGIN { while ((getline l < exfile) > 0) { if (l ~ /^[ \t]*(#|$)/) continue; sub(/\/+$/, "", l);
                if (l ~ /^!/) keep[++nk] = "kernel/" substr(l, 2); else ex[++ne] = "kernel/" l } }
      function under(p, pre) { return p == pre || index(p, pre "/") == 1 || index(p, pre ".") == 1 }
      { mod = $1; sub(/:$/, "", mod); deps[mod] = ""; for (i = 2; i <= NF; i++) deps[mod] = deps[mod] " " $i; mods[++n] = mod }
      END {
        for (i = 1; i <= n; i++) { m = mods[i]; x = 0
          for (j = 1; j <= ne; j++) if (under(m, ex[j])) x = 1
          for (j = 1; j <= nk; j++) if (under(m, keep[j])) x = 0
          if (x) gone[m] = 1 }
        # keep the dependency closure of every kept module
        do { changed = 0
          for (i = 1; i <= n; i++) { m = mods[i]; if (m in gone) continue
            c = split(deps[m], d, " "); for (k = 1; k <= c; k++) if (d[k] in gone) { delete gone[d[k]]; changed = 1 } }
        } while (changed)
        for (m in gone) print m
      }' "$kdir/modules.dep" > "$drop"
    echo "customize.sh: trimming $(wc -l < "$drop") kernel modules from $ver"
    (cd "$kdir" && xargs -r rm -f < "$drop")
    rm -f "$drop"
    find "$kdir/kernel" -depth -type d -empty -delete
    chroot "$root" depmod -a "$ver"
  fi
  if [ -x "$root/usr/sbin/update-initramfs" ]; then
    echo "customize.sh: building the initrd of $ver"
    chroot "$root" update-initramfs -c -k "$ver"
  fi
done

# --- sanity: a bootable kernel + initrd ---------------------------------------------
if ls "$root"/boot/vmlinu* >/dev/null 2>&1; then
  for k in "$root"/boot/vmlinu*; do
    v="${k##*/vmlinu?-}"
    [ -s "$root/boot/initrd.img-$v" ] || { echo "customize.sh: no initrd for kernel $v" >&2; exit 1; }
  done
fi
