"""Which player steps on which batch: the adversarial training schedule as plain numbers."""

from dataclasses import dataclass

from genlab.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """Per batch: one D step, then `n_gen` G steps after every `n_critic`-th batch.

    - `skip_d_every=k`: no D update on every k-th batch (the G schedule is unchanged).
    - `d_only_every=k` / `g_only_every=k`: in epochs with `epoch % k == 0` only D (resp. only G, `n_gen`
      steps per batch) is trained.
    Batches are counted from the start of training (a counter saved in the checkpoint), so the schedule
    runs on across epoch ends and after a resume.
    """

    n_critic: int = 1
    n_gen: int = 1
    skip_d_every: int = 0
    d_only_every: int = 0
    g_only_every: int = 0

    def __post_init__(self) -> None:
        for name in ("n_critic", "n_gen"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"model.{name}={getattr(self, name)} is invalid; expected an integer >= 1")
        for name in ("skip_d_every", "d_only_every", "g_only_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0 or value == 1 and name == "skip_d_every":
                low = 2 if name == "skip_d_every" else 1
                raise ConfigError(f"model.{name}={value} is invalid; expected 0 (off) or an integer >= {low}")
        if self.d_only_every and self.d_only_every == self.g_only_every:
            raise ConfigError(
                f"model.d_only_every and model.g_only_every are both {self.d_only_every}: "
                f"each epoch can train only one player alone; expected different values"
            )

    def plan(self, batch: int, epoch: int) -> tuple[bool, int]:
        """`(train D?, number of G steps)` for the `batch`-th batch of training, in `epoch`."""
        if self.d_only_every and epoch % self.d_only_every == 0:
            return True, 0
        if self.g_only_every and epoch % self.g_only_every == 0:
            return False, self.n_gen
        d_step = not (self.skip_d_every and (batch + 1) % self.skip_d_every == 0)
        return d_step, self.n_gen if (batch + 1) % self.n_critic == 0 else 0
