"""The docs cannot go stale: every `widen ...` command line in README.md and docs/**/*.md parses, the
sweeps among them plan, the generated reference (docs/reference/) matches the code, and every relative
link between the pages leads to a file and heading that exist.

What each command line gets (the strongest check that runs offline in seconds):
- every line: parsed by the real click command (option names, arity, value types), nothing invoked;
- `sweep-width`: run with `--dry-run` (composes the config, validates every value, plans the families
  and estimates cost and memory; needs no data) into a temporary --out;
- `train`: run with `--show-config` (composes and validates the whole config, prints the run folder,
  writes nothing) when its dataset needs no files (digits, synthetic); others are parsed only;
- `kernel-distance` on Gaussian or digits inputs: run for real with 64 pairs and 2 initialisations;
  dataset files elsewhere (mnist, cifar...) are parsed only;
- `report`: parsed only (it needs result folders);
- `widen --help`, `widen --version`: run.
Parsing every line and checking the reference take seconds; the runs (about two minutes on 2 cores) are
marked `slow`.
Lines are taken from fenced code blocks tagged bash, sh, shell, console or untagged (`text` blocks hold
synopses and printed output, not commands); a trailing `\\` continues a line, `# ...` is a comment.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILE_DATA = {"cifar10", "cifar100", "svhn", "mnist", "imagenet", "imagefolder"}  # datasets read from files
NO_FILES = {"digits", "synthetic"}


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def command_lines(text: str) -> list[str]:
    """Every `widen ...` line of a Markdown text's command code blocks, continuations joined."""
    found, block, pending = [], None, ""
    for line in text.splitlines():
        fence = re.match(r"\s*```(\w*)", line)
        if fence:
            block = None if block is not None else fence.group(1)
            continue
        if block is None or block not in ("", "bash", "sh", "shell", "console"):
            continue
        line = pending + line.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        line = re.sub(r"^\$\s+", "", line)
        if line.startswith("widen "):
            found.append(line)
    return found


def _all_lines() -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), line) for p in _doc_files() for line in command_lines(p.read_text())]


LINES = _all_lines()


def _argv(line: str) -> list[str]:
    return shlex.split(line, comments=True)[1:]


def _option(argv: list[str], name: str) -> str | None:
    value = None
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def test_the_docs_hold_command_lines():
    files = {f for f, _ in LINES}
    assert "README.md" in files and len(LINES) >= 20, LINES  # the extraction itself works
    commands = {_argv(line)[0] for _, line in LINES if not _argv(line)[0].startswith("-")}
    assert commands >= {"train", "sweep-width", "kernel-distance", "report"}


def test_command_lines_are_extracted_as_written():
    text = "x\n```bash\nwiden train --width 8 \\\n  --epochs 2   # two\n$ widen report runs\n```\n" \
           "```text\nwiden sweep-width [--widths W]\n```\n"
    assert command_lines(text) == ["widen train --width 8 --epochs 2   # two", "widen report runs"]


@pytest.mark.parametrize("where,line", LINES, ids=[f"{f}:{i}" for i, (f, _) in enumerate(LINES)])
def test_every_command_line_parses(where, line):
    import typer

    from widen_cli.cli import app

    group = typer.main.get_command(app)
    click = _generator().click_module(group)
    argv = _argv(line)
    assert "..." not in argv, f"{where}: a placeholder in {line!r}"
    if argv[0].startswith("-"):  # an option of `widen` itself (--help, --version): run it
        result = _run(argv)
        assert result.exit_code == 0, f"{where}: {line!r}\n{result.output}"
        return
    command = group.get_command(click.Context(group), argv[0])
    assert command is not None, f"{where}: no command {argv[0]!r}"
    try:  # parse and convert every value; the command itself is not run
        command.make_context(argv[0], argv[1:], parent=click.Context(group, info_name="widen"))
    except click.ClickException as e:
        pytest.fail(f"{where}: {line!r}: {e.format_message()}")


