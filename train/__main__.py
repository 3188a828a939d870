"""`python -m avaf.train ARGS` is `avaf-train ARGS` (avaf-demo runs training this way, in its own process)."""

import sys

from avaf.train.cli import main

sys.exit(main())
