"""`python -m jaxconv3d ...`: see command.py (the door) and cli.py (the commands)."""

from .command import main

raise SystemExit(main())
