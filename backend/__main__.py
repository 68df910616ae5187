"""`python -m backend <command>`: see backend/cli.py."""

import sys

from backend.cli import main

sys.exit(main(sys.argv[1:]))
