"""Pretraining recipe: ``accelerate launch recipes/pretrain.py --config recipes/configs/NAME.yaml key=value ...``

The loop itself lives in :mod:`xmoco_zoo.pretrain` so that ``xmoco-zoo pretrain`` runs the same code.
"""

from xmoco_zoo.pretrain import main

if __name__ == "__main__":
    main()
