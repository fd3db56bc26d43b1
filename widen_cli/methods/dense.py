"""dense: the plain model, every weight trained; its budget is its own width's count."""
from __future__ import annotations

from widen_cli.methods.protocol import Method
from widen_cli.shapes import Member, count, numel, weight_shapes


class Dense(Method):
    name = "dense"
    dense = True
    batched = True

    def plan(self, cfg, spec, base_width, width, method) -> Member:
        shapes = weight_shapes(cfg, width, spec)
        n = count(shapes)
        return Member(width=width, base_width=base_width, method=self.name, budget=n, n_weights=n,
                      n_weights_dense=n, layers=shapes, kept={k: numel(s) for k, s in shapes.items()})

    def companion_widths(self, base_width, widths, dense_wide) -> list[int]:
        return []  # its members are the dense models at every width

    def family_label(self, row) -> str:
        return self.name


DENSE = Dense()
