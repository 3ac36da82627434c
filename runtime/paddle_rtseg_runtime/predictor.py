"""The predictor interface every backend implements."""


class Predictor:
    """``predictor(x) -> numpy output`` for an ``N x C x H x W`` float32 array."""
    name = "base"

    def __call__(self, x):
        raise NotImplementedError
