#!/usr/bin/env bash
# Fill .gpu/ with what a bare GPU machine lacks to run avaf-extract (in process and on a local Ray instance
# with Ray Data) and avaf-train, to be carried there with the working tree (64 MiB in all) and installed by
# tests/benchmarks/gpu_setup.sh. Run it HERE, on a machine with network and avaf's dependencies installed:
# every version is pinned to the one installed here. README.md beside this file, "Carrying avaf to a bare
# GPU machine", gives the sizes and what is stripped.
#
#   tests/benchmarks/gpu_carry.sh                          # cp312 manylinux x86-64, into .gpu/
#   tests/benchmarks/gpu_carry.sh --python-version 3.11 --out /tmp/carry311/.gpu   # a rehearsal here
#
# .gpu/ holds: the wheels of the small packages (installed there with pip --target); Ray and PyAV as
# installed trees, stripped and compressed (tar + xz -9e), since their wheels alone exceed what can travel;
# carry.txt (the Python version and what is there). Exit 1 if .gpu/ and the files that travel with the
# working tree exceed 64 MiB.
set -euo pipefail

say() { echo "gpu_carry: $*"; }
die() {
    echo "gpu_carry: ERROR: $*" >&2
    exit 1
}

PY_VERSION=3.12
OUT=.gpu
while (($#)); do
    case $1 in
        --python-version) PY_VERSION=${2:?--python-version needs a value such as 3.12}; shift 2 ;;
        --out) OUT=${2:?--out needs a folder}; shift 2 ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (--python-version X.Y, --out DIR)" ;;
    esac
done
[[ $PY_VERSION =~ ^3\.[0-9]+$ ]] || die "--python-version $PY_VERSION: expected 3.N"

LIMIT=$((64 * 1024 * 1024)) # what one device call carries: working tree + carried paths
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$ROOT"
for tool in xz strip; do command -v $tool >/dev/null || die "$tool not found (apt-get install xz-utils binutils)"; done

# What the GPU image lacks (its package list: numpy, torch, torchvision, timm, huggingface-hub, regex, h5py,
# scipy, scikit-learn, numba, joblib, lazy-loader, msgpack, pandas, pyarrow, fsspec, grpcio, protobuf,
# aiohttp, psutil, colorama, click, pyyaml, requests, filelock, packaging, ... are there), with what they
# need that it lacks too. Ray and PyAV travel as trees, the rest as wheels.
TREES=(ray av)
WHEELS=(
    open_clip_torch ftfy wcwidth                                   # CLIP
    torchvggish resampy                                            # VGGish (torchvggish imports resampy)
    librosa audioread pooch platformdirs soxr soundfile cffi pycparser decorator # librosa
    jsonschema referencing rpds-py jsonschema-specifications       # Ray's core
)

# Pinned to what is installed here.
declare -A VERSION
versions=$(
    python3 - "${TREES[@]}" "${WHEELS[@]}" <<'EOF'
import importlib.metadata as m
import sys

for name in sys.argv[1:]:
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        sys.exit(f"gpu_carry: ERROR: {name} is not installed here: install avaf's dependencies first")
EOF
) || exit 1
while read -r name version; do VERSION[$name]=$version; done <<<"$versions"

TAG=cp${PY_VERSION/./}
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
# pip matches manylinux_2_N exactly: the other N, tried only where the usual ones find none (the image's glibc
# is 2.39, Ubuntu 24.04's; a rehearsal on an older glibc may not load such a wheel)
MORE_PLATFORMS=()
for n in 24 26 29 30 31 32 33 34 35; do MORE_PLATFORMS+=("manylinux_2_${n}_x86_64"); done

