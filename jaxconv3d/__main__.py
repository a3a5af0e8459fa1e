"""`python -m jaxconv3d ...`: see cli.py."""

from .cli import main

raise SystemExit(main())
