import sys

from flowfit.cli import main

sys.exit(main())
