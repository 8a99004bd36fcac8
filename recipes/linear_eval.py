"""Linear-probe evaluation (MoCo's protocol, or the fast cached-feature mode): ``accelerate launch recipes/linear_eval.py --config recipes/configs/eval/linear_fmnist.yaml key=value ...``

The recipe lives in :mod:`xmoco_zoo.protocols.linear_eval` so that ``xmoco-zoo eval linear`` runs the same code.
"""

import sys

from xmoco_zoo.errors import run_main
from xmoco_zoo.protocols.linear_eval import main

if __name__ == "__main__":
    sys.exit(run_main(main))  # a user error: one `error:` line, exit status 2 (--debug: the traceback)
