#!/bin/sh
# Install the wheel in DIST (default dist/) into a fresh venv in a temporary folder outside
# the checkout, with the core requirements only (torch pinned by constraints.txt), and run
# `ase-mpnn demo` there; fails when ase_mpnn is imported from anywhere but that venv.
set -eu
dist=$(cd "${1:-dist}" && pwd)
constraints=$(pwd)/constraints.txt
work=$(mktemp -d "${TMPDIR:-/tmp}/ase-mpnn-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet -c "$constraints" torch==2.13.0
"$work/venv/bin/python" -m pip install --quiet -c "$constraints" "$dist"/ase_mpnn-*.whl
cd "$work"
"$work/venv/bin/python" -c "import ase_mpnn, sys; p = ase_mpnn.__file__; print('ase_mpnn', ase_mpnn.__version__, 'from', p); sys.exit(0 if p.startswith('$work/venv/') else 1)"
"$work/venv/bin/python" -c "import importlib.util as u; print('optional packages present in the core install:', [m for m in ('phonopy', 'dask', 'pymatgen', 'tblite', 'quacc', 'atomate2') if u.find_spec(m)] or 'none')"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$work/venv/bin/ase-mpnn" demo --out "$work/demo_output"
test -s "$work/demo_output/summary.json"
echo "package check: the wheel installed into a fresh venv and ran the demo"
