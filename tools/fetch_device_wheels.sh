#!/usr/bin/env bash
# Fill .whl/ with what the lent GPU machine lacks for benchmarks/gpu_check.py (issue 19).
#
# Run on a machine with PyPI, from anywhere in the checkout:  tools/fetch_device_wheels.sh
# The GPU machine (CPython 3.12, Linux x86_64, torch with CUDA 13, no network) has torch, triton,
# numpy, scipy, scikit-learn, pandas, xarray, h5py, matplotlib, pytest(-benchmark, -xdist,
# -timeout), CMake, ninja, pybind11 and scikit-build-core, but not:
#   openmm + openmm-cuda-13  the force field, and its CUDA platform (the energy benchmark's
#                            baseline); CUDA 13 to match that machine's driver and torch, whose
#                            CUDA wheels provide the libraries the plugin loads
#   pdbfixer                 Protein.from_pdb completes structures with it (a wheel built from
#                            its sdist: PyPI has no wheel)
#   arviz + h5netcdf, xarray-einstats, platformdirs
#                            tests/mcmc/test_sampler.py imports arviz at module level, so
#                            `pytest -m gpu` cannot even collect it without
# and the structures the GPU steps read (../shared/data is not carried): .whl/data/structures.
#
# One version of each package (two stop pip). Versions: those installed in the Python running
# this script when it has them (the ones the suite is tested with here), else the pins below;
# override with e.g. OPENMM_VERSION=8.6.1. The folder stays under 40 MB (the device tool carries
# at most 64 MiB, working tree included). .whl/ is ignored by git; name it in the run's carry.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${DEST:-$ROOT/.whl}"
PYTHON="${PYTHON:-python3}"
DATA="${PYSLICE_DATA:-$ROOT/../shared/data}"
LIMIT_MB=40

installed() {  # the version of package $1 in $PYTHON, else $2
    "$PYTHON" -c "import importlib.metadata as m, sys
try:
    print(m.version(sys.argv[1]))
except m.PackageNotFoundError:
    print(sys.argv[2])" "$1" "$2"
}

OPENMM_VERSION="${OPENMM_VERSION:-$(installed openmm 8.6.1)}"
PDBFIXER_VERSION="${PDBFIXER_VERSION:-$(installed pdbfixer 1.12.0)}"
ARVIZ_VERSION="${ARVIZ_VERSION:-$(installed arviz 0.23.4)}"
H5NETCDF_VERSION="${H5NETCDF_VERSION:-$(installed h5netcdf 1.8.2)}"
EINSTATS_VERSION="${EINSTATS_VERSION:-$(installed xarray-einstats 0.9.1)}"
PLATFORMDIRS_VERSION="${PLATFORMDIRS_VERSION:-$(installed platformdirs 4.14.9)}"

if [[ ! -f "$DATA/structures/bpti.pdb" ]]; then
    echo "error: no structures at $DATA/structures (set PYSLICE_DATA to the shared data folder)" >&2
    exit 1
fi

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: never leave an older download beside a newer one
rm -rf "$DEST/data"

# Binary wheels for the device: CPython 3.12, any manylinux tag its glibc (2.39) accepts. pip
# matches each platform tag exactly, so list the ones these packages are published with.
platforms=()
for tag in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 \
    manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 \
    manylinux_2_35_x86_64; do
    platforms+=(--platform "$tag")
done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" --dest "$DEST" \
    "openmm==$OPENMM_VERSION" "openmm-cuda-13==$OPENMM_VERSION" \
    "arviz==$ARVIZ_VERSION" "h5netcdf==$H5NETCDF_VERSION" \
    "xarray-einstats==$EINSTATS_VERSION" "platformdirs==$PLATFORMDIRS_VERSION"

# pdbfixer is published as an sdist only; it is pure Python, so a wheel built here installs there.
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$DEST" "pdbfixer==$PDBFIXER_VERSION"

# The structures the GPU tests and benchmarks read (bpti, t4-lysozyme, the small test structures
# and domains/; not the large top240/ and bm5/ sets).
mkdir -p "$DEST/data/structures"
cp "$DATA"/structures/*.pdb "$DEST/data/structures/"
if [[ -d "$DATA/structures/domains" ]]; then
    cp -r "$DATA/structures/domains" "$DEST/data/structures/"
fi
chmod -R u+w "$DEST/data"

ls -l "$DEST"
size_mb=$(du -sm "$DEST" | cut -f1)
echo "$DEST: ${size_mb} MB (openmm $OPENMM_VERSION, pdbfixer $PDBFIXER_VERSION, arviz $ARVIZ_VERSION)"
if ((size_mb > LIMIT_MB)); then
    echo "error: $DEST is over ${LIMIT_MB} MB: the device carries at most 64 MiB in all" >&2
    exit 1
fi
# The checks the GPU run makes before it installs anything (tags, one version each, data).
"$PYTHON" - "$ROOT/benchmarks" "$DEST" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
import gpu_check

plan = gpu_check.plan_wheels(Path(sys.argv[2]))
for problem in plan.problems:
    print("problem:", problem)
print(len(plan.wheels), "wheels to install; structures:", plan.data_dir)
sys.exit(1 if plan.problems or plan.data_dir is None else 0)
EOF
