"""Packaging for stylegan-v. Metadata lives in settings.ini (nbdev 2); read it with configparser, not pkg_resources."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).parent / 'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
console_scripts = cfg.get('console_scripts', '').split()

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=(Path(__file__).parent / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    author=cfg['author'],
    author_email=cfg['author_email'],
    python_requires='>=' + cfg['min_python'],
    packages=setuptools.find_packages(include=['stylegan_v', 'stylegan_v.*']),
    # The C++/CUDA sources and presets travel with installed (non-editable) packages too.
    package_data={'stylegan_v': ['kernels/*', 'presets/*.yaml']},
    include_package_data=True,
    install_requires=requirements,
    extras_require={'dev': dev_requirements},
    entry_points={'console_scripts': console_scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