STAGE=$(mktemp -d /tmp/gpu_carry.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
if [[ -e $OUT ]]; then # replaced whole: only a folder that holds an earlier carry, or nothing
    [[ -f $OUT/carry.txt || -z $(ls -A "$OUT") ]] || die "$OUT holds files but no carry.txt: choose another --out"
    rm -rf "${OUT:?}"
fi
mkdir -p "$OUT" "$STAGE/wheels"

pip_download() { # name==version [platforms...]: into $STAGE/wheels; pip's chatter only on failure
    local spec=$1 args=() p
    shift
    for p in "$@"; do args+=(--platform "$p"); done
    python3 -m pip download --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
        "${args[@]}" -d "$STAGE/wheels" "$spec" >"$STAGE/pip.log" 2>&1
}

fetch() { # name: its wheel for $TAG into $STAGE/wheels; a pure-Python sdist-only release is built here
    local name=$1 spec="$1==${VERSION[$1]}"
    pip_download "$spec" "${PLATFORMS[@]}" && return
    pip_download "$spec" "${PLATFORMS[@]}" "${MORE_PLATFORMS[@]}" && return
    say "$spec: no wheel for $TAG manylinux x86-64; building one from its sdist (pure Python only)"
    mkdir -p "$STAGE/built"
    python3 -m pip wheel -q --no-deps --no-binary "$name" -w "$STAGE/built" "$spec" >"$STAGE/pip.log" 2>&1 ||
        { cat "$STAGE/pip.log" >&2; die "$spec: no wheel and no sdist that builds"; }
    local built
    built=$(ls "$STAGE"/built/*.whl)
    [[ $built == *-none-any.whl ]] || die "$spec: built $(basename "$built"), not pure Python: it would not run there"
    mv "$built" "$STAGE/wheels/"
}

for name in "${TREES[@]}" "${WHEELS[@]}"; do
    fetch "$name"
done
say "downloaded: $(cd "$STAGE/wheels" && echo *)"

# A tree: the wheel installed (pip --target keeps the executables' modes), then stripped.
wheel_platform() { # the wheel's first platform tag
    local tags=${1##*-}
    tags=${tags%.whl}
    echo "${tags%%.*}"
}
install_tree() { # name: into $STAGE/tree-$name
    local whl
    whl=$(ls "$STAGE"/wheels/"$1"-*.whl)
    python3 -m pip install -q --no-deps --no-index --no-compile --no-cache-dir --only-binary=:all: \
        --python-version "$PY_VERSION" --implementation cp --platform "$(wheel_platform "$whl")" \
        --target "$STAGE/tree-$1" "$whl" >"$STAGE/pip-$1.log" 2>&1 || { cat "$STAGE/pip-$1.log" >&2; die "$whl: pip install --target failed"; }
    rm -f "$whl"
}

strip_elf() { # files: debug symbols off ELF shared objects and executables (dynamic symbols stay)
    local f
    for f in "$@"; do
        [[ $(head -c4 "$f" | od -An -c | tr -d ' ') == 177ELF ]] || continue
        strip --strip-unneeded "$f" || die "strip $f failed"
    done
}

drop_common() { # what no run imports: caches, stubs, Cython headers and sources, tests
    find "$1" -depth \( -name __pycache__ -o -name tests \) -type d -exec rm -rf {} +
    find "$1" -type f \( -name '*.pyi' -o -name '*.pxd' -o -name '*.pyx' -o -name '*.pxi' \) -delete
    rm -rf "${1:?}/bin" # console scripts; nothing here runs them
    rm -f "$1"/*.dist-info/RECORD "$1"/*.dist-info/direct_url.json # pip's list of the unstripped files; a temp path
}

install_tree ray
R=$STAGE/tree-ray/ray
# Kept: core, _private, _raylet, data, air, util, dashboard (its agent runs beside every raylet), autoscaler,
# experimental, dag and the rest that ray and ray.data import. Dropped:
rm -rf "$R"/jars "$R"/rllib "$R"/serve "$R"/llm "$R"/train "$R"/tune # Java; libraries avaf-extract never loads
rm -rf "$R"/dashboard/client                                         # the web UI's build (no dashboard here)
rm -rf "$R"/thirdparty_files "$R"/_private/runtime_env/agent/thirdparty_files # psutil, colorama, aiohttp & co:
# the image has them; Ray's sys.path entries for these folders then find nothing and the image's are used
rm -rf "$R"/includes "$R"/setup-dev.py
drop_common "$STAGE/tree-ray"
strip_elf "$R"/_raylet.so "$R"/core/libjemalloc.so "$R"/core/src/ray/gcs/gcs_server "$R"/core/src/ray/raylet/raylet
[[ -x $R/core/src/ray/raylet/raylet && -x $R/core/src/ray/gcs/gcs_server ]] || die "Ray's raylet/gcs_server lost their executable bit"

install_tree av
drop_common "$STAGE/tree-av"
# av's own extension modules carry debug information (30 MB of them); av.libs (FFmpeg, auditwheel's copies)
# come stripped already and are left as they are
strip_elf "$STAGE"/tree-av/av/*.so "$STAGE"/tree-av/av/*/*.so

pack() { # name: $STAGE/tree-name -> $OUT/name-version-tag.tar.xz, without owners or times
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$STAGE/tree-$1" -cf - . |
        xz -9e -T1 >"$OUT/$1-${VERSION[$1]}-$TAG.tar.xz"
}
say "compressing the Ray and PyAV trees (xz -9e, 2-3 min)"
pack ray &
pid_ray=$!
pack av &
pid_av=$!
wait $pid_ray || die "compressing Ray's tree failed"
wait $pid_av || die "compressing PyAV's tree failed"
mv "$STAGE"/wheels/*.whl "$OUT/"

{
    echo "python $PY_VERSION"
    for name in "${TREES[@]}" "${WHEELS[@]}"; do echo "$name ${VERSION[$name]}"; done
} >"$OUT/carry.txt"

# Sizes: each item, .gpu/ and what travels beside it (tracked and untracked-not-ignored files).
say "carried, for $TAG:"
total=0
for f in "$OUT"/*; do
    size=$(stat -c %s "$f")
    total=$((total + size))
    printf '  %10d  %s\n' "$size" "$(basename "$f")"
done
tree=$(git ls-files -z -co --exclude-standard | { xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
printf '  %10d  total (%s)\n' "$total" "$(mib "$total")"
printf '  %10d  the working tree that travels besides (%s)\n' "$tree" "$(mib "$tree")"
all=$((total + tree))
if [[ $OUT == .gpu && -n $(git status --porcelain --ignored=no -- .gpu) ]]; then
    die ".gpu/ is not ignored by git: add /.gpu/ to .gitignore (else it travels twice)"
fi
((all <= LIMIT)) || die "$(mib "$all") together: over the 64 MiB a device call carries (the call would be refused)"
say "together $(mib "$all") of 64 MiB: $(mib $((LIMIT - all))) to spare"
