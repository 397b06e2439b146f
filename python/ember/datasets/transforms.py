"""A few torchvision-style transforms for tensor images (uint8 [H, W] or
[C, H, W])."""
import ember

__all__ = ["Compose", "ToTensor", "Normalize", "Lambda"]


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self):
        return self.__class__.__name__ + "(" + "".join("\n    {0}".format(t) for t in self.transforms) + "\n)"


class ToTensor:
    """uint8 [H, W] (or [H, W, C], or a NumPy array) -> float32 [C, H, W] in [0, 1]."""

    def __call__(self, pic):
        if not isinstance(pic, ember.Tensor):
            pic = ember.as_tensor(pic)
        if pic.dim() == 2:
            pic = pic.unsqueeze(0)
        elif pic.dim() == 3 and pic.shape[-1] in (1, 3, 4) and pic.shape[0] not in (1, 3, 4):
            pic = pic.permute(2, 0, 1)
        if pic.dtype == ember.uint8:
            return pic.to(ember.float32).div(255)
        return pic.to(ember.float32)

    def __repr__(self):
        return self.__class__.__name__ + "()"


class Normalize:
    """(x - mean) / std per channel."""

    def __init__(self, mean, std, inplace=False):
        self.mean = mean
        self.std = std
        self.inplace = inplace

    def __call__(self, t):
        c = t.shape[-3] if t.dim() >= 3 else 1
        mean = ember.tensor(self.mean, dtype=t.dtype).reshape(-1, 1, 1)
        std = ember.tensor(self.std, dtype=t.dtype).reshape(-1, 1, 1)
        if mean.numel() not in (1, c):
            raise ValueError("Normalize: {} means for {} channels".format(mean.numel(), c))
        if t.dim() < 3:
            mean, std = mean.reshape(-1), std.reshape(-1)
        if self.inplace:
            return t.sub_(mean).div_(std)
        return (t - mean) / std

    def __repr__(self):
        return self.__class__.__name__ + "(mean={0}, std={1})".format(self.mean, self.std)


class Lambda:
    def __init__(self, lambd):
        self.lambd = lambd

    def __call__(self, img):
        return self.lambd(img)

    def __repr__(self):
        return self.__class__.__name__ + "()"
