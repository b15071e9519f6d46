"""The README's own-training-loop example runs as written and learns; CI runs the README's test command."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_example_trains_a_one_step_generator():
    code = re.search(r"<!-- example:start -->\n```python\n(.*?)```", README, re.S).group(1)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code, "README.md example", "exec"), namespace)
    x = namespace["samples"]
    # data N(1, 0.5^2 I): one network step from noise N(0, I) must move mean and spread there
    assert (x.mean(0) - 1.0).abs().max() < 0.15, x.mean(0)
    assert ((x.std(0) > 0.3) & (x.std(0) < 0.7)).all(), x.std(0)


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert len(blocks) >= 2 and "recipes/pmf.py" in blocks[0] and "pytest" in blocks[1]
    assert blocks[1] in (ROOT / ".ci" / "run").read_text()
