"""kNN evaluation: ``accelerate launch recipes/knn_eval.py --config recipes/configs/eval/knn_fmnist.yaml key=value ...``

The recipe lives in :mod:`xmoco_zoo.protocols.knn_eval` so that ``xmoco-zoo eval knn`` runs the same code.
"""

from xmoco_zoo.protocols.knn_eval import main

if __name__ == "__main__":
    main()
