"""Pretraining recipe: ``accelerate launch recipes/pretrain.py --config recipes/configs/NAME.yaml key=value ...``

The loop itself lives in :mod:`xmoco_zoo.pretrain` so that ``xmoco-zoo pretrain`` runs the same code.
"""

import sys

from xmoco_zoo.errors import run_main
from xmoco_zoo.pretrain import main

if __name__ == "__main__":
    sys.exit(run_main(main))  # a user error: one `error:` line, exit status 2 (--debug: the traceback)
