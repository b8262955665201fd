"""Write README.md from nbs/index.ipynb (quarto, and so nbdev_readme, is not available here).

Markdown cells are copied; code cells become fenced python blocks; cells starting with `#| hide` are skipped;
relative links (notebooks, images) gain the `nbs/` prefix. `--check` exits 1 when README.md is not what the notebook gives.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a relative link in the notebook (to another notebook, an image) gains the nbs/ prefix in README.md
LOCAL_LINK = re.compile(r'\]\((?!https?:|/|\.\./|#)([\w./\-]+)\)')


def render(nb_path: Path = ROOT / 'nbs' / 'index.ipynb') -> str:
    cells = json.loads(nb_path.read_text())['cells']
    parts = []
    for cell in cells:
        src = ''.join(cell['source']).strip('\n')
        if not src or src.startswith('#| hide'):
            continue
        if cell['cell_type'] == 'markdown':
            parts.append(LOCAL_LINK.sub(r'](nbs/\1)', src))
        elif cell['cell_type'] == 'code':
            parts.append(f'```python\n{src}\n```')
    header = '<!-- Generated from nbs/index.ipynb by tools/make_readme.py; edit the notebook, not this file. -->\n\n'
    return header + '\n\n'.join(parts) + '\n'


if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        if readme.read_text() != text:
            print('README.md differs from nbs/index.ipynb: run python tools/make_readme.py', file=sys.stderr)
            sys.exit(1)
    else:
        readme.write_text(text)
