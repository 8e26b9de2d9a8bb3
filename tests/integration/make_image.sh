#!/usr/bin/env bash
# make_image.sh OUT.tar [REF [LAYERS]]
#
# Builds a tiny OCI image archive by hand (no registry, no network):
# /bin/busybox from busybox-static plus applet symlinks and the directories a
# container runtime expects, in one layer. The result imports with
# `ctr images import OUT.tar` and is named REF
# (default docker.io/snapledger/busybox:test).
# LAYERS (default 1) > 1 stacks LAYERS-1 small layers on it: layer k (2..)
# adds /etc/layer-k holding "layer k"; layer 2 also adds /etc/doomed and
# /etc/snapledger-image.d/from-2, and layer 3 deletes /etc/doomed again (an
# OCI whiteout, .wh.doomed) and replaces /etc/snapledger-image with
# "snapledger-test-image, layer 3". What a container sees of them proves the
# layers are stacked in order.
#
# The output is deterministic: same busybox binary -> same digests.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 ]]; then
  echo "usage: $0 OUT.tar [REF [LAYERS]]" >&2
  exit 2
fi
out=$1
ref=${2:-docker.io/snapledger/busybox:test}
layers=${3:-1}
[[ $layers =~ ^[1-9][0-9]?$ ]] || { echo "make_image.sh: LAYERS must be 1..99" >&2; exit 2; }
busybox=${BUSYBOX:-/bin/busybox}

if ! file_out=$(LC_ALL=C od -An -c -N4 "$busybox" 2>/dev/null) ||
   [[ $file_out != *"177   E   L   F"* ]]; then
  echo "make_image.sh: $busybox is not an ELF binary (install busybox-static)" >&2
  exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
  echo "make_image.sh: $busybox is dynamically linked; need busybox-static" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/snapledger-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Fixed inputs for reproducibility.
export LC_ALL=C TZ=UTC
umask 022
epoch=@0
tarflags=(--sort=name --mtime="$epoch" --owner=0 --group=0 --numeric-owner
          --format=gnu)

# --- rootfs -----------------------------------------------------------------
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,dev,etc,proc,sys,tmp,root,var,run}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
for applet in sh ash echo sleep ls cat true false mkdir rm cp mv touch \
              test '[' env id stat sync sha256sum wc head tail grep sed \
              printf ps kill uname hostname mount umount df du find xargs \
              date tr cut sort uniq dd; do
  ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
  >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
printf 'snapledger-test-image\n' >"$rootfs/etc/snapledger-image"
chmod 0644 "$rootfs"/etc/*

# --- OCI layout ---------------------------------------------------------------
layout=$work/layout
blobs=$layout/blobs/sha256
mkdir -p "$blobs"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# put FILE -> moves FILE into blobs/sha256/<digest>, prints the digest.
put() {
  local d
  d=$(sha "$1")
  mv "$1" "$blobs/$d"
  printf '%s' "$d"
}

# add_layer DIR : tar DIR as the next layer; appends to the JSON lists.
diff_ids= manifest_layers= history=
add_layer() {
  local size digest
  tar "${tarflags[@]}" -C "$1" -cf "$work/layer.tar" .
  size=$(size "$work/layer.tar")
  digest=$(put "$work/layer.tar")
  # Uncompressed layer: diff_id == layer digest.
  diff_ids+=${diff_ids:+,}'"sha256:'$digest'"'
  manifest_layers+=${manifest_layers:+,}'{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:'$digest'","size":'$size'}'
  history+=${history:+,}'{"created":"1970-01-01T00:00:00Z","created_by":"tests/integration/make_image.sh"}'
}
add_layer "$rootfs"
for ((k = 2; k <= layers; k++)); do
  d=$work/layer-$k
  mkdir -p "$d/etc"
  printf 'layer %d\n' "$k" >"$d/etc/layer-$k"
  if ((k == 2)); then
    printf 'doomed\n' >"$d/etc/doomed"
    mkdir -p "$d/etc/snapledger-image.d"
    printf 'from layer 2\n' >"$d/etc/snapledger-image.d/from-2"
  fi
  if ((k == 3)); then
    : >"$d/etc/.wh.doomed"
    printf 'snapledger-test-image, layer 3\n' >"$d/etc/snapledger-image"
  fi
  chmod 0644 "$d"/etc/* 2>/dev/null || true
  chmod 0755 "$d/etc" "$d"/etc/*.d 2>/dev/null || true
  find "$d" -exec touch -h -d "$epoch" {} +
  add_layer "$d"
done

printf '%s' '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":['"$diff_ids"']},"history":['"$history"'],"created":"1970-01-01T00:00:00Z"}' \
  >"$work/config.json"
config_size=$(size "$work/config.json")
config_digest=$(put "$work/config.json")

printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$config_digest"'","size":'"$config_size"'},"layers":['"$manifest_layers"']}' \
  >"$work/manifest.json"
manifest_size=$(size "$work/manifest.json")
manifest_digest=$(put "$work/manifest.json")

printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
# containerd 1.6 takes io.containerd.image.name first, then
# org.opencontainers.image.ref.name (a full reference is used as is).
printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:'"$manifest_digest"'","size":'"$manifest_size"',"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"'"$ref"'","org.opencontainers.image.ref.name":"'"$ref"'"}}]}' \
  >"$layout/index.json"

find "$layout" -exec touch -h -d "$epoch" {} +
tar "${tarflags[@]}" -C "$layout" -cf "$work/image.tar" oci-layout index.json blobs
mv "$work/image.tar" "$out"
echo "$ref sha256:$manifest_digest" >&2
