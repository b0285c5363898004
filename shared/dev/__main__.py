import sys

from shared.dev.stack import main

sys.exit(main())
