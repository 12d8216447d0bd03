"""`python3 -m registry_cache` runs the registry-cache command."""

import sys

from registry_cache.cli import main

sys.exit(main())
