"""A tensor's type: dtype and shape, the one thing the IR, the op table and the package
format all describe values by (a leaf: it imports none of them).

Dimensions are ints, or strings holding an expression over named symbolic dimensions
(compiler/symbolic.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coreml_compile.compiler import dtypes

Dim = int | str


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if self.dtype not in dtypes.NUMPY:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def numel(self) -> int:
        if not self.is_static:
            raise ValueError(f"{self} has symbolic dimensions")
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        return f"{dtypes.SHORT[self.dtype]}[{','.join(str(d) for d in self.shape)}]"
