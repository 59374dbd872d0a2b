"""Record which Triton kernels a fast-path call launches (tests assert the kernel paths their docstrings name)."""


def spy_launches(monkeypatch, module, names, grids=None):
    """Replace the kernels ``names`` of ``module`` (for the test's duration) by spies that launch them as before and
    record, in order, the names launched; with a list ``grids``, also (name, grid) for every launch."""
    launched = []

    class Spy:
        def __init__(self, kern, name):
            self.kern, self.name = kern, name

        def __getitem__(self, grid):
            launched.append(self.name)
            if grids is not None:
                grids.append((self.name, tuple(grid)))
            return self.kern[grid]

    for name in names:
        monkeypatch.setattr(module, name, Spy(getattr(module, name), name))
    return launched
