"""kNN evaluation: ``accelerate launch recipes/knn_eval.py --config recipes/configs/eval/knn_fmnist.yaml key=value ...``

The recipe lives in :mod:`xmoco_zoo.protocols.knn_eval` so that ``xmoco-zoo eval knn`` runs the same code.
"""

import sys

from xmoco_zoo.errors import run_main
from xmoco_zoo.protocols.knn_eval import main

if __name__ == "__main__":
    sys.exit(run_main(main))  # a user error: one `error:` line, exit status 2 (--debug: the traceback)
