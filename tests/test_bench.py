"""`make bench`'s scripts are not run by the suite (they time things), so a moved or renamed module would
break them unseen: each is imported here, in a fresh interpreter, as `make bench` would load it."""
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_every_bench_script_imports():
    scripts = sorted(p.stem for p in BENCH.glob("*.py"))
    assert "bench" in scripts
    code = f"import sys; sys.path.insert(0, {str(BENCH)!r}); " + "; ".join(f"import {s}" for s in scripts)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
