import sys

from londinium.cli import main

sys.exit(main())
