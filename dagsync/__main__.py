"""``python -m dagsync`` is the ``dagsync`` command."""

import sys

from dagsync.cli import main

sys.exit(main())
