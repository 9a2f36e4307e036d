"""``python -m nlb_sdn.framework [manager options] APP...``: the framework's manager, with nlb_sdn's fixes applied.

The same arguments as ``osken-manager`` / ``ryu-manager`` (see :func:`nlb_sdn.framework.manager_main`).
"""

import sys

from nlb_sdn.framework import manager_main

manager_main(sys.argv[1:])
