"""`python -m mcp_auth`: see mcp_auth.cli."""

import sys

from .cli import main

sys.exit(main())
