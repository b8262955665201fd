"""Packaging for stylegan-v. Metadata lives in settings.ini (nbdev 2); read it with configparser, not pkg_resources."""
import shutil
from configparser import ConfigParser
from pathlib import Path

import setuptools
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent

cfg = ConfigParser(delimiters=['='])
cfg.read(HERE / 'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
console_scripts = cfg.get('console_scripts', '').split()


class BuildPyWithKernels(build_py):
    "Ship the C++/CUDA sources of `kernels/` inside the package (`stylegan_v/kernels/`) for non-editable installs."
    def run(self):
        super().run()
        if not self.editable_mode:
            shutil.copytree(HERE / 'kernels', Path(self.build_lib) / 'stylegan_v' / 'kernels', dirs_exist_ok=True)


setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    author=cfg['author'],
    author_email=cfg['author_email'],
    python_requires='>=' + cfg['min_python'],
    packages=setuptools.find_packages(include=['stylegan_v', 'stylegan_v.*']),
    package_data={'stylegan_v': ['presets/*.yaml']},
    cmdclass={'build_py': BuildPyWithKernels},
    install_requires=requirements,
    extras_require={'dev': dev_requirements},
    entry_points={'console_scripts': console_scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
