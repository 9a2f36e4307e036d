"""``python -m nlb_sdn.framework [manager options] APP...``: the framework's manager, with nlb_sdn's fixes applied.

The same arguments as ``osken-manager`` / ``ryu-manager`` (see :func:`nlb_sdn.framework.manager_main`). Started by
``nlb-sdn controller``, it first sets up logging as that command line asked (``$NLB_SDN_LOG``).
"""

import os
import sys

from nlb_sdn.framework import manager_main
from nlb_sdn.logs import setup_from_env

setup_from_env(os.environ)
manager_main(sys.argv[1:])
