import torch
import torch.nn.functional as F

from xmoco_zoo.data import fashion_mnist
from xmoco_zoo.knn import knn_accuracy, knn_predict

from .conftest import needs_fmnist


def test_knn_matches_naive_weighted_vote():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(40, 8), dim=1)
    labels = torch.randint(0, 3, (40,))
    queries = F.normalize(torch.randn(7, 8), dim=1)
    pred = knn_predict(bank, labels, queries, k=5, temperature=0.1, chunk=3)
    for i, q in enumerate(queries):
        sims = bank @ q
        top = sims.topk(5).indices
        votes = torch.zeros(3)
        for j in top:
            votes[labels[j]] += torch.exp(sims[j] / 0.1)
        assert pred[i] == votes.argmax()


@needs_fmnist
def test_raw_pixel_floor_on_fashion_mnist_is_78_9():
    """The floor every Fashion-MNIST result is reported beside: kNN (k=200, t=0.1) on normalised pixels."""
    tr, te = fashion_mnist("train"), fashion_mnist("test")
    feats = lambda d: F.normalize(d.images.flatten(1).float(), dim=1)  # noqa: E731
    acc = knn_accuracy(feats(tr), tr.labels, feats(te), te.labels, k=200, temperature=0.1)
    assert round(acc, 1) == 78.9, acc
