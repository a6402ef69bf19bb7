"""``python -m sam4em`` runs the command line."""

import sys

from sam4em.cli import main

sys.exit(main())
