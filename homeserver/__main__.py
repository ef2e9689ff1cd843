"""``python -m homeserver`` is the ``qasid`` command."""

import sys

from homeserver.cli import main

sys.exit(main())
