#!/bin/sh
# Installs what building and testing geminik8s needs on a Debian 12 host: apt packages (only the
# missing ones, so a warm machine pays nothing) and the locked npm dependencies. Arguments name extra
# Debian packages one target needs (make repro: diffoscope-minimal; make test: openssh-server for the
# test nodes' sshd, chromium for the status page check).
set -eu

PACKAGES="mmdebstrap fdisk e2fsprogs dosfstools mtools grub-common grub-efi-amd64-bin \
  zstd bmap-tools qemu-system-x86 ovmf qemu-user-static binfmt-support arch-test systemd-container \
  postgresql-15 etcd-client nftables iproute2 arping iputils-ping dnsmasq-base util-linux udev git ca-certificates openssh-client \
  skopeo containernetworking-plugins containerd $*"

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$missing; run as root or: sudo apt-get install$missing" >&2
    exit 3
  fi
  echo "installing Debian packages:$missing" >&2
  apt-get update -q >&2
  # The tests run sshd themselves, one per test node namespace: installed here, openssh-server's
  # own service is neither started (policy-rc.d) nor left enabled on this machine.
  fresh_sshd=""
  case " $missing " in *" openssh-server "*) [ -e /usr/sbin/policy-rc.d ] || fresh_sshd=1 ;; esac
  if [ -n "$fresh_sshd" ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2 || { [ -z "$fresh_sshd" ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
  if [ -n "$fresh_sshd" ]; then
    rm -f /usr/sbin/policy-rc.d
    if [ -d /run/systemd/system ]; then systemctl disable --quiet ssh.service ssh.socket 2>/dev/null || true; fi
    echo "openssh-server installed for the tests' own sshd; its host service is left disabled" >&2
  fi
fi

if ! command -v go >/dev/null 2>&1; then
  echo "the Go toolchain (>= 1.22) is needed to build Kine from its Go module: install it and put 'go' on PATH" >&2
  exit 3
fi
if ! command -v node >/dev/null 2>&1 || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "Node.js >= 20 is needed" >&2
  exit 3
fi

# npm ci runs only when the lockfile changed since the last install (a marker of ours records its
# hash; npm's own node_modules/.package-lock.json is a different file and never matches the lockfile
# byte for byte). flock serialises concurrent make invocations: two npm ci at once would wipe each
# other's node_modules.
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1) node-$(node -p process.versions.node)"
marker=node_modules/.geminik8s-installed
if [ "$(cat "$marker" 2>/dev/null)" != "$lock_hash" ]; then
  exec 9>.npm-install.lock
  flock 9
  if [ "$(cat "$marker" 2>/dev/null)" != "$lock_hash" ]; then
    npm ci --no-audit --no-fund >&2
    echo "$lock_hash" > "$marker"
  fi
  exec 9>&-
fi
