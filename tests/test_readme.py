"""The README against the package: its Python examples parse, and every name,
model method and file of ours that it mentions exists (so that a rename
cannot leave the documentation behind)."""

import ast
import os
import re
import textwrap

import adaptive_zoo

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    README = f.read()

MODULES = ("budget", "convert", "cost", "data", "fast_path", "losses", "weights")
FAMILIES = (adaptive_zoo.MSDNet, adaptive_zoo.RANet, adaptive_zoo.DMNN, adaptive_zoo.CNMM)


def _resolve(dotted):
    obj = adaptive_zoo
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_python_examples_parse():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 8
    for block in blocks:
        ast.parse(textwrap.dedent(block))


def test_every_package_name_it_mentions_exists():
    names = set(re.findall(r"adaptive_zoo\.([A-Za-z_][\w.]*\w)", README))
    modules = "|".join(MODULES)
    names |= {n for n in re.findall(rf"`(?:adaptive_zoo\.)?((?:{modules})\.[A-Za-z_]\w*)", README)
              if not n.endswith(".py")}
    assert {"create_model", "profile", "budget.prune_mixture"} <= names
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except AttributeError:
            missing.append(name)
    assert not missing, missing


def test_every_model_method_it_calls_exists():
    methods = set(re.findall(r"\bmodel\.([a-z_]\w*)\(", README))
    assert {"calibrate", "predict", "export", "freeze_backbone"} <= methods
    # `zero_grad`: the DDP example's, of `torch.nn.Module` (a model on PyTorch).
    missing = [m for m in sorted(methods - {"zero_grad"})
               if not any(hasattr(family, m) for family in FAMILIES)]
    assert not missing, missing


def test_every_file_it_names_exists():
    paths = set(re.findall(r"`((?:adaptive_zoo|docs|examples|scripts|tests|weights)/[\w./-]*\w)", README))
    assert "examples/benchmark.py" in paths and "scripts/test.sh" in paths
    missing = [p for p in sorted(paths) if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, missing
