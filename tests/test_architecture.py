"""The module table in nbs/index.ipynb is the architecture: a module imports only from modules listed above it.

The test reads the table (the README is generated from the same notebook), maps every notebook named in it to the module it
exports (its `#| default_exp`), and walks every import of every module in `stylegan_v/` (lazy imports inside functions
count too: they are dependencies all the same)."""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = 'stylegan_v'


def notebook_module(nb_path: Path) -> str:
    "The dotted module a notebook exports, from its `#| default_exp` line."
    for cell in json.loads(nb_path.read_text())['cells']:
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(cell['source']), re.M)
        if m: return PKG if m.group(1) == '__init__' else f'{PKG}.{m.group(1)}'
    raise AssertionError(f'{nb_path} has no #| default_exp line')


def table_order(index: Path = ROOT / 'nbs' / 'index.ipynb') -> list[str]:
    "Modules in the order the module table lists their notebooks."
    rows = [line for cell in json.loads(index.read_text())['cells'] if cell['cell_type'] == 'markdown'
            for line in ''.join(cell['source']).splitlines() if line.startswith('| [')]
    assert rows, f'{index}: no module table (rows starting with "| [")'
    names = [n for row in rows for n in re.findall(r'\[([0-9][^\]]*)\]\([^)]*\.ipynb\)', row.split('|')[1])]
    assert len(names) >= len(rows), f'{index}: could not read the notebooks of the module table'
    return [notebook_module(ROOT / 'nbs' / f'{n}.ipynb') for n in names]


def module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__': parts = parts[:-1]
    return '.'.join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    "The project modules `path` imports (relative imports resolved; `from pkg import mod` counted as the module)."
    me = module_of(path)
    package = me if path.name == '__init__.py' else me.rpartition('.')[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split('.')[0] == PKG}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if target.split('.')[0] != PKG: continue
            subs = {f'{target}.{a.name}' for a in node.names} & known
            out |= subs or {target}
    return {m for m in out if m != me}


def project_modules() -> dict[str, Path]:
    files = [p for p in (ROOT / PKG).rglob('*.py') if p.name != '_modidx.py']
    mods = {module_of(p): p for p in files}
    # empty subpackage markers (networks/__init__.py) are folders, not modules with a row
    return {m: p for m, p in mods.items() if not (p.name == '__init__.py' and m != PKG and not p.read_text().strip())}


def test_table_lists_every_module():
    order, mods = table_order(), project_modules()
    missing = sorted(set(mods) - set(order))
    assert not missing, f'modules without a row in the module table of nbs/index.ipynb: {", ".join(missing)}'


def test_modules_import_only_from_rows_above():
    order, mods = table_order(), project_modules()
    rank = {m: i for i, m in enumerate(order)}
    known = set(mods) | {m.rpartition('.')[0] for m in mods}
    bad = []
    for mod, path in sorted(mods.items()):
        for dep in sorted(imported_modules(path, known)):
            dep_mod = dep if dep in rank else next((m for m in order if dep.startswith(m + '.')), dep)
            if dep_mod in rank and mod in rank and rank[dep_mod] >= rank[mod]:
                bad.append(f'{mod} imports {dep} (listed {"below" if rank[dep_mod] > rank[mod] else "as"} it)')
    assert not bad, 'imports against the module table of nbs/index.ipynb:\n' + '\n'.join(bad)


def test_checker_catches_an_upward_import(tmp_path, monkeypatch):
    "The walk itself: an import of a module listed below is reported (guards against a test that cannot fail)."
    fake = ROOT / PKG / 'core.py'
    known = set(project_modules())
    src = fake.read_text() + '\nfrom .train import train as _t\n'
    p = tmp_path / PKG / 'core.py'; p.parent.mkdir(); p.write_text(src)
    monkeypatch.setattr(__import__(__name__), 'ROOT', tmp_path)
    assert 'stylegan_v.train' in imported_modules(p, known)


def export_cell_lengths() -> list[int]:
    "Lines of every `#| export` / `#| exports` cell of the notebooks (directives included)."
    out = []
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for cell in json.loads(nb.read_text())['cells']:
            lines = ''.join(cell['source']).splitlines()
            if cell['cell_type'] == 'code' and any(l.strip() in ('#| export', '#| exports') for l in lines[:3]): out.append(len(lines))
    return out


def test_export_cells_stay_small():
    "Small export cells, each followed by what exercises it (STYLE.md): the median stays under 19 lines (issue 19)."
    import statistics
    lengths = export_cell_lengths()
    assert statistics.median(lengths) < 19, f'median export cell: {statistics.median(lengths)} lines over {len(lengths)} cells'
