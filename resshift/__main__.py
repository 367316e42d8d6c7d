"""``python -m resshift ...`` runs the console command (used where the script is not on
PATH, e.g. ``torchrun -m resshift train``)."""

import sys

from .cli import main

sys.exit(main())
