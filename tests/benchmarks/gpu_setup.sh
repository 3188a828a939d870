# Source at the start of a command on a bare GPU machine, from the repository root, with .gpu/ carried
# (tests/benchmarks/gpu_carry.sh fills it here):
#
#   source tests/benchmarks/gpu_setup.sh && avaf-extract ... && avaf-train ...
#
# Installs the carried wheels and unpacks the carried Ray and PyAV trees into /tmp/site, makes avaf importable
# from this checkout (/tmp/site/avaf/extract -> ./extract, ... as pyproject.toml's package-dir maps them; no
# build, no setuptools) and its console scripts runnable (/tmp/site/bin), exports PYTHONPATH and PATH, and
# prints the time it took and the versions it found. Anything missing ends the sourcing script: one
# "gpu_setup: ERROR" line, exit 1. A machine still warm from an earlier call keeps /tmp/site: the same carry is
# not installed, nor checked, twice (sourced again, it prints what the first check found). AVAF_GPU_CARRY
# (default: .gpu in this checkout) and AVAF_GPU_SITE (default: /tmp/site) name other folders (the rehearsal
# in tests/benchmarks/README.md uses both).

_gs_opts=$(set +o) # the caller's shell options, given back at the end
set -euo pipefail
_gs_t0=$(date +%s.%N)
_gs_die() {
    echo "gpu_setup: ERROR: $*" >&2
    exit 1
}
_gs_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
_gs_carry=${AVAF_GPU_CARRY:-$_gs_root/.gpu}
_gs_site=${AVAF_GPU_SITE:-/tmp/site}
[[ -f $_gs_carry/carry.txt ]] ||
    _gs_die "$_gs_carry/carry.txt not found: run tests/benchmarks/gpu_carry.sh here and name .gpu in the call's carry"
_gs_want=$(awk '$1 == "python" {print $2}' "$_gs_carry/carry.txt")
_gs_have=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') || _gs_die "no python3 on PATH"
[[ $_gs_want == "$_gs_have" ]] ||
    _gs_die "$_gs_carry holds a carry for Python $_gs_want, python3 is $_gs_have ($(command -v python3)): gpu_carry.sh --python-version $_gs_have"

# The carry's fingerprint: names and sizes of what it holds, and the interpreter
_gs_stamp="$(command -v python3) $(cd "$_gs_carry" && stat -c '%n %s' -- * | tr '\n' ' ')"
if [[ -f $_gs_site/.avaf-carry && $(cat "$_gs_site/.avaf-carry") == "$_gs_stamp" ]]; then
    echo "gpu_setup: $_gs_site already holds this carry"
else
    [[ ! -e $_gs_site || -f $_gs_site/.avaf-carry || -z $(ls -A "$_gs_site") ]] ||
        _gs_die "$_gs_site holds files but no .avaf-carry: set AVAF_GPU_SITE to another folder"
    rm -rf "${_gs_site:?}"
    mkdir -p "$_gs_site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$_gs_site" \
        "$_gs_carry"/*.whl || _gs_die "pip install of $_gs_carry/*.whl into $_gs_site failed (above)"
    python3 - "$_gs_site" "$_gs_carry"/*.tar.xz <<'EOF' || _gs_die "unpacking the carried trees failed (above)"
import sys
import tarfile

site, *trees = sys.argv[1:]
for tree in trees:
    with tarfile.open(tree, "r:xz") as tar:
        tar.extractall(site, filter="data")
EOF
    echo "$_gs_stamp" >"$_gs_site/.avaf-carry"
fi

# avaf from this checkout, as an editable install would give it, and its console scripts
python3 - "$_gs_root" "$_gs_site" <<'EOF' || _gs_die "linking avaf from $_gs_root failed (above)"
import os
import sys
import tomllib
from pathlib import Path

root, site = Path(sys.argv[1]), Path(sys.argv[2])
project = tomllib.loads((root / "pyproject.toml").read_text())
for package, folder in project["tool"]["setuptools"]["package-dir"].items():
    link = site.joinpath(*package.split("."))
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(root / folder, target_is_directory=True)
(site / "bin").mkdir(exist_ok=True)
for name, target in project["project"]["scripts"].items():
    module, func = target.split(":")
    script = site / "bin" / name
    # the __main__ guard as pip writes it: the decode child (multiprocessing, spawn) imports this file again
    script.write_text(
        f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\n\n"
        f"if __name__ == '__main__':\n    sys.exit({func}())\n"
    )
    os.chmod(script, 0o755)
EOF
[[ :${PYTHONPATH:-}: == *":$_gs_site:"* ]] || export PYTHONPATH="$_gs_site${PYTHONPATH:+:$PYTHONPATH}"
[[ :$PATH: == *":$_gs_site/bin:"* ]] || export PATH="$_gs_site/bin:$PATH"

if [[ -f $_gs_site/.avaf-checked ]]; then # sourced again after a check that passed: what it found
    cat "$_gs_site/.avaf-checked"
else
    python3 - "$_gs_site/.avaf-checked" <<'EOF' || _gs_die "something avaf needs is missing (above); run gpu_carry.sh again here"
import importlib
import importlib.metadata as m
import os
import sys

found, missing = [], []
for module, dist in [("ray", "ray"), ("ray.data", None), ("av", "av"), ("open_clip", "open_clip_torch"),
                     ("torchvggish", "torchvggish"), ("librosa", "librosa"), ("torch", "torch"),
                     ("torchvision", "torchvision"), ("avaf.extract.pipeline", None), ("avaf.train.loop", None)]:
    try:
        importlib.import_module(module)
    except Exception as e:  # any failure to import is what this check reports
        missing.append(f"{module} ({type(e).__name__}: {e})")
        continue
    if dist:
        found.append(f"{dist} {m.version(dist)}")
if not missing:
    import ray

    for exe in ("core/src/ray/raylet/raylet", "core/src/ray/gcs/gcs_server"):
        if not os.access(os.path.join(os.path.dirname(ray.__file__), exe), os.X_OK):
            missing.append(f"ray's {exe} (not executable)")
line = f"gpu_setup: python {sys.version.split()[0]} | {', '.join(found)}"
print(line)
if missing:
    print("gpu_setup: MISSING:", "; ".join(missing), file=sys.stderr)
    sys.exit(1)
with open(sys.argv[1], "w") as f:
    f.write(line + " (checked earlier)\n")
EOF
    avaf-extract --help >/dev/null || { rm -f "$_gs_site/.avaf-checked"; _gs_die "avaf-extract does not start (above)"; }
fi
echo "gpu_setup: ready in $(awk -v a="$_gs_t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s" \
    "(PYTHONPATH=$PYTHONPATH; avaf-* in $_gs_site/bin)"
eval "$_gs_opts"
unset -f _gs_die
unset _gs_opts _gs_t0 _gs_root _gs_carry _gs_site _gs_want _gs_have _gs_stamp
