"""``python -m tai_fsm`` — the same as the ``tai-fsm`` console script."""

from tai_fsm.cli import main

raise SystemExit(main())
