import sys

from sharpzo_ext.cli import main

sys.exit(main())
