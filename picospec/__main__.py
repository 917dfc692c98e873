"""``python -m picospec``: the same as the ``picospec`` command."""

from picospec.cli import main

raise SystemExit(main())