def _run(argv: list[str]):
    from typer.testing import CliRunner

    from widen_cli.cli import app

    return CliRunner().invoke(app, argv)


def _needs_files(argv: list[str]) -> bool:
    data = _option(argv, "--dataset") or _option(argv, "--inputs")
    return data in FILE_DATA or (data is None and "--experiment" in argv and "--data-root" in argv)


@pytest.mark.slow
@pytest.mark.parametrize("where,line", [(f, ln) for f, ln in LINES if _argv(ln)[0] == "sweep-width"])
def test_sweep_lines_plan_with_dry_run(where, line, tmp_path):
    # --out and --name last: the docs' own folder names are kept apart from the repository's runs/
    argv = [*_argv(line), "--dry-run", "--out", str(tmp_path)]
    result = _run(argv)
    assert result.exit_code == 0, f"{where}: {line!r}\n{result.output}"


def _train_offline(argv: list[str]) -> bool:
    """A train line whose data is made from the config alone (digits, the default, or synthetic)."""
    if argv[0] != "train" or (_option(argv, "--experiment") or "smoke") not in ("smoke",):
        return False
    return (_option(argv, "--dataset") or "digits") in NO_FILES


@pytest.mark.slow
@pytest.mark.parametrize("where,line", [(f, ln) for f, ln in LINES if _train_offline(_argv(ln))])
def test_train_lines_resolve_their_config(where, line, tmp_path):
    result = _run([*_argv(line), "--show-config", "--out", str(tmp_path)])
    assert result.exit_code == 0, f"{where}: {line!r}\n{result.output}"
    assert not any(tmp_path.iterdir())  # --show-config writes nothing


@pytest.mark.slow
@pytest.mark.parametrize("where,line", [(f, ln) for f, ln in LINES if _argv(ln)[0] == "kernel-distance"
                                        and not _needs_files(_argv(ln))])
def test_kernel_lines_run_on_few_pairs(where, line, tmp_path):
    result = _run([*_argv(line), "--pairs", "64", "--inits", "2", "--mask-samples", "4", "--device", "cpu",
                   "--out", str(tmp_path)])
    assert result.exit_code == 0, f"{where}: {line!r}\n{result.output}"
    assert list(tmp_path.rglob("kernel_distance.parquet"))


# --- the generated reference --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen-reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_is_up_to_date(tmp_path):
    for path in _generator().generate(tmp_path):
        checked_in = ROOT / "docs" / "reference" / path.name
        assert checked_in.exists() and checked_in.read_text() == path.read_text(), \
            f"docs/reference/{path.name} is stale: run `make docs`"


def test_reference_notices_a_new_option():
    import typer

    from widen_cli.cli import app

    gen = _generator()
    group = typer.main.get_command(app)
    before = gen.render_cli(group)
    assert before == (ROOT / "docs" / "reference" / "cli.md").read_text()
    train = group.get_command(gen.click_module(group).Context(group), "train")
    flag = next(p for p in train.params if p.name == "restart")  # a flag like any new one, renamed
    new = copy.copy(flag)
    new.name, new.opts, new.help = "brand_new", ["--brand-new"], "An option the reference does not know yet."
    train.params.append(new)
    after = gen.render_cli(group)
    assert after != before and "--brand-new" in after


# --- links between the pages ---------------------------------------------------------------------------

# How-to pages written by work merged at the same time as this test; drop a name once its page is here.
PENDING_PAGES = set()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def test_slugs_are_githubs():
    assert _slug("Pruned families: width during training only (`--method pruned`)") == \
        "pruned-families-width-during-training-only---method-pruned"


@pytest.mark.parametrize("page", _doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if str(path.relative_to(ROOT)) in PENDING_PAGES:
            continue
        assert path.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.relative_to(ROOT)}: no heading #{anchor} in {file or page.name}"
