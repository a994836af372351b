#!/usr/bin/env bash
# Installs everything netslot needs on Debian 12 + Node 20, as root: Debian packages, npm
# dependencies, the TypeScript build, the eBPF object and the test helpers. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # runtime: libraries netslot calls through FFI, and the kernel-facing tools doctor names
  nftables libnftables1 libbpf1 iproute2 conntrack iputils-ping
  # build: eBPF programs and the test relay
  clang llvm libbpf-dev linux-libc-dev libc6-dev make gcc
  # tests and benchmarks: traffic, captures, a real guest, peer baselines
  iperf3 iptables tcpdump ethtool busybox-static cpio qemu-system-x86 qemu-utils containernetworking-plugins bpftool socat curl
  # deploy/ checks: promtool (metrics, alerting rules and their unit tests), the Kubernetes
  # manifests (yamllint, and PyYAML for structural checks)
  prometheus yamllint python3-yaml
)

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bpffs for pinned programs and maps (the daemon mounts it too if it is missing).
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
npm run --silent build
echo "install.sh: netslot built"
