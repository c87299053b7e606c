"""``python -m tai_fsm.cli`` — the same as the ``tai-fsm`` console script."""

from tai_fsm.cli import main

raise SystemExit(main())
