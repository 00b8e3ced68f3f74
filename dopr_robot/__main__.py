"""``python -m dopr_robot`` is the ``dopr-robot`` command."""

import sys

from dopr_robot.cli import main

sys.exit(main())
