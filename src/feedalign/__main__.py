import sys

from feedalign.cli.main import main

sys.exit(main())
