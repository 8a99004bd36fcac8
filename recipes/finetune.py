"""Fine-tuning (full, or semi-supervised on 1 % / 10 % of the labels): ``accelerate launch recipes/finetune.py --config recipes/configs/eval/finetune_fmnist.yaml key=value ...``

The recipe lives in :mod:`xmoco_zoo.protocols.finetune` so that ``xmoco-zoo eval finetune`` runs the same code.
"""

import sys

from xmoco_zoo.errors import run_main
from xmoco_zoo.protocols.finetune import main

if __name__ == "__main__":
    sys.exit(run_main(main))  # a user error: one `error:` line, exit status 2 (--debug: the traceback)
