"""`python -m ech0_moe.cli`: the `ech0-moe` command."""

import sys

from ech0_moe.cli import main

sys.exit(main())
