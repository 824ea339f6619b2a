"""`python -m lenet.serve ...`: the lenet-serve command."""

import sys

from lenet.serve import main

sys.exit(main())
