import sys

from cubemux.cli import main

sys.exit(main())
