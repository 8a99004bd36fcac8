"""Linear-probe evaluation (MoCo's protocol, or the fast cached-feature mode): ``accelerate launch recipes/linear_eval.py --config recipes/configs/eval/linear_fmnist.yaml key=value ...``

The recipe lives in :mod:`xmoco_zoo.protocols.linear_eval` so that ``xmoco-zoo eval linear`` runs the same code.
"""

from xmoco_zoo.protocols.linear_eval import main

if __name__ == "__main__":
    main()
