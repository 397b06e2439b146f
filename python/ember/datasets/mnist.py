"""MNIST-layout datasets from IDX files (the Debian package
dataset-fashion-mnist installs Fashion-MNIST under
/usr/share/datasets/fashion-mnist), as torchvision.datasets.FashionMNIST
but with tensors instead of PIL images:

    ds = FashionMNIST(train=True)
    image, label = ds[0]          # uint8 tensor [28, 28], int
    ds.data, ds.targets           # the whole set: uint8 [60000, 28, 28], int64 [60000]

Without transforms the DataLoader reads it in C (no Python per sample)."""
import os

import ember
from ember import _C
from ember.utils.data.dataset import Dataset

__all__ = ["MNIST", "FashionMNIST"]


class MNIST(Dataset):
    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
               "7 - seven", "8 - eight", "9 - nine"]
    default_root = None

    def __init__(self, root=None, train=True, transform=None, target_transform=None,
                 download=False):
        if root is None:
            root = self.default_root
        if root is None:
            raise ValueError("{}: root is required".format(type(self).__name__))
        if download:
            raise RuntimeError("{}: download is not supported (ember reads the files installed "
                               "under {})".format(type(self).__name__, root))
        self.root = os.fspath(root)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        split = "train" if train else "t10k"
        images = self._find(split + "-images-idx3-ubyte")
        labels = self._find(split + "-labels-idx1-ubyte")
        self.data = _C._dl_idx_load(images)
        self.targets = _C._dl_idx_load(labels).to(ember.int64)
        if self.data.dim() != 3 or self.targets.dim() != 1 or self.data.shape[0] != self.targets.shape[0]:
            raise RuntimeError("{}: {} and {} do not hold matching images and labels ({} and {})".format(
                type(self).__name__, images, labels, list(self.data.shape), list(self.targets.shape)))
        self._c = None

    def _find(self, stem):
        tried = []
        for d in (self.root, os.path.join(self.root, type(self).__name__, "raw")):
            for name in (stem, stem + ".gz"):
                p = os.path.join(d, name)
                if os.path.exists(p):
                    return p
                tried.append(p)
        raise FileNotFoundError("{}: dataset file not found (tried {})".format(
            type(self).__name__, ", ".join(tried)))

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, index):
        img, target = self.data[index], int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def _c_dataset(self):
        if self.transform is not None or self.target_transform is not None:
            return None
        if self._c is None or self._c_src[0] is not self.data or self._c_src[1] is not self.targets:
            self._c = _C._dl_tensor_dataset(self.data, self.targets)
            self._c_src = (self.data, self.targets)
        return self._c

    @property
    def class_to_idx(self):
        return {c: i for i, c in enumerate(self.classes)}

    def extra_repr(self):
        return "Split: {}".format("Train" if self.train else "Test")

    def __repr__(self):
        lines = ["Number of datapoints: {}".format(len(self)), "Root location: {}".format(self.root),
                 self.extra_repr()]
        if self.transform is not None:
            lines.append("Transform: {}".format(self.transform))
        if self.target_transform is not None:
            lines.append("Target transform: {}".format(self.target_transform))
        return "Dataset " + type(self).__name__ + "\n" + "\n".join("    " + l for l in lines)


class FashionMNIST(MNIST):
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot"]
    default_root = "/usr/share/datasets/fashion-mnist"

    def __init__(self, root="/usr/share/datasets/fashion-mnist", train=True, transform=None,
                 target_transform=None, download=False):
        super().__init__(root, train, transform, target_transform, download)
