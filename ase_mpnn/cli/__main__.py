"""``python -m ase_mpnn.cli``: the ``ase-mpnn`` command."""

import sys

from . import main

sys.exit(main())
