"""Python imports this at start-up in every process whose PYTHONPATH holds this folder: test_plan.py's
`compositions` fixture puts it there, so that the pool launcher's spawned workers count their Hydra
compositions too (a spy set in the test's own process does not reach them). Each composition appends
`compose PID` to the file $WIDEN_TEST_COMPOSE_LOG names, and each process `spy PID` once, at start."""
import os

LOG = os.environ.get("WIDEN_TEST_COMPOSE_LOG")
if LOG:
    import hydra

    _real = hydra.compose

    def _counting(*args, **kwargs):
        with open(LOG, "a") as f:
            f.write(f"compose {os.getpid()}\n")
        return _real(*args, **kwargs)

    hydra.compose = _counting
    with open(LOG, "a") as f:
        f.write(f"spy {os.getpid()}\n")
