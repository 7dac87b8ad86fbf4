import sys

from bpfloader.cli import main

sys.exit(main())
