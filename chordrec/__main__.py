import sys

from chordrec.cli import main

sys.exit(main())
