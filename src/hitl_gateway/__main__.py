"""``python -m hitl_gateway``: the same command line as ``hitl-gateway``."""

import sys

from hitl_gateway.cli import main

sys.exit(main())
