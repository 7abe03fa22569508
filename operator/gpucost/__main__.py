import sys

from gpucost.cli import main

sys.exit(main())
