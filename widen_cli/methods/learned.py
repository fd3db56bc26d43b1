"""set and rigl: learned connectivity at the sparse member's budget. A member at width w is planned
exactly as the `sparse` member of that width (same budget, same per-layer counts by method.distribution)
and starts from the same random mask drawn from the seed; then its mask moves while it trains, each
layer keeping its count (regrow.py: the update rules, their schedule and their seeding).

- `set` (Mocanu et al. 2018): at the end of every epoch but the last, drop the fraction method.zeta of
  each layer's kept weights with the smallest magnitude, regrow as many at random empty positions.
- `rigl` (Evci et al. 2020): every method.delta_t steps until method.t_end of training, drop the
  fraction method.alpha/2 (1 + cos(pi t / T_end)) with the smallest magnitude, regrow as many where the
  dense gradient is largest.

They train alone, never stacked (batched = False): the stacked MLP's index of kept weights would have to
be rebuilt at each update (bench/mask_updates.py measured that at ~25% of a stacked epoch for SET).
"""
from __future__ import annotations

from widen_cli.methods.sparse import Sparse


class Learned(Sparse):
    random_mask = False  # its final mask is not the random one: no layer-kept figures, gains or kernel overlay
    learned_mask = True
    batched = False  # stacked training calls no updater

    def check(self, run) -> None:
        from widen_cli.methods.regrow import check_options  # torch: configs are checked without it otherwise

        check_options(self.name, run.method)

    def updater(self, run, model, masks, optimizer, steps_per_epoch):
        from widen_cli.methods.regrow import Updater  # torch: only where a model is trained

        if masks is None:
            return None
        return Updater(masks, model, optimizer, self.name, run.method, steps_per_epoch, self.epochs(run), run.seed)


class SET(Learned):
    name = "set"
    own_options = ("zeta",)  # regrow.DEFAULTS["set"]; MethodConfig holds the published defaults
    line_style = {"marker": "D", "ls": "-."}


class RigL(Learned):
    name = "rigl"
    own_options = ("alpha", "delta_t", "t_end")
    line_style = {"marker": "v", "ls": "--"}


SET_METHOD = SET()
RIGL = RigL()
