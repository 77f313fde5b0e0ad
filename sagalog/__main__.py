"""``python -m sagalog`` is the ``sagalog`` command."""

import sys

from sagalog.cli import main

sys.exit(main())
