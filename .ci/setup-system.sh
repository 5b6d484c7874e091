#!/usr/bin/env bash
# System packages the test suite needs beyond the Python venv, on Debian/Ubuntu:
#   graphviz                  `make dag` (snakemake --rulegraph | dot)
#   git                       tests/test_dvc.py builds a temporary git + DVC repo
#   chromium, fonts-dejavu-core   tests/test_report.py opens the Snakemake report headless
#   munge slurmctld slurmd slurm-client slurmdbd mariadb-server
#                             tests/test_slurm.py's one-node cluster (tests/slurm/cluster.sh
#                             starts the daemons itself; the list comes from it)
# Idempotent and fast when everything is there (one dpkg query, no apt-get update).
# Services are never started here: on systemd hosts a temporary policy-rc.d keeps
# apt from starting munge/mariadb/slurm, which tests/slurm/cluster.sh runs by hand.
#
# Usage (root, or via sudo): .ci/setup-system.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v apt-get >/dev/null; then
  echo "setup-system: no apt-get; install by hand: graphviz git chromium and the SLURM packages" >&2
  exit 0
fi
SUDO=
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "setup-system: run as root (or install sudo)" >&2; exit 1; }
  SUDO=sudo
fi

# chromium is `chromium-browser` (a snap shim) on Ubuntu; Debian's `chromium` is the real one
browser=chromium
if grep -qi '^ID=ubuntu' /etc/os-release 2>/dev/null; then browser=chromium-browser; fi
# shellcheck disable=SC2207  # the packages are plain words
wanted=(graphviz git "$browser" fonts-dejavu-core $(bash tests/slurm/cluster.sh packages))

missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "setup-system: all ${#wanted[@]} packages present"
  exit 0
fi

echo "setup-system: installing ${missing[*]}"
own_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  own_policy=1
fi
rc=0
$SUDO apt-get update -qq || rc=$?
# --no-install-recommends: slurm-wlm-style plugin sets and desktop extras are not needed
((rc)) || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" || rc=$?
if ((own_policy)); then $SUDO rm -f /usr/sbin/policy-rc.d; fi
exit $rc
